package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestDumpRestoreSharedMemory checks shared anonymous memory between a
// parent and its child, a sealed memfd (mapped and as an fd) and a
// MAP_SHARED file mapping.
func TestDumpRestoreSharedMemory(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "shm")
	dir := t.TempDir()
	parent, child := filepath.Join(dir, "parent"), filepath.Join(dir, "child")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "both processes to count", func() bool {
		p, ok1 := readInts(parent, 2)
		c, ok2 := readInts(child, 3)
		return ok1 && ok2 && p[0] > 20 && c[0] > 20 && c[2] > 0
	})
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	p0, _ := readInts(parent, 2)
	c0, _ := readInts(child, 3)
	stub := startStub(t)
	res, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	var p1, c1 []int64
	waitFor(t, "the restored processes to see each other's counters", func() bool {
		var ok1, ok2 bool
		p1, ok1 = readInts(parent, 2)
		c1, ok2 = readInts(child, 3)
		// Each sees the other's slot move on through the shared page, and the
		// child reads the parent's memfd stores through its fd.
		return ok1 && ok2 && p1[1] > c0[0]+10 && c1[1] > p0[0]+10 && c1[2] > p0[0]+10
	})
	if p1[0] > p0[0]+10000 || c1[0] > c0[0]+10000 {
		t.Errorf("counters jumped: parent %d -> %d, child %d -> %d", p0[0], p1[0], c0[0], c1[0])
	}
	data, err := os.ReadFile(filepath.Join(dir, "shared.dat"))
	if err != nil || len(data) < 8 || int64(binary.LittleEndian.Uint64(data)) <= p0[0] {
		t.Errorf("shared.dat does not follow the restored parent's counter (%v)", err)
	}
	// The memfd keeps its name and seals.
	root := res.Pids[1]
	found := false
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", root))
	for _, e := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", root, e.Name()))
		if !strings.HasPrefix(link, "/memfd:cryo-test") {
			continue
		}
		found = true
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%s", root, e.Name()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		unix.Close(fd)
		if err != nil || seals != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
			t.Errorf("memfd seals %#x (%v), want SHRINK|GROW", seals, err)
		}
	}
	if !found {
		t.Errorf("no /memfd:cryo-test fd in the restored parent")
	}
}
