package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

func procState(pid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}

func readCountFile(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func childOf(t *testing.T, pid int) int {
	t.Helper()
	kids, err := listChildren(pid, []int{pid})
	if err != nil || len(kids) != 1 {
		t.Fatalf("children of %d: %v %v", pid, kids, err)
	}
	return kids[0]
}

// TestDumpRestoreStoppedChild dumps a tree whose child is in a group stop
// (SIGSTOP): the restored child is stopped too, its parent runs, and a
// SIGCONT resumes the child's count from where it stopped.
func TestDumpRestoreStoppedChild(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "stopped")
	dir := t.TempDir()
	parent, child := filepath.Join(dir, "parent"), filepath.Join(dir, "child")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "both processes to count", func() bool { return readCountFile(parent) > 20 && readCountFile(child) > 20 })
	kid := childOf(t, cmd.Process.Pid)
	if err := unix.Kill(kid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child to stop", func() bool { return procState(kid) == 'T' })
	c0 := readCountFile(child)
	// A dump that leaves the tree running leaves the child in its stop.
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: filepath.Join(dir, "img0"), LeaveRunning: true}); err != nil {
		t.Fatalf("dump --leave-running: %v", err)
	}
	p := readCountFile(parent)
	waitFor(t, "the parent to count on after a dump", func() bool { return readCountFile(parent) > p+20 })
	if st := procState(kid); st != 'T' || readCountFile(child) != c0 {
		t.Fatalf("after a --leave-running dump the child is in state %c and counted %d -> %d", st, c0, readCountFile(child))
	}
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	p0 := readCountFile(parent)
	stub := startStub(t)
	res, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	rkid := res.Pids[2]
	if rkid == 0 {
		t.Fatalf("no pid 2 in %v", res.Pids)
	}
	waitFor(t, "the restored child to be in a group stop", func() bool { return procState(rkid) == 'T' })
	// The parent runs on while the child stays stopped.
	waitFor(t, "the restored parent to count on", func() bool { return readCountFile(parent) > p0+50 })
	if c := readCountFile(child); c != c0 {
		t.Fatalf("the stopped child counted: %d -> %d", c0, c)
	}
	if err := unix.Kill(rkid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child to count again after SIGCONT", func() bool { return readCountFile(child) > c0+20 })
	if c := readCountFile(child); c > c0+5000 {
		t.Errorf("child count jumped: %d -> %d", c0, c)
	}
}
