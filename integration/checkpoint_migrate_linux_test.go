package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
	"github.com/cryo-run/cryo/integration/testutil"
)

// exportCheckpoint runs the token loop with a long-lived child on d under r, checkpoints it with
// `ctr c checkpoint --task` as ref, kills the original and exports the checkpoint with `ctr
// images export` to a file. It returns the file, the readings before and after the
// checkpoint (the checkpointed count lies between) and the sleep child's PID.
func exportCheckpoint(t *testing.T, d *harness.Daemon, r ckRuntime, id, ref string) (string, reading, reading, int) {
	t.Helper()
	pid, before := runToken(t, d, r, id, tokenTreeLoop)
	sleeper := sleeperPid(t, pid)
	mustCtr(t, d, "containers", "checkpoint", "--task", id, ref)
	after := waitToken(t, pid, 0)
	archive := filepath.Join(t.TempDir(), "job.tar")
	// (a checkpoint index has no image manifest: no Docker manifest.json for it)
	mustCtr(t, d, "images", "export", "--local", "--skip-manifest-json", archive, ref)
	mustCtr(t, d, "images", "rm", ref)
	removeContainer(t, d, id)
	waitGone(t, pid)
	return archive, before, after, sleeper
}

// restoreExported imports an exported checkpoint into d and restores it as container newID:
// the shell continues, with the same PIDs (init 1, the sleep child's).
func restoreExported(t *testing.T, d *harness.Daemon, archive, ref, newID string, before, after reading, sleeper int) {
	t.Helper()
	mustCtr(t, d, "images", "import", archive)
	t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
	start := time.Now()
	mustCtr(t, d, "containers", "restore", "--live", newID, ref)
	t.Cleanup(func() { removeContainer(t, d, newID) })
	rt := waitStatus(t, d, newID, "RUNNING")
	assertContinues(t, rt.pid, before, after.n, start)
	if got := sleeperPid(t, rt.pid); got != sleeper {
		t.Fatalf("the sleep child is pid %d after restore, was %d", got, sleeper)
	}
}

// TestCheckpointMigrate moves a container to another host: checkpointed on the shared daemon,
// exported, imported into a second, independent containerd (its own root, state and socket)
// and restored there, while the first daemon goes on.
func TestCheckpointMigrate(t *testing.T) {
	d1 := sharedDaemon(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		id := ckID(t, "c")
		ref := "localhost/cryo-it/migrate-" + r.name + ":1"
		archive, before, after, sleeper := exportCheckpoint(t, d1, r, id, ref)
		d2 := newDaemon(t, "migr")
		// The restored container keeps the spec's cgroup, under d1's namespace.
		t.Cleanup(func() {
			if err := harness.KillCgroupTree(d1.Namespace + "/" + id); err != nil {
				t.Errorf("cgroups of the restored container: %v", err)
			}
		})
		restoreExported(t, d2, archive, ref, ckID(t, "r"), before, after, sleeper)
	})
}

// TestCheckpointAcrossReboot keeps a job across a "reboot": checkpointed and exported to a
// file, then everything is gone: the container, containerd (stopped, its root and state
// deleted), the shim and cryo's state. A fresh containerd with its own root imports the file
// and restores: the same PIDs, the same shell, counting on.
func TestCheckpointAcrossReboot(t *testing.T) {
	testutil.RequiresRoot(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
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
		id := ckID(t, "c")
		ref := "localhost/cryo-it/reboot:1"
		archive, before, after, sleeper := exportCheckpoint(t, d1, r, id, ref)

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
		// The checkpoint carries the first container's runtime options (for the runc shim:
		// cryo's --root under the first daemon's directory, which cryo recreates) and spec (its
		// cgroup under the first daemon's namespace).
		t.Cleanup(func() {
			if err := harness.KillCgroupTree(d1.Namespace); err != nil {
				t.Errorf("cgroups of the restored container: %v", err)
			}
			os.RemoveAll(d1.Dir)
		})
		restoreExported(t, newDaemon(t, "reboot2"), archive, ref, ckID(t, "r"), before, after, sleeper)
	})
}
