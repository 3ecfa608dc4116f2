package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// ckRuntime is a way to run cryo under containerd for the checkpoint tests: containerd's runc
// shim with cryo as its runc binary, or our shim.
type ckRuntime struct {
	name  string
	flags func(d *harness.Daemon) []string // ctr run flags
}

var runcShimCryo = ckRuntime{name: "runcshim", flags: func(d *harness.Daemon) []string {
	return runcShimCryoFlags(d, d.Snapshotter, d.Bins().Cryo)
}}

// ckRuntimes are the runtimes the containerd checkpoint scenarios run on.
var ckRuntimes = []ckRuntime{runcShimCryo}

func forEachCkRuntime(t *testing.T, f func(t *testing.T, r ckRuntime)) {
	for _, r := range ckRuntimes {
		t.Run(r.name, func(t *testing.T) { f(t, r) })
	}
}

// ckID returns a container id unique to the test and runtime.
func ckID(t *testing.T, suffix string) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	return strings.ToLower(name + "-" + suffix)
}

// runToken runs the token loop (or another script) detached with ctr under r, removed at the
// end of the test, and returns its task's host PID and a first reading.
func runToken(t *testing.T, d *harness.Daemon, r ckRuntime, id, script string) (int, reading) {
	t.Helper()
	a := append([]string{"run", "-d"}, r.flags(d)...)
	mustCtr(t, d, append(a, busybox, id, "sh", "-c", script)...)
	t.Cleanup(func() { removeContainer(t, d, id) })
	ti := waitStatus(t, d, id, "RUNNING")
	return ti.pid, waitToken(t, ti.pid, 3)
}

