package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/oci"
)

// incrStatus is the status line of engine/testdata/incr.c.
type incrStatus struct {
	seq, round int64
	sum        string
	counter    int64
}

func readIncrStatus(path string) (incrStatus, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return incrStatus{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) != 4 {
		return incrStatus{}, false
	}
	var s incrStatus
	var e1, e2, e3 error
	s.seq, e1 = strconv.ParseInt(f[0], 10, 64)
	s.round, e2 = strconv.ParseInt(f[1], 10, 64)
	s.sum = f[2]
	s.counter, e3 = strconv.ParseInt(f[3], 10, 64)
	return s, e1 == nil && e2 == nil && e3 == nil
}

func waitIncrStatus(t *testing.T, path string, ok func(incrStatus) bool) incrStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, found := readIncrStatus(path); found && ok(s) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	s, _ := readIncrStatus(path)
	t.Fatalf("incr workload never got there: last %+v", s)
	return s
}

// startIncr runs engine/testdata/incr.c (mib MiB of memory) as the init of a container.
func startIncr(t *testing.T, r *Runtime, id string, mib int) (*Container, string, string) {
	t.Helper()
	bundle, s := newBundle(t, "/incr", strconv.Itoa(mib), "/tmp/status")
	rootfs := filepath.Join(bundle, "rootfs")
	if b, err := exec.Command("gcc", "-static", "-O0", "-o", filepath.Join(rootfs, "incr"), "../engine/testdata/incr.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc incr.c: %v\n%s", err, b)
	}
	ctx := context.Background()
	c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	status := filepath.Join(s.Root.Path, "tmp/status")
	waitIncrStatus(t, status, func(s incrStatus) bool { return s.seq >= 1 })
	return c, bundle, status
}

// incrRound makes the workload change 1% of its pages and waits for the new checksum.
func incrRound(t *testing.T, pid int, status string, prev incrStatus) incrStatus {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	return waitIncrStatus(t, status, func(s incrStatus) bool { return s.round == prev.round+1 && s.seq > prev.seq })
}

// ownPagesBytes sums the pages layers of an image that are its own (not
// its parents', which are listed under parent/).
func ownPagesBytes(w *oci.WriteResult) (own, all int64) {
	for _, l := range w.Layers {
		if l.MediaType != oci.MediaTypePages {
			continue
		}
		all += l.Size
		if !strings.HasPrefix(l.Annotations[oci.AnnotationPath], "parent/") {
			own += l.Size
		}
	}
	return own, all
}

// A chain of three checkpoints (full, then two with --parent-path after 1%
// of 64 MiB changed): the incremental images' own pages are about 1% of a
// full one, and the container restored from the last one has the memory of
// that moment, its counter going on.
func TestCheckpointIncrementalChain(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	id := "incr-chain"
	c, bundle, status := startIncr(t, r, id, 64)
	dir := t.TempDir()
	img := func(i int) string { return filepath.Join(dir, "img"+strconv.Itoa(i)) }

	s := waitIncrStatus(t, status, func(incrStatus) bool { return true })
	w1, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: img(1), LeaveRunning: true})
	if err != nil {
		t.Fatalf("checkpoint 1: %v", err)
	}
	full, _ := ownPagesBytes(w1)
	s = incrRound(t, c.Pid(), status, s)
	w2, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: img(2), LeaveRunning: true, ParentPath: img(1)})
	if err != nil {
		t.Fatalf("checkpoint 2: %v", err)
	}
	s = incrRound(t, c.Pid(), status, s)
	w3, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: img(3), ParentPath: img(2)})
	if err != nil {
		t.Fatalf("checkpoint 3: %v", err)
	}
	for i, w := range []*oci.WriteResult{w2, w3} {
		own, all := ownPagesBytes(w)
		t.Logf("checkpoint %d: own pages %d bytes, with its parents' %d (full: %d)", i+2, own, all, full)
		if own*10 > full {
			t.Errorf("checkpoint %d: own pages layers hold %d bytes, more than 10%% of a full checkpoint's %d", i+2, own, full)
		}
	}

	c2, err := r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: img(3)})
	if err != nil {
		t.Fatalf("restore from the third checkpoint: %v", err)
	}
	t.Cleanup(func() { _ = c2.Delete(ctx, true) })
	if err := unix.Kill(c2.Pid(), unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	got := waitIncrStatus(t, status, func(x incrStatus) bool { return x.seq == s.seq+1 })
	if got.sum != s.sum || got.round != s.round {
		t.Fatalf("restored memory: round %d checksum %s, want round %d checksum %s", got.round, got.sum, s.round, s.sum)
	}
	if got.counter <= s.counter || got.counter > s.counter+100000 {
		t.Fatalf("restored counter %d, want it to continue from %d", got.counter, s.counter)
	}
}

// A missing or corrupt parent fails the checkpoint with a clear error; the
// container keeps running.
func TestCheckpointIncrementalBadParent(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	c, _, status := startIncr(t, r, "incr-bad", 4)
	dir := t.TempDir()
	parent := filepath.Join(dir, "parent")
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: parent, LeaveRunning: true}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(dir, "a"), LeaveRunning: true, ParentPath: filepath.Join(dir, "missing")})
	if err == nil || !strings.Contains(err.Error(), "parent checkpoint") {
		t.Fatalf("checkpoint with a missing parent: %v, want a parent checkpoint error", err)
	}
	t.Logf("missing parent: %v", err)
	// Corrupt the parent's biggest blob (its pages).
	blobs, _ := filepath.Glob(filepath.Join(parent, "blobs/sha256/*"))
	var big string
	var size int64
	for _, b := range blobs {
		if fi, err := os.Stat(b); err == nil && fi.Size() > size {
			big, size = b, fi.Size()
		}
	}
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("corrupt"), size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(dir, "b"), ParentPath: parent})
	if err == nil || !strings.Contains(err.Error(), "parent checkpoint") {
		t.Fatalf("checkpoint with a corrupt parent: %v, want a parent checkpoint error", err)
	}
	t.Logf("corrupt parent: %v", err)
	if st, err := c.Status(); err != nil || st != Running {
		t.Fatalf("status after failed incremental checkpoints: %v, %v", st, err)
	}
	assertUntraced(t, c)
	s := waitIncrStatus(t, status, func(incrStatus) bool { return true })
	incrRound(t, c.Pid(), status, s)
}
