package engine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

// lookTool finds a program of the base system the test needs.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testutil.SkipOrFail(t, "%s is not installed", name)
	}
	return p
}

// dumpRestoreCounting checkpoints argv (started as PID 1 of its own
// namespaces, writing "<count> ..." to status) and checks that the count
// continues from where it was after restore.
func dumpRestoreCounting(t *testing.T, status string, fields int, argv ...string) {
	t.Helper()
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, argv...)
	waitFor(t, "the program to count", func() bool { v, ok := readInts(status, fields); return ok && v[0] > 10 })
	img := filepath.Join(filepath.Dir(status), "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	before, _ := readInts(status, fields)
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var after []int64
	waitFor(t, "the restored program to count on", func() bool {
		v, ok := readInts(status, fields)
		after = v
		return ok && v[0] > before[0]+5
	})
	if after[0] > before[0]+100000 {
		t.Fatalf("count %d after restore, %d before", after[0], before[0])
	}
	for i := 1; i < fields; i++ {
		if after[i] != before[i] {
			t.Errorf("field %d: %d after restore, want %d", i, after[i], before[i])
		}
	}
	t.Logf("%d processes, %d bytes of pages; count %d -> %d", len(res.Processes), res.PageBytes, before[0], after[0])
}

// TestDumpRestoreShellLoop checkpoints a dash loop that forks and execs
// sleep(1) on every iteration: dynamically linked programs, a child in
// wait4, fork/exec/exit continuing after restore.
func TestDumpRestoreShellLoop(t *testing.T) {
	testutil.RequiresRoot(t)
	sh := lookTool(t, "dash")
	lookTool(t, "sleep")
	status := filepath.Join(t.TempDir(), "status")
	dumpRestoreCounting(t, status, 2, sh, "-c", `i=0; while :; do i=$((i+1)); echo "$i 42" > "$0"; sleep 0.01; done`, status)
}

// TestDumpRestorePerl checkpoints a perl interpreter holding a large array.
func TestDumpRestorePerl(t *testing.T) {
	testutil.RequiresRoot(t)
	perl := lookTool(t, "perl")
	status := filepath.Join(t.TempDir(), "status")
	script := `my @a = map { $_ * 3 } (1..200000); my $n = 0;
while (1) { $n++; my $s = 0; $s += $_ for @a;
  open(my $f, ">", $ARGV[0]) or die; print $f "$n $s\n"; close $f;
  select(undef, undef, undef, 0.002); }`
	dumpRestoreCounting(t, status, 2, perl, "-e", script, status)
}
