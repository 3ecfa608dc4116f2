package integration

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

var memImported sync.Map // daemon address -> true

// importMemImage imports the memory workload's image into d once.
func importMemImage(t *testing.T, d *harness.Daemon) {
	t.Helper()
	if _, ok := memImported.Load(d.Address); ok {
		return
	}
	if err := d.Import(testCtx(t), memImageTar(t)); err != nil {
		t.Fatal(err)
	}
	memImported.Store(d.Address, true)
}

// verifyMemory asks the memory workload of the container whose init has host PID pid to check
// every page of its memory, and fails unless all hold what it wrote before the checkpoint.
func verifyMemory(t *testing.T, pid int) {
	t.Helper()
	verified := fmt.Sprintf("/proc/%d/root/tmp/verified", pid)
	os.Remove(verified)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/verify", pid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, verified)
	if v, _ := os.ReadFile(verified); string(v) != "bad 0" {
		t.Fatalf("restored memory: %s pages differ from the checkpointed ones", v)
	}
}

// TestCheckpointMemoryContents checkpoints a static Go program holding 64 MiB of distinct pages
// (several threads, the Go runtime's signals, timers and futexes) with `ctr c checkpoint
// --task`, kills it, and restores it with `ctr c restore --live`: the restored program finds
// every page as it wrote it.
func TestCheckpointMemoryContents(t *testing.T) {
	d := sharedDaemon(t)
	importMemImage(t, d)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		id := ckID(t, "c")
		a := append([]string{"run", "-d"}, r.flags(d)...)
		mustCtr(t, d, append(a, memImage, id, "/bin/mem", "-mb", "64")...)
		t.Cleanup(func() { removeContainer(t, d, id) })
		ti := waitStatus(t, d, id, "RUNNING")
		waitFile(t, fmt.Sprintf("/proc/%d/root/tmp/ready", ti.pid))
		verifyMemory(t, ti.pid) // the check itself works

		ref := "localhost/cryo-it/mem-" + id + ":1"
		mustCtr(t, d, "containers", "checkpoint", "--task", id, ref)
		t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
		removeContainer(t, d, id)
		waitGone(t, ti.pid)

		newID := ckID(t, "r")
		mustCtr(t, d, "containers", "restore", "--live", newID, ref)
		t.Cleanup(func() { removeContainer(t, d, newID) })
		rt := waitStatus(t, d, newID, "RUNNING")
		if ns := nsPid(t, rt.pid); ns != 1 {
			t.Fatalf("restored program is pid %d in its namespace, want 1", ns)
		}
		start := time.Now()
		verifyMemory(t, rt.pid)
		t.Logf("64 MiB verified in %s after restore", time.Since(start).Round(time.Millisecond))
	})
}
