package integration

import (
	"testing"
	"time"
)

// runcShimCryo is containerd's own runc shim driving bin/cryo as its runc binary: the path
// that exercises cryo's runc-compatible command line exactly as go-runc calls it.
func runcShimCryoFlags(d interface {
	FifoDir() string
	RuncRoot() string
}, snapshotter, cryo string) []string {
	return []string{"--runtime", runcRT.runtime, "--snapshotter", snapshotter, "--fifo-dir", d.FifoDir(),
		"--runc-root", d.RuncRoot(), "--runc-binary", cryo}
}

// TestRuncShimCheckpointRestore runs a busybox counter under io.containerd.runc.v2 with
// --runc-binary bin/cryo, checkpoints it with `ctr c checkpoint --task` (containerd pauses the
// task, cryo checkpoints it leaving it running, containerd resumes it), kills the original,
// and restores the checkpoint with `ctr c restore --live` as a new container: the restored
// shell has the original's token, is PID 1 in its namespace and counts on from the checkpoint.
func TestRuncShimCheckpointRestore(t *testing.T) {
	d := sharedDaemon(t)
	id := containerID(t, runcRT, "c")
	ref := "localhost/cryo-it/ck-" + id + ":1"
	a := append([]string{"run", "-d"}, runcShimCryoFlags(d, d.Snapshotter, d.Bins().Cryo)...)
	mustCtr(t, d, append(a, busybox, id, "sh", "-c", tokenLoop)...)
	t.Cleanup(func() { removeContainer(t, d, id) })
	ti := waitStatus(t, d, id, "RUNNING")
	before := waitToken(t, ti.pid, 5)
	if before.pid != 1 {
		t.Fatalf("counter shell is pid %d in its namespace, want 1", before.pid)
	}

	mustCtr(t, d, "containers", "checkpoint", "--task", id, ref)
	t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
	// leave-running: the original goes on counting with its token
	after := waitToken(t, ti.pid, before.n+3)
	if after.token != before.token {
		t.Fatalf("original restarted during checkpoint: %v then %v", before, after)
	}
	mustCtr(t, d, "tasks", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeContainer(t, d, id)

	// what cryo wrote into containerd's checkpoint directory is our OCI layout
	assertCounterImage(t, cryoInspect(t, checkpointLayout(t, d, ref)), id)
	newID := containerID(t, runcRT, "r")
	start := time.Now()
	mustCtr(t, d, "containers", "restore", "--live", newID, ref)
	t.Cleanup(func() { removeContainer(t, d, newID) })
	rt := waitStatus(t, d, newID, "RUNNING")
	// the checkpoint was taken between the readings before and after
	assertContinues(t, rt.pid, before, after.n, start)
}