// client connects a containerd client to d, in d's namespace.
func client(t *testing.T, d *harness.Daemon) (*containerd.Client, context.Context) {
	t.Helper()
	c, err := containerd.New(d.Address, containerd.WithDefaultNamespace(d.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(testCtx(t), d.Namespace)
}

// withOptions sets runc's checkpoint options on a task checkpoint (what `ctr t checkpoint`
// can only partly express).
func withOptions(set func(o *options.CheckpointOptions)) containerd.CheckpointTaskOpts {
	return func(r *containerd.CheckpointTaskInfo) error {
		if r.Options == nil {
			r.Options = &options.CheckpointOptions{}
		}
		set(r.Options.(*options.CheckpointOptions))
		return nil
	}
}

// named gives a task checkpoint a name of its own: with image_path set, containerd's client
// still records an (empty) image for runtimes other than runc's, by default named after the
// container and the time to the second, so two checkpoints within a second would collide.
func named(t *testing.T, cl *containerd.Client, name string) containerd.CheckpointTaskOpts {
	t.Cleanup(func() { cl.ImageService().Delete(context.Background(), name) })
	return containerd.WithCheckpointName(name)
}

// withContainerOptions edits the options of a container checkpoint (container.Checkpoint);
// it must come before WithCheckpointTask.
func withContainerOptions(set func(o *options.CheckpointOptions)) containerd.CheckpointOpts {
	return func(_ context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, o *options.CheckpointOptions) error {
		set(o)
		return nil
	}
}

// TestCheckpointOptions drives checkpoints with runc's CheckpointOptions through containerd's
// API: leave running (the task goes on, same PID) with work_path, file_locks and open_tcp set
// (the workload has no locks or sockets, so honouring them changes nothing but must not fail),
// the work directory used, image_path; parent_path twice (a chain of three whose links name
// their parents); the last link taken with exit into containerd's store, the task stopping,
// and restored with `ctr c restore --live`: the shell continues. empty_namespaces is refused
// with a clear error, and the task keeps running.
func TestCheckpointOptions(t *testing.T) {
	d := sharedDaemon(t)
	forEachCkRuntime(t, func(t *testing.T, r ckRuntime) {
		id := ckID(t, "c")
		pid, _ := runToken(t, d, r, id, tokenLoop)
		cl, ctx := client(t, d)
		ctr, err := cl.LoadContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		links := []string{filepath.Join(dir, "c1"), filepath.Join(dir, "c2")}
		work := filepath.Join(dir, "work")

		// refused: nothing written, the task untouched
		_, err = task.Checkpoint(ctx, named(t, cl, "localhost/cryo-it/"+id+"-refused"), withOptions(func(o *options.CheckpointOptions) {
			o.ImagePath = filepath.Join(dir, "refused")
			o.EmptyNamespaces = []string{"network"}
		}))
		if err == nil || !strings.Contains(err.Error(), "empty") ||
			!(strings.Contains(err.Error(), "not supported") || strings.Contains(err.Error(), "not implemented")) {
			t.Fatalf("checkpoint with empty_namespaces: %v, want refused as not supported", err)
		}
		t.Logf("empty_namespaces refused: %v", err)
		if ti := waitStatus(t, d, id, "RUNNING"); ti.pid != pid {
			t.Fatalf("task pid %d after a refused checkpoint, was %d", ti.pid, pid)
		}

		_, err = task.Checkpoint(ctx, named(t, cl, "localhost/cryo-it/"+id+"-c1"), withOptions(func(o *options.CheckpointOptions) {
			o.ImagePath, o.WorkPath = links[0], work
			o.FileLocks, o.OpenTcp = true, true
		}))
		if err != nil {
			t.Fatalf("checkpoint with image_path, work_path, file_locks, open_tcp: %v", err)
		}
		if fi, err := os.Stat(work); err != nil || !fi.IsDir() {
			t.Fatalf("work_path %s not used: %v", work, err)
		}
		before := waitToken(t, pid, 0)
		_, err = task.Checkpoint(ctx, named(t, cl, "localhost/cryo-it/"+id+"-c2"), withOptions(func(o *options.CheckpointOptions) {
			o.ImagePath, o.ParentPath = links[1], links[0]
		}))
		if err != nil {
			t.Fatalf("checkpoint with parent_path: %v", err)
		}
		if ti := waitStatus(t, d, id, "RUNNING"); ti.pid != pid {
			t.Fatalf("task pid %d after leave-running checkpoints, was %d", ti.pid, pid)
		}
		s1, s2 := cryoInspect(t, links[0]), cryoInspect(t, links[1])
		assertCounterImage(t, s1, id)
		if s2.Parent != s1.Manifest {
			t.Fatalf("second link names parent %q, want %s", s2.Parent, s1.Manifest)
		}

		// the third link, into containerd's store, stopping the task
		ref := "localhost/cryo-it/opts-" + id + ":3"
		before = waitToken(t, pid, before.n+2)
		if err := task.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		paused := waitToken(t, pid, 0)
		_, err = ctr.Checkpoint(ctx, ref, containerd.WithCheckpointRuntime, containerd.WithCheckpointImage,
			withContainerOptions(func(o *options.CheckpointOptions) { o.ParentPath, o.Exit = links[1], true }),
			containerd.WithCheckpointTask)
		if err != nil {
			t.Fatalf("checkpoint with parent_path and exit into the store: %v", err)
		}
		t.Cleanup(func() { cl.ImageService().Delete(context.Background(), ref) })
		waitStatus(t, d, id, "STOPPED")
		s3 := cryoInspect(t, checkpointLayout(t, d, ref))
		if s3.Parent != s2.Manifest {
			t.Fatalf("third link names parent %q, want %s", s3.Parent, s2.Manifest)
		}
		removeContainer(t, d, id)

		newID := ckID(t, "r")
		start := time.Now()
		mustCtr(t, d, "containers", "restore", "--live", newID, ref)
		t.Cleanup(func() { removeContainer(t, d, newID) })
		rt := waitStatus(t, d, newID, "RUNNING")
		assertContinues(t, rt.pid, paused, paused.n, start)
	})
}
