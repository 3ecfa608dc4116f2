package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

// threadsStatus is testdata/threads.c's status line.
type threadsStatus struct {
	C       [3]int64
	Tid     [3]int
	Alarms  int64
	AltOK   bool
	TLSOK   bool
	Ticks   int64
	TimerID int64
}

func readThreads(path string) (threadsStatus, bool) {
	var s threadsStatus
	data, err := os.ReadFile(path)
	if err != nil {
		return s, false
	}
	f := strings.Fields(string(data))
	if len(f) != 11 {
		return s, false
	}
	var v [11]int64
	for i := range f {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return s, false
		}
		v[i] = n
	}
	s.C = [3]int64{v[0], v[1], v[2]}
	s.Tid = [3]int{int(v[3]), int(v[4]), int(v[5])}
	s.Alarms, s.AltOK, s.TLSOK = v[6], v[7] == 1, v[8] == 1
	s.Ticks, s.TimerID = v[9], v[10]
	return s, true
}

// TestDumpRestoreThreads checkpoints a three-thread program with TLS, a
// mutex, a sigaltstack, a signal handler and an interval timer.
func TestDumpRestoreThreads(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "threads")
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status)
	waitFor(t, "threads to count", func() bool {
		s, ok := readThreads(status)
		return ok && s.C[1] > 20 && s.C[2] > 20 && s.Alarms > 2
	})
	imgDir := filepath.Join(dir, "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: imgDir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	if res.Processes[0].Threads != 3 {
		t.Fatalf("dumped %d threads, want 3", res.Processes[0].Threads)
	}
	before, _ := readThreads(status)
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var after threadsStatus
	waitFor(t, "every restored thread and the timer to go on", func() bool {
		s, ok := readThreads(status)
		after = s
		return ok && s.C[0] > before.C[0]+10 && s.C[1] > before.C[1]+10 && s.C[2] > before.C[2]+10 && s.Alarms > before.Alarms+2 &&
			s.Ticks > before.Ticks+5
	})
	for i := 0; i < 3; i++ {
		if after.C[i] > before.C[i]+10000 {
			t.Errorf("thread %d: counter %d -> %d", i, before.C[i], after.C[i])
		}
	}
	if after.Tid != before.Tid {
		t.Errorf("tids %v after restore, want %v", after.Tid, before.Tid)
	}
	if after.TimerID != 1 {
		t.Errorf("POSIX timer id %d, want 1", after.TimerID)
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(stub.Process.Pid), "timers"))
	if err != nil || !strings.HasPrefix(string(data), "ID: 1\n") || strings.Count("\n"+string(data), "\nID:") != 1 {
		t.Errorf("/proc/PID/timers after restore: %q (%v), want the one timer with ID 1", data, err)
	}
	if !after.AltOK || !after.TLSOK {
		t.Errorf("sigaltstack ok %v, thread-local storage ok %v", after.AltOK, after.TLSOK)
	}
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(stub.Process.Pid), "task"))
	if err != nil || len(ents) != 3 {
		t.Errorf("restored task has %d threads (%v), want 3", len(ents), err)
	}
}
