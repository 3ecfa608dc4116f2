package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// nerdctlRuntime is what `nerdctl run --runtime` gets for a checkpoint runtime: a runc binary
// path selects containerd's runc shim with that binary.
func nerdctlRuntime(d *harness.Daemon, r ckRuntime) string {
	if r.name == runcShimCryo.name {
		return d.Bins().Cryo
	}
	return cryoRT.runtime
}

// TestNerdctlCheckpoint drives checkpoints with nerdctl v2.2: `checkpoint create
// --leave-running` (the container goes on), `checkpoint create` of the paused container (it
// stops: through the runc shim; nerdctl cannot ask another runtime to), `checkpoint ls`,
// `start --checkpoint` (the same container comes back as the checkpointed shell and counts
// on), `checkpoint rm`.
func TestNerdctlCheckpoint(t *testing.T) {
	d := sharedDaemon(t)
	ctx := testCtx(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		name := ckID(t, "n")
		nerd := func(args ...string) string {
			t.Helper()
			out, err := d.Nerdctl(ctx, args...)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		// Made before the container's cleanup is registered, so that it is
		// removed after the container (cleanups run last-in first-out).
		state := t.TempDir()
		t.Cleanup(func() { d.Nerdctl(ctx, "rm", "-f", name) })
		id := strings.TrimSpace(nerd("run", "-d", "--runtime", nerdctlRuntime(d, r), "--network", "none", "--name", name,
			"-v", state+":/state",
			busybox, "sh", "-c", tokenLoop))
		ti := waitStatus(t, d, id, "RUNNING")
		waitToken(t, ti.pid, 3)

		// nerdctl keeps checkpoints by name in one directory for all containers
		ck1, ck2 := "ck1-"+r.name, "ck2-"+r.name
		if out := nerd("checkpoint", "create", "--leave-running", name, ck1); strings.TrimSpace(out) != ck1 {
			t.Fatalf("nerdctl checkpoint create printed %q", out)
		}
		if st := waitStatus(t, d, id, "RUNNING"); st.pid != ti.pid {
			t.Fatalf("task pid %d after --leave-running, was %d", st.pid, ti.pid)
		}
		nerd("pause", name)
		paused := waitToken(t, ti.pid, 0)
		nerd("checkpoint", "create", name, ck2)
		t.Cleanup(func() { d.Nerdctl(ctx, "checkpoint", "rm", name, ck2) })
		if r.name == runcShimCryo.name {
			waitStatus(t, d, id, "STOPPED")
		} else {
			// nerdctl sends checkpoint options to runc's runtime only: our shim gets none,
			// which is runc's default (leave running), so the task stays paused
			waitStatus(t, d, id, "PAUSED")
			nerd("unpause", name)
			nerd("kill", name)
			waitStatus(t, d, id, "STOPPED")
		}
		// what nerdctl unpacked is cryo's layout
		assertCounterImage(t, cryoInspect(t, filepath.Join(d.Dir, "nerdctl", "checkpoints", ck2)), id)
		ls := nerd("checkpoint", "ls", name)
		if !strings.Contains(ls, ck1) || !strings.Contains(ls, ck2) {
			t.Fatalf("nerdctl checkpoint ls:\n%s", ls)
		}

		start := time.Now()
		nerd("start", "--checkpoint", ck2, name)
		rt := waitStatus(t, d, id, "RUNNING")
		assertContinues(t, rt.pid, paused, paused.n, start)

		nerd("checkpoint", "rm", name, ck1)
		if ls := nerd("checkpoint", "ls", name); strings.Contains(ls, ck1) || !strings.Contains(ls, ck2) {
			t.Fatalf("nerdctl checkpoint ls after rm ck1:\n%s", ls)
		}
	})
}
