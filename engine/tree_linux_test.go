package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

type treeStatus struct {
	Counter              int64
	Pid, PPid, Pgid, Sid int
}

func readTreeStatus(dir, role string) (treeStatus, bool) {
	data, err := os.ReadFile(filepath.Join(dir, role))
	if err != nil {
		return treeStatus{}, false
	}
	f := strings.Fields(string(data))
	if len(f) != 5 {
		return treeStatus{}, false
	}
	var s treeStatus
	var v [5]int64
	for i := range f {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return treeStatus{}, false
		}
		v[i] = n
	}
	s.Counter, s.Pid, s.PPid, s.Pgid, s.Sid = v[0], int(v[1]), int(v[2]), int(v[3]), int(v[4])
	return s, true
}

var treeRoles = []string{"root", "a", "b", "c", "d"}

// TestDumpRestoreTree checkpoints a tree with a zombie, a process group, a
// session, a pipe holding bytes and a log file description shared by every
// process, and checks all of it after restore.
func TestDumpRestoreTree(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "tree")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	testDumpRestoreTree(t, dir, fz, startInNewPidns(t, fz, bin, dir))
}

// TestDumpRestoreTreeV1Freezer is TestDumpRestoreTree with the tree frozen
// by the cgroup v1 freezer.
func TestDumpRestoreTreeV1Freezer(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "tree")
	dir := t.TempDir()
	fz := newV1Freezer(t)
	testDumpRestoreTree(t, dir, fz, startInNewPidns(t, nil, fz.wrap(bin, dir)...))
}

func testDumpRestoreTree(t *testing.T, dir string, fz Freezer, cmd *exec.Cmd) {
	before := map[string]treeStatus{}
	waitFor(t, "every process of the tree to report", func() bool {
		for _, r := range treeRoles {
			s, ok := readTreeStatus(dir, r)
			if !ok || s.Counter < 20 {
				return false
			}
			before[r] = s
		}
		return true
	})
	imgDir := filepath.Join(dir, "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: imgDir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	if len(res.Processes) != 6 {
		t.Fatalf("dumped %d processes, want 6 (5 live and a zombie): %+v", len(res.Processes), res.Processes)
	}
	for _, r := range treeRoles {
		before[r], _ = readTreeStatus(dir, r)
	}
	logBefore, err := os.Stat(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}

	stub := startStub(t)
	rres, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	after := map[string]treeStatus{}
	waitFor(t, "every restored process to count on", func() bool {
		for _, r := range treeRoles {
			s, ok := readTreeStatus(dir, r)
			if !ok || s.Counter <= before[r].Counter+5 {
				return false
			}
			after[r] = s
		}
		return true
	})
	for _, r := range treeRoles {
		b, a := before[r], after[r]
		if a.Counter > b.Counter+10000 {
			t.Errorf("%s: counter %d -> %d", r, b.Counter, a.Counter)
		}
		if a.Pid != b.Pid || a.PPid != b.PPid || a.Pgid != b.Pgid || a.Sid != b.Sid {
			t.Errorf("%s: ids %+v after restore, want %+v", r, a, b)
		}
		if _, ok := rres.Pids[a.Pid]; !ok {
			t.Errorf("%s: pid %d not in the restore result %v", r, a.Pid, rres.Pids)
		}
	}
	if after["a"].Pgid != after["a"].Pid || after["d"].Pgid != after["a"].Pid || after["b"].Sid != after["b"].Pid || after["c"].Sid != after["b"].Pid {
		t.Errorf("groups and sessions: %+v", after)
	}
	// The log description is shared again: one offset for everyone.
	root := rres.Pids[1]
	for _, r := range treeRoles[1:] {
		host := rres.Pids[after[r].Pid]
		if same, err := kcmp(root, host, kcmpFile, 3, 3); err != nil || same != 0 {
			t.Errorf("%s: log fd not shared with root (kcmp %d, %v)", r, same, err)
		}
	}
	// The pipe still holds its bytes; the zombie is there to be reaped.
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var result string
	waitFor(t, "root to read the pipe and reap the zombie", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		result = strings.TrimSpace(string(data))
		return err == nil && strings.HasSuffix(string(data), "\n")
	})
	want := fmt.Sprintf("hello-pipe %d %d", 2, 7<<8)
	if result != want {
		t.Errorf("result %q, want %q", result, want)
	}
	waitFor(t, "the log to grow", func() bool {
		fi, err := os.Stat(filepath.Join(dir, "log"))
		return err == nil && fi.Size() > logBefore.Size()+5
	})
	data, _ := os.ReadFile(filepath.Join(dir, "log"))
	if strings.ContainsRune(string(data), 0) {
		t.Errorf("log has holes: the shared offset was not restored")
	}
	for _, host := range rres.Pids {
		if host == 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", host)); err == nil {
			if tp := tracerPid(t, host); tp != 0 {
				t.Errorf("pid %d still traced by %d", host, tp)
			}
		}
	}
	_ = unix.Kill(stub.Process.Pid, unix.SIGKILL)
}

