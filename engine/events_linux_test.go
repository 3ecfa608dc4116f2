package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestEventLoop checkpoints an epoll event loop with a periodic and a
// one-shot timerfd, a signalfd, an inotify watch, an eventfd inside a nested
// epoll, and a file deleted while open. After restore the loop keeps
// ticking, the one-shot timer armed before the dump fires, a signal arrives
// through the signalfd, the watch reports a new file, the eventfd still holds
// its value and the deleted file its content and offset.
func TestEventLoop(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "evloop")
	dir := t.TempDir()
	watched := filepath.Join(dir, "watched")
	if err := os.Mkdir(watched, 0o755); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir, watched)
	waitFor(t, "the loop to tick", func() bool { v, ok := readInts(status, 4); return ok && v[0] >= 10 })
	imgDir := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: imgDir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	before, _ := readInts(status, 4)
	if before[3] != 0 {
		t.Fatalf("the one-shot timer fired before the dump (status %v): the test ran too slowly", before)
	}
	stub := startStub(t)
	rres, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	host := rres.Pids[1]
	if tp := tracerPid(t, host); tp != 0 {
		t.Fatalf("restored task traced by %d", tp)
	}
	waitFor(t, "the restored loop to tick", func() bool { v, ok := readInts(status, 4); return ok && v[0] > before[0]+20 })
	if err := unix.Kill(host, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the signalfd to read SIGUSR1", func() bool { v, ok := readInts(status, 4); return ok && v[1] == 1 })
	if err := os.WriteFile(filepath.Join(watched, "newfile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the inotify watch to report the new file", func() bool { v, ok := readInts(status, 4); return ok && v[2] >= 1 })
	waitFor(t, "the one-shot timerfd to fire", func() bool { v, ok := readInts(status, 4); return ok && v[3] == 1 })
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result")), "eventfd=42 ghost=content name=newfile"; got != want {
		t.Errorf("result %q, want %q", got, want)
	}
	if v, _ := readInts(status, 4); v[0] > before[0]+5000 {
		t.Errorf("ticks jumped from %d to %d", before[0], v[0])
	}
}
