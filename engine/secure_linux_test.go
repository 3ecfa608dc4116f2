package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// statusFields returns the /proc/PID/status lines that a restore must reproduce.
func statusFields(t testing.TB, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{"Umask": true, "Uid": true, "Gid": true, "Groups": true, "SigPnd": true, "ShdPnd": true,
		"SigBlk": true, "SigIgn": true, "SigCgt": true, "CapInh": true, "CapPrm": true, "CapEff": true, "CapBnd": true,
		"CapAmb": true, "NoNewPrivs": true, "Seccomp": true, "Seccomp_filters": true, "NSpid": false}
	out := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && keep[k] {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func limitsOf(t testing.TB, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDumpRestoreCredsSeccompSignals checks credentials, capabilities,
// no_new_privs, a seccomp filter, pending signals, umask, rlimits and cwd.
func TestDumpRestoreCredsSeccompSignals(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "secure")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	status, work := filepath.Join(dir, "status"), filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status, work)
	waitFor(t, "secure to run", func() bool { v, ok := readInts(status, 8); return ok && v[0] > 5 })
	want := statusFields(t, cmd.Process.Pid)
	wantLimits := limitsOf(t, cmd.Process.Pid)
	if want["Seccomp_filters"] != "1" || want["CapEff"] != "0000000000000400" || want["ShdPnd"] == "0000000000000000" {
		t.Fatalf("the workload did not set itself up: %v", want)
	}
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	before, _ := readInts(status, 8)
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var after []int64
	waitFor(t, "the restored task to count on", func() bool {
		v, ok := readInts(status, 8)
		after = v
		return ok && v[0] > before[0]+5
	})
	// uid, euid 1000; uname fails with 42 (the filter); umask 027 (printed
	// in octal); cwd ok; a child subreaper; not dumpable.
	if after[1] != 1000 || after[2] != 1000 || after[3] != 42 || after[4] != 27 || after[5] != 1 || after[6] != 1 || after[7] != 0 {
		t.Errorf("restored status %v, want uid/euid 1000, uname errno 42, umask 27, cwd ok, subreaper 1, dumpable 0", after)
	}
	got := statusFields(t, stub.Process.Pid)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q after restore, want %q", k, got[k], v)
		}
	}
	if l := limitsOf(t, stub.Process.Pid); l != wantLimits {
		t.Errorf("limits after restore:\n%s\nwant:\n%s", l, wantLimits)
	}
	_ = unix.Kill(stub.Process.Pid, unix.SIGKILL)
}