// TestRestoreFailureKillsTree makes a restore fail half way (a file the tree
// had open is gone) and checks that nothing it created is left alive.
func TestRestoreFailureKillsTree(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "tree")
	dir := t.TempDir()
	cmd := startInNewPidns(t, nil, bin, dir)
	waitFor(t, "the tree to report", func() bool {
		for _, r := range treeRoles {
			if s, ok := readTreeStatus(dir, r); !ok || s.Counter < 5 {
				return false
			}
		}
		return true
	})
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	if err := os.Remove(filepath.Join(dir, "log")); err != nil {
		t.Fatal(err)
	}
	stub := startStub(t)
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", stub.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err == nil {
		t.Fatal("restore succeeded without the log file")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "log")) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("error %q does not name the missing file with ENOENT", err)
	}
	_ = stub.Wait()
	if ws := stub.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("stub ended with %v, want SIGKILL", stub.ProcessState)
	}
	// Nothing is left in the stub's PID namespace.
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns/pid")); err == nil && l == ns {
			t.Errorf("pid %s is still alive in the restore's namespace", p.Name())
		}
	}
}

// TestDumpRestoreFifo checks a FIFO between two processes with bytes in it.
func TestDumpRestoreFifo(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "fifo")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "the writer to count", func() bool { v, ok := readInts(filepath.Join(dir, "child"), 1); return ok && v[0] > 10 })
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, "the reader to read the FIFO", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		got = string(data)
		return err == nil && strings.HasSuffix(got, "\n")
	})
	if got != "fifo-data\n" {
		t.Fatalf("read %q from the FIFO after restore, want fifo-data", got)
	}
}

// TestDumpRestoreInotify checks that inotify watches come back with their
// descriptors (a removed watch leaves a gap) and report events.
func TestDumpRestoreInotify(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "inotify")
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "the watcher to count", func() bool { v, ok := readInts(filepath.Join(dir, "status"), 1); return ok && v[0] > 10 })
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, "the watcher to report its events", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		got = string(data)
		return err == nil && strings.HasSuffix(got, "\n")
	})
	if got != "1 3\n" {
		t.Fatalf("events from watch descriptors %q after restore, want 1 and 3", got)
	}
}

// TestDumpRestoreSocketpair checks a unix stream socketpair between two
// processes, with bytes queued and one direction shut down.
func TestDumpRestoreSocketpair(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "sockpair")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "the child to count", func() bool { v, ok := readInts(filepath.Join(dir, "child"), 1); return ok && v[0] > 10 })
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, "the child to read the socket", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		got = string(data)
		return err == nil && strings.HasSuffix(got, "\n")
	})
	if got != "sock-data EOF\n" {
		t.Fatalf("child read %q after restore, want the queued bytes then end of file", got)
	}
}

// TestDumpRestoreSharedFdTable checks two processes sharing one fd table
// (CLONE_FILES): after restore an fd the child opens shows up in the parent.
func TestDumpRestoreSharedFdTable(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "clonefiles")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, dir)
	waitFor(t, "both processes to count", func() bool {
		p, ok1 := readInts(filepath.Join(dir, "parent"), 1)
		c, ok2 := readInts(filepath.Join(dir, "child"), 1)
		return ok1 && ok2 && p[0] > 10 && c[0] > 10
	})
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	res, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(res.Pids) != 2 {
		t.Fatalf("restored %v, want two processes", res.Pids)
	}
	var hosts []int
	for _, h := range res.Pids {
		hosts = append(hosts, h)
	}
	if same, err := kcmp(hosts[0], hosts[1], 2 /* KCMP_FILES */, 0, 0); err != nil || same != 0 {
		t.Fatalf("restored processes do not share their fd table (kcmp %d, %v)", same, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, "the parent to look for the child's fd", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		got = string(data)
		return err == nil && strings.HasSuffix(got, "\n")
	})
	if !strings.HasPrefix(got, "shared ") {
		t.Fatalf("result %q: the fd the child opened is not in the parent's table", got)
	}
}
