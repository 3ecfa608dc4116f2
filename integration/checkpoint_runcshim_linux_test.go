package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
	"github.com/cryo-run/cryo/integration/testutil"
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

// TestRuncShimTaskCheckpointExit checkpoints with `ctr tasks checkpoint --exit` through the
// runc shim and cryo: the task stops once its image is written, the image (named
// containerd.io/checkpoint/<id>:<date>) holds cryo's layout of the counter, and `ctr tasks
// checkpoint --image-path DIR` writes the layout straight into DIR.
func TestRuncShimTaskCheckpointExit(t *testing.T) {
	d := sharedDaemon(t)
	id := containerID(t, runcRT, "c")
	a := append([]string{"run", "-d"}, runcShimCryoFlags(d, d.Snapshotter, d.Bins().Cryo)...)
	mustCtr(t, d, append(a, busybox, id, "sh", "-c", tokenLoop)...)
	t.Cleanup(func() { removeContainer(t, d, id) })
	ti := waitStatus(t, d, id, "RUNNING")
	waitToken(t, ti.pid, 3)

	// into a directory of ours, leaving the task running
	dir := filepath.Join(t.TempDir(), "ck")
	mustCtr(t, d, "tasks", "checkpoint", "--image-path", dir, id)
	assertCounterImage(t, cryoInspect(t, dir), id)
	if st := waitStatus(t, d, id, "RUNNING"); st.pid != ti.pid {
		t.Fatalf("task pid changed from %d to %d by a leave-running checkpoint", ti.pid, st.pid)
	}

	// into containerd's store, stopping the task
	ref := strings.TrimSpace(mustCtr(t, d, "tasks", "checkpoint", "--exit", id))
	if !strings.HasPrefix(ref, "containerd.io/checkpoint/"+id+":") {
		t.Fatalf("ctr tasks checkpoint printed %q", ref)
	}
	t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
	waitStatus(t, d, id, "STOPPED")
	assertCounterImage(t, cryoInspect(t, checkpointLayout(t, d, ref)), id)
}

// TestRuncShimAcrossReboot keeps a job across a "reboot": a counter with a long-lived child is
// checkpointed through the runc shim and cryo, the checkpoint exported to a file, and then
// everything is gone: the container, containerd (stopped, its root and state deleted), the
// shim and cryo's state. A fresh containerd with its own root imports the file and restores:
// the same PIDs (init 1, the child's), the same shell, counting on.
func TestRuncShimAcrossReboot(t *testing.T) {
	testutil.RequiresRoot(t)
	d1, err := harness.NewDaemon(env.bins, "reboot1")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			if _, err := d1.Close(t.Failed()); err != nil {
				t.Errorf("close first daemon: %v", err)
			}
		}
	})
	ctx := testCtx(t)
	if err := d1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d1.Import(ctx, env.busyboxTar); err != nil {
		t.Fatal(err)
	}
	id := containerID(t, runcRT, "c")
	ref := "localhost/cryo-it/reboot:1"
	a := append([]string{"run", "-d"}, runcShimCryoFlags(d1, d1.Snapshotter, env.bins.Cryo)...)
	mustCtr(t, d1, append(a, busybox, id, "sh", "-c", tokenTreeLoop)...)
	ti := waitStatus(t, d1, id, "RUNNING")
	before := waitToken(t, ti.pid, 3)
	sleeper := sleeperPid(t, ti.pid)

	mustCtr(t, d1, "containers", "checkpoint", "--task", id, ref)
	after := waitToken(t, ti.pid, 0)
	archive := filepath.Join(t.TempDir(), "job.tar")
	// (a checkpoint index has no image manifest: no Docker manifest.json for it)
	mustCtr(t, d1, "images", "export", "--skip-manifest-json", archive, ref)

	// the reboot: nothing of the first daemon, its shims, containers or cryo state survives
	if _, err := d1.Close(false); err != nil {
		t.Fatalf("close first daemon: %v", err)
	}
	closed = true
	if _, err := os.Stat(d1.Dir); !os.IsNotExist(err) {
		t.Fatalf("first daemon's directory (root, state, cryo state) still there: %v", err)
	}
	if pids := harness.CgroupProcs(d1.Namespace); len(pids) > 0 {
		t.Fatalf("processes %v of the first daemon survive", pids)
	}
	waitGone(t, ti.pid)
	// The checkpoint carries the runtime options of the first daemon's container (cryo as
	// the runc binary, its --root under the first daemon's directory, which cryo recreates)
	// and its spec (the cgroup under the first daemon's namespace).
	t.Cleanup(func() {
		if err := harness.KillCgroupTree(d1.Namespace); err != nil {
			t.Errorf("cgroups of the restored container: %v", err)
		}
		os.RemoveAll(d1.Dir)
	})

	d2 := newDaemon(t, "reboot2")
	mustCtr(t, d2, "images", "import", "--no-unpack", archive)
	newID := containerID(t, runcRT, "r")
	start := time.Now()
	mustCtr(t, d2, "containers", "restore", "--live", newID, ref)
	t.Cleanup(func() { removeContainer(t, d2, newID) })
	rt := waitStatus(t, d2, newID, "RUNNING")
	assertContinues(t, rt.pid, before, after.n, start)
	if got := sleeperPid(t, rt.pid); got != sleeper {
		t.Fatalf("the sleep child is pid %d after restore, was %d", got, sleeper)
	}
}
