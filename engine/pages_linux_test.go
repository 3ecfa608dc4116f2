package engine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestDumpRestoreSplitPages dumps a process with more page data than one
// pages file holds (pagesPartSize): the data is split into bounded parts
// whose digests, computed during the copy, must be those of the files, and
// a restore must put every byte back (copied on several goroutines), with
// one part given as an open file.
func TestDumpRestoreSplitPages(t *testing.T) {
	testutil.RequiresRoot(t)
	const mib = 150
	bin := buildC(t, "memhog")
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	cmd := startInNewPidns(t, nil, bin, strconv.Itoa(mib), ready)
	waitFor(t, "memhog to touch its memory", func() bool {
		data, err := os.ReadFile(ready)
		return err == nil && string(data) == "ready"
	})
	img := filepath.Join(dir, "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, ImageDir: img, HashPages: true})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	want := []string{"pages-1.img", "pages-1-1.img", "pages-1-2.img"}
	if strings.Join(res.PageFiles, " ") != strings.Join(want, " ") {
		t.Fatalf("page files %v, want %v", res.PageFiles, want)
	}
	var total uint64
	for _, name := range res.PageFiles {
		data, err := os.ReadFile(filepath.Join(img, name))
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(data)) > pagesPartSize {
			t.Errorf("%s: %d bytes, more than a part (%d)", name, len(data), pagesPartSize)
		}
		sum := sha256.Sum256(data)
		if got, want := res.PageDigests[name], "sha256:"+hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: digest %s from the dump, %s from the file", name, got, want)
		}
		total += uint64(len(data))
	}
	if total != res.PageBytes || total < mib<<20 {
		t.Fatalf("pages files hold %d bytes, dump says %d, want >= %d", total, res.PageBytes, mib<<20)
	}

	// One part is handed over open (RestoreOptions.PagesFiles), from
	// outside the image directory, as the packer does; the others are
	// found in the directory.
	away := filepath.Join(t.TempDir(), "pages-1-1.img")
	if err := os.Rename(filepath.Join(img, "pages-1-1.img"), away); err != nil {
		t.Fatal(err)
	}
	part, err := os.Open(away)
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid,
		PagesFiles: map[string]*os.File{"pages-1-1.img": part}}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// memhog's buffer is one mmap'ed malloc chunk: data 16 bytes in,
	// byte i = i*7+3.
	start, end := bigAnonMapping(t, stub.Process.Pid, mib<<20)
	buf := make([]byte, end-start)
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	if n, err := unix.ProcessVMReadv(stub.Process.Pid, local, []unix.RemoteIovec{{Base: uintptr(start), Len: len(buf)}}, 0); err != nil || n != len(buf) {
		t.Fatalf("read restored memory: %d, %v", n, err)
	}
	for i := 0; i < mib<<20; i++ {
		if buf[16+i] != byte(i*7+3) {
			t.Fatalf("restored byte %d of the buffer is %#x, want %#x", i, buf[16+i], byte(i*7+3))
		}
	}
}

// bigAnonMapping returns the first anonymous mapping of pid at least size
// bytes long.
func bigAnonMapping(t *testing.T, pid, size int) (uint64, uint64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 || fs[4] != "0" {
			continue
		}
		a, b, _ := strings.Cut(fs[0], "-")
		s, err1 := strconv.ParseUint(a, 16, 64)
		e, err2 := strconv.ParseUint(b, 16, 64)
		if err1 == nil && err2 == nil && e-s >= uint64(size) {
			return s, e
		}
	}
	t.Fatalf("no anonymous mapping of %d bytes in pid %d", size, pid)
	return 0, 0
}
