package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// lockLines returns the lock lines of /proc/pid/fdinfo/fd without their
// ordinal and pid fields ("POSIX ADVISORY WRITE 10 19").
func lockLines(t *testing.T, pid, fd int) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "lock:"); ok {
			f := strings.Fields(rest)
			out = append(out, strings.Join([]string{f[1], f[2], f[3], f[6], f[7]}, " "))
		}
	}
	return out
}

// getlk asks F_GETLK (or F_OFD_GETLK) for a write lock on start..start+len-1
// through fd, from this process.
func getlk(t *testing.T, fd, cmd int, start, n int64) unix.Flock_t {
	t.Helper()
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n}
	if err := unix.FcntlFlock(uintptr(fd), cmd, &fl); err != nil {
		t.Fatalf("F_GETLK %d-%d: %v", start, start+n-1, err)
	}
	return fl
}

// TestDumpRestoreFileLocks checks that POSIX, OFD and flock locks are held
// again by the restored process, with their ranges and types, and that a
// dump without FileLocks refuses them, naming the lock.
func TestDumpRestoreFileLocks(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "locks")
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "the program to count", func() bool { return readCountFile(count) > 20 })
	var a, b, c int
	data, _ := os.ReadFile(filepath.Join(dir, "fds"))
	if _, err := fmt.Sscan(string(data), &a, &b, &c); err != nil {
		t.Fatalf("fds %q: %v", data, err)
	}
	want := map[int][]string{
		a: {"POSIX ADVISORY WRITE 10 19", "POSIX ADVISORY READ 50 EOF"},
		b: {"FLOCK ADVISORY WRITE 0 EOF"},
		c: {"OFDLCK ADVISORY WRITE 30 39"},
	}
	for fd, w := range want {
		if got := lockLines(t, cmd.Process.Pid, fd); strings.Join(got, ",") != strings.Join(w, ",") {
			t.Fatalf("before dump fd %d holds %q, want %q", fd, got, w)
		}
	}
	_, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: filepath.Join(dir, "refused")})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "pid 1") || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", a)) ||
		!strings.Contains(err.Error(), "/data") || !strings.Contains(err.Error(), "POSIX") {
		t.Fatalf("dump without FileLocks: %v, want a refusal naming pid 1, fd %d, the path and the lock", err, a)
	}
	n := readCountFile(count)
	waitFor(t, "the program to run on after the refusal", func() bool { return readCountFile(count) > n+10 })

	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img, FileLocks: true}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	n0 := readCountFile(count)
	stub := startStub(t)
	res, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	pid := res.Pids[1]
	waitFor(t, "the restored program to count on", func() bool { return readCountFile(count) > n0+20 })
	if c := readCountFile(count); c > n0+5000 {
		t.Errorf("count jumped: %d -> %d", n0, c)
	}
	for fd, w := range want {
		if got := lockLines(t, pid, fd); strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("restored fd %d holds %q, want %q", fd, got, w)
		}
	}
	// Another process sees the locks, owned by the restored process.
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if fl := getlk(t, fd, unix.F_GETLK, 12, 1); fl.Type != unix.F_WRLCK || fl.Pid != int32(pid) || fl.Start != 10 || fl.Len != 10 {
		t.Errorf("F_GETLK at 12: %+v, want a write lock 10+10 of pid %d", fl, pid)
	}
	if fl := getlk(t, fd, unix.F_GETLK, 1000, 1); fl.Type != unix.F_RDLCK || fl.Pid != int32(pid) || fl.Start != 50 || fl.Len != 0 {
		t.Errorf("F_GETLK at 1000: %+v, want a read lock from 50 to EOF of pid %d", fl, pid)
	}
	if fl := getlk(t, fd, unix.F_GETLK, 40, 10); fl.Type != unix.F_UNLCK {
		t.Errorf("F_GETLK at 40-49: %+v, want unlocked", fl)
	}
	if fl := getlk(t, fd, unix.F_OFD_GETLK, 35, 1); fl.Type != unix.F_WRLCK || fl.Pid != -1 || fl.Start != 30 || fl.Len != 10 {
		t.Errorf("F_OFD_GETLK at 35: %+v, want an OFD write lock 30+10", fl)
	}
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("flock(LOCK_SH) by another process: %v, want EWOULDBLOCK", err)
	}
}
