package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/integration/testutil"
)

func TestDumpRestoreCounter(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "counter")
	dir := t.TempDir()
	status, data := filepath.Join(dir, "status"), filepath.Join(dir, "data")
	buf := make([]byte, 64<<10)
	rand.Read(buf)
	if err := os.WriteFile(data, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status, data)
	waitFor(t, "counter to reach 20", func() bool {
		s, ok := readCounter(t, status)
		return ok && s.Counter >= 20
	})

	imgDir := filepath.Join(dir, "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: imgDir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait() // killed by the dump
	before, ok := readCounter(t, status)
	if !ok {
		t.Fatal("no status after dump")
	}
	if len(res.Processes) != 1 || res.Processes[0].Pid != 1 || res.PageBytes < 1<<20 {
		t.Fatalf("dump result %+v, want one process, pid 1, >= 1 MiB of pages", res)
	}
	fi, err := os.Stat(imgDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("image dir mode: %v %v", fi.Mode(), err)
	}
	for _, name := range append(res.PageFiles, res.RecordFiles...) {
		fi, err := os.Stat(filepath.Join(imgDir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v", name, fi.Mode(), err)
		}
	}

	stub := startStub(t)
	rres, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if rres.Pids[1] != stub.Process.Pid {
		t.Fatalf("restored pids %v, want 1 -> %d", rres.Pids, stub.Process.Pid)
	}
	var after counterStatus
	waitFor(t, "the restored counter to move", func() bool {
		s, ok := readCounter(t, status)
		after = s
		return ok && s.Counter > before.Counter+10
	})
	t.Logf("counter %d at dump, %d after restore; %d bytes of pages", before.Counter, after.Counter, res.PageBytes)
	if after.Counter > before.Counter+10000 {
		t.Fatalf("counter jumped from %d to %d", before.Counter, after.Counter)
	}
	if after.OK != 1 {
		t.Fatalf("heap pattern corrupted after restore: %+v", after)
	}
	if after.Off != 12345 {
		t.Fatalf("data file offset %d after restore, want 12345", after.Off)
	}
	if after.Pid != 1 {
		t.Fatalf("getpid() = %d after restore, want 1", after.Pid)
	}
	fdinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", stub.Process.Pid))
	if err != nil || !strings.Contains(string(fdinfo), "pos:\t12345\n") {
		t.Fatalf("fdinfo of fd 3: %q %v", fdinfo, err)
	}
	if tp := tracerPid(t, stub.Process.Pid); tp != 0 {
		t.Fatalf("restored task still traced by %d", tp)
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", stub.Process.Pid))
	if strings.TrimSpace(string(comm)) != "counter" {
		t.Fatalf("comm %q, want counter", comm)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", stub.Process.Pid))
	if exe != bin {
		t.Fatalf("exe %q, want %q", exe, bin)
	}
	if testing.Verbose() {
		maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", stub.Process.Pid))
		t.Logf("restored maps:\n%s", maps)
	}
	_ = image.Version
}

// TestDumpFailureLeavesTaskRunning makes a dump fail (the task holds a
// socket, which the engine refuses) and checks that the task keeps running,
// thawed and untraced, and that the error names the pid, fd and socket.
func TestDumpFailureLeavesTaskRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "counter")
	dir := t.TempDir()
	status, data := filepath.Join(dir, "status"), filepath.Join(dir, "data")
	if err := os.WriteFile(data, make([]byte, 20000), 0o644); err != nil {
		t.Fatal(err)
	}
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status, data, "socket")
	waitFor(t, "counter to start", func() bool { s, ok := readCounter(t, status); return ok && s.Counter >= 5 })
	_, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: filepath.Join(dir, "img")})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
	for _, want := range []string{"pid 1: fd 5: socket:[", "(netlink raw): netlink sockets are not supported"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	s0, _ := readCounter(t, status)
	waitFor(t, "counter to keep counting after the failed dump", func() bool {
		s, ok := readCounter(t, status)
		return ok && s.Counter > s0.Counter+5
	})
	if tp := tracerPid(t, cmd.Process.Pid); tp != 0 {
		t.Fatalf("TracerPid %d after a failed dump, want 0", tp)
	}
	ev, err := os.ReadFile(filepath.Join(fz.dir, "cgroup.events"))
	if err != nil || !strings.Contains(string(ev), "frozen 0") {
		t.Fatalf("cgroup.events %q after failed dump: %v", ev, err)
	}
}

// TestDumpLeaveRunning dumps without killing, checks the task runs on,
// then kills it and restores the image.
func TestDumpLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "counter")
	dir := t.TempDir()
	status, data := filepath.Join(dir, "status"), filepath.Join(dir, "data")
	if err := os.WriteFile(data, make([]byte, 20000), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startInNewPidns(t, nil, bin, status, data)
	waitFor(t, "counter to start", func() bool { s, ok := readCounter(t, status); return ok && s.Counter >= 5 })
	imgDir := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, ImageDir: imgDir, LeaveRunning: true}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	s0, _ := readCounter(t, status)
	waitFor(t, "counter to keep counting after the dump", func() bool {
		s, ok := readCounter(t, status)
		return ok && s.Counter > s0.Counter+100
	})
	if tp := tracerPid(t, cmd.Process.Pid); tp != 0 {
		t.Fatalf("TracerPid %d after dump, want 0", tp)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	killed, _ := readCounter(t, status)
	if err := os.Truncate(status, 0); err != nil {
		t.Fatal(err)
	}
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// The restored task continues from the image, taken well before the kill.
	var s counterStatus
	waitFor(t, "restored counter", func() bool {
		var ok bool
		s, ok = readCounter(t, status)
		return ok
	})
	if s.Counter <= 5 || s.Counter >= killed.Counter {
		t.Fatalf("restored counter %d, want between 5 and %d (the value at kill)", s.Counter, killed.Counter)
	}
	if s.OK != 1 || s.Off != 12345 || s.Pid != 1 {
		t.Fatalf("restored status %+v", s)
	}
}
