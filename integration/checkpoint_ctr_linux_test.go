package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTaskCheckpoint checkpoints with `ctr tasks checkpoint`: with --image-path DIR the layout
// goes straight into DIR and the task runs on; with --exit the task stops once its image
// (named containerd.io/checkpoint/<id>:<date>) is in the store, holding cryo's layout.
func TestTaskCheckpoint(t *testing.T) {
	d := sharedDaemon(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		id := ckID(t, "c")
		pid, _ := runToken(t, d, r, id, tokenLoop)

		dir := filepath.Join(t.TempDir(), "ck")
		mustCtr(t, d, "tasks", "checkpoint", "--image-path", dir, id)
		assertCounterImage(t, cryoInspect(t, dir), id)
		if st := waitStatus(t, d, id, "RUNNING"); st.pid != pid {
			t.Fatalf("task pid changed from %d to %d by a leave-running checkpoint", pid, st.pid)
		}
		// For runtimes other than runc's, containerd's client records an empty image even with
		// --image-path, named like the next one if taken within the same second.
		for _, ref := range strings.Fields(mustCtr(t, d, "images", "ls", "-q")) {
			if strings.HasPrefix(ref, "containerd.io/checkpoint/"+id+":") {
				mustCtr(t, d, "images", "rm", ref)
			}
		}

		ref := strings.TrimSpace(mustCtr(t, d, "tasks", "checkpoint", "--exit", id))
		if !strings.HasPrefix(ref, "containerd.io/checkpoint/"+id+":") {
			t.Fatalf("ctr tasks checkpoint printed %q", ref)
		}
		t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
		waitStatus(t, d, id, "STOPPED")
		assertCounterImage(t, cryoInspect(t, checkpointLayout(t, d, ref)), id)
	})
}

// markedLoop is tokenLoop that first leaves its token in /tmp/marker, a file only the rw layer
// of a checkpoint brings back.
const markedLoop = `tok=$RANDOM$RANDOM$RANDOM; echo $tok > /tmp/marker; i=0; while :; do i=$((i+1)); read p _ < /proc/self/stat; echo "$p $tok $i" > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done`

// TestCtrCheckpointRW checkpoints with `ctr c checkpoint --task --rw --image` (the task is
// paused around it and runs on), kills the original and restores with `ctr c restore --live
// --rw`: the restored container has the original's files (the marker with its token) and the
// shell continues.
func TestCtrCheckpointRW(t *testing.T) {
	d := sharedDaemon(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		id := ckID(t, "c")
		pid, before := runToken(t, d, r, id, markedLoop)
		ref := "localhost/cryo-it/rw-" + id + ":1"
		mustCtr(t, d, "containers", "checkpoint", "--task", "--rw", "--image", id, ref)
		t.Cleanup(func() { d.Ctr(testCtx(t), "images", "rm", ref) })
		after := waitToken(t, pid, before.n+2)
		if after.token != before.token {
			t.Fatalf("original restarted: %v then %v", before, after)
		}
		removeContainer(t, d, id)
		waitGone(t, pid)

		newID := ckID(t, "r")
		start := time.Now()
		mustCtr(t, d, "containers", "restore", "--live", "--rw", newID, ref)
		t.Cleanup(func() { removeContainer(t, d, newID) })
		rt := waitStatus(t, d, newID, "RUNNING")
		marker, err := os.ReadFile(filepath.Join("/proc", itoa(rt.pid), "root/tmp/marker"))
		if err != nil || strings.TrimSpace(string(marker)) != before.token {
			t.Fatalf("marker after restore --rw: %q (%v), want the token %s", marker, err, before.token)
		}
		assertContinues(t, rt.pid, before, after.n, start)
	})
}
