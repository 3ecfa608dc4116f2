package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-run/cryo/oci"
)

// counterLoop counts in the shell's memory and writes "count uptime" to
// /tmp/counter five times a second: after a restore the count must go on from
// the saved value (not from 1) and the container's uptime (CLOCK_BOOTTIME,
// virtualised by the time namespace) must not jump.
const counterLoop = `i=0; while :; do i=$((i+1)); read up rest < /proc/uptime; echo "$i $up" > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.2; done`

type sample struct {
	n      int
	uptime float64
}

func readCounter(t *testing.T, rootfs string) (sample, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, "tmp/counter"))
	if err != nil {
		return sample{}, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return sample{}, false
	}
	n, err1 := strconv.Atoi(f[0])
	up, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		return sample{}, false
	}
	return sample{n, up}, true
}

// waitCounter waits until the counter satisfies ok.
func waitCounter(t *testing.T, rootfs string, ok func(sample) bool) sample {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, found := readCounter(t, rootfs); found && ok(s) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, _ := readCounter(t, rootfs)
	t.Fatalf("counter never got there: last %+v", s)
	return s
}

func startCounter(t *testing.T, r *Runtime, id string) (*Container, string) {
	t.Helper()
	bundle, s := newBundle(t, "sh", "-c", counterLoop)
	ctx := context.Background()
	c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitCounter(t, s.Root.Path, func(s sample) bool { return s.n >= 3 })
	return c, bundle
}

func nsPid(t *testing.T, hostPid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(hostPid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("no NSpid for %d", hostPid)
	return 0
}

func TestCheckpointRestore(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	id := "ckpt-basic"
	c, bundle := startCounter(t, r, id)
	rootfs := c.Rootfs()
	cgroup := c.rec.CgroupPath
	image := filepath.Join(t.TempDir(), "image")

	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if _, err := r.Load(id); !errors.Is(err, ErrNotExist) {
		t.Fatalf("container after checkpoint: got %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/freezer", cgroup)); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s still there after checkpoint: %v", cgroup, err)
	}
	saved, _ := readCounter(t, rootfs)
	for _, p := range []string{image, filepath.Join(image, "index.json")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	// Let real time pass: the restored clocks must not see it.
	time.Sleep(1500 * time.Millisecond)
	if again, _ := readCounter(t, rootfs); again != saved {
		t.Fatalf("counter moved while checkpointed: %+v -> %+v", saved, again)
	}

	c2, err := r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { _ = c2.Delete(ctx, true) })
	next := waitCounter(t, rootfs, func(s sample) bool { return s.n != saved.n })
	if next.n != saved.n+1 {
		t.Errorf("counter after restore: got %d, want %d (it must continue, not restart)", next.n, saved.n+1)
	}
	if d := next.uptime - saved.uptime; d < 0 || d > 1.0 {
		t.Errorf("container uptime went from %.2f to %.2f across a 1.5 s checkpoint: the clock jumped", saved.uptime, next.uptime)
	}
	if got := nsPid(t, c2.Pid()); got != 1 {
		t.Errorf("restored init is pid %d in its namespace, want 1", got)
	}
	st, err := c2.Status()
	if err != nil || st != Running {
		t.Fatalf("restored container status %v, %v", st, err)
	}
	waitCounter(t, rootfs, func(s sample) bool { return s.n >= next.n+3 })
}

func TestCheckpointLeaveRunning(t *testing.T) {
	for _, noPreCopy := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoPreCopy=%v", noPreCopy), func(t *testing.T) {
			r := newRuntime(t)
			ctx := context.Background()
			id := fmt.Sprintf("ckpt-leave-%v", noPreCopy)
			c, bundle := startCounter(t, r, id)
			rootfs := c.Rootfs()
			image := filepath.Join(t.TempDir(), "image")
			before, _ := readCounter(t, rootfs)
			if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image, LeaveRunning: true, NoPreCopy: noPreCopy}); err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			// The image holds a moment of the call: its end, after a pre-copy.
			end, _ := readCounter(t, rootfs)
			after := waitCounter(t, rootfs, func(s sample) bool { return s.n >= end.n+5 })
			if st, err := c.Status(); err != nil || st != Running {
				t.Fatalf("status after --leave-running checkpoint: %v, %v", st, err)
			}
			assertUntraced(t, c)
			if pre := hasPreCopiedPages(t, image); pre == noPreCopy {
				t.Errorf("pre-copied pages in the image: %v, want %v", pre, !noPreCopy)
			}

			// The image holds the tree as it was: restored, it counts on
			// from the checkpoint, behind the live container's count.
			if err := c.Delete(ctx, true); err != nil {
				t.Fatal(err)
			}
			c2, err := r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Cleanup(func() { _ = c2.Delete(ctx, true) })
			next := waitCounter(t, rootfs, func(s sample) bool { return s.n < after.n })
			if next.n < before.n || next.n > end.n+3 {
				t.Errorf("restored counter %d, want between the checkpoint's start %d and end %d (live one reached %d)", next.n, before.n, end.n, after.n)
			}
		})
	}
}

// TestCheckpointPreCopyKill: a checkpoint that stops the container only at
// the end of a pre-copy, then removes it (a migration's short downtime):
// the image holds the pre-copied pages, and the restored counter goes on
// from the value at the end of the checkpoint.
func TestCheckpointPreCopyKill(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	id := "ckpt-precopy-kill"
	c, bundle := startCounter(t, r, id)
	rootfs := c.Rootfs()
	image := filepath.Join(t.TempDir(), "image")
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image, PreCopy: true, ParentPath: image}); err == nil {
		t.Fatal("checkpoint with PreCopy and a ParentPath: no error")
	}
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image, PreCopy: true}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if _, err := r.Load(id); !errors.Is(err, ErrNotExist) {
		t.Fatalf("container after checkpoint: got %v, want ErrNotExist", err)
	}
	saved, _ := readCounter(t, rootfs)
	if !hasPreCopiedPages(t, image) {
		t.Errorf("no pre-copied pages in the image")
	}
	c2, err := r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { _ = c2.Delete(ctx, true) })
	next := waitCounter(t, rootfs, func(s sample) bool { return s.n != saved.n })
	if next.n != saved.n+1 {
		t.Errorf("restored counter %d, want %d (just after the checkpoint's %d)", next.n, saved.n+1, saved.n)
	}
}

// hasPreCopiedPages says whether the image has pages layers of a pre-copy.
func hasPreCopiedPages(t *testing.T, image string) bool {
	t.Helper()
	ck, err := oci.OpenCheckpoint(image)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	for _, l := range ck.Manifest.Layers {
		if strings.HasSuffix(l.Annotations[oci.AnnotationPath], "-pre.img") {
			return true
		}
	}
	return false
}

func assertUntraced(t *testing.T, c *Container) {
	t.Helper()
	pids, err := c.Processes()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "TracerPid:") && strings.TrimSpace(strings.TrimPrefix(l, "TracerPid:")) != "0" {
				t.Errorf("pid %d is still traced: %s", p, l)
			}
			if strings.HasPrefix(l, "State:") && strings.Contains(l, "stopped") {
				t.Errorf("pid %d is stopped: %s", p, l)
			}
		}
	}
}

// A checkpoint whose image cannot be written must leave the container
// running: the tree is killed only once its image is safe.
func TestCheckpointFailureKeepsContainer(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	c, _ := startCounter(t, r, "ckpt-fail")
	before, _ := readCounter(t, c.Rootfs())
	_, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: "/dev/null/image", WorkPath: t.TempDir()})
	if err == nil {
		t.Fatal("checkpoint into /dev/null/image succeeded")
	}
	waitCounter(t, c.Rootfs(), func(s sample) bool { return s.n >= before.n+3 })
	if st, err := c.Status(); err != nil || st != Running {
		t.Fatalf("status after a failed checkpoint: %v, %v", st, err)
	}
	assertUntraced(t, c)
}

// A tampered image is refused before anything is created.
func TestRestoreTamperedImage(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	id := "ckpt-tamper"
	c, bundle := startCounter(t, r, id)
	cgroup := c.rec.CgroupPath
	image := filepath.Join(t.TempDir(), "image")
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	blobs, err := filepath.Glob(filepath.Join(image, "blobs/sha256/*"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("no blobs: %v", err)
	}
	var biggest string
	var size int64
	for _, b := range blobs {
		if fi, err := os.Stat(b); err == nil && fi.Size() > size {
			biggest, size = b, fi.Size()
		}
	}
	f, err := os.OpenFile(biggest, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, size/2); err != nil {
		t.Fatal(err)
	}
	buf[0] ^= 0xff
	if _, err := f.WriteAt(buf, size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
	if !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("restore of a tampered image: got %v, want ErrDigestMismatch", err)
	}
	if list, err := r.List(); err != nil || len(list) != 0 {
		t.Fatalf("containers after a refused restore: %v, %v", list, err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/freezer", cgroup)); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s exists after a refused restore", cgroup)
	}
}

// A blob changed in place (same size, same mtime, same inode) after a
// restore verified it, with the cache of verified blobs, is refused before
// anything is created: its cache entry no longer matches its ctime.
func TestRestoreTamperedAfterCachedVerify(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	id := "ckpt-tamper-cached"
	c, bundle := startCounter(t, r, id)
	cgroup := c.rec.CgroupPath
	image := filepath.Join(t.TempDir(), "image")
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	ck, err := oci.OpenCheckpoint(image)
	if err != nil {
		t.Fatal(err)
	}
	ck.Close()
	var pages []string
	for _, l := range ck.Manifest.Layers {
		if l.MediaType == oci.MediaTypePages {
			pages = append(pages, filepath.Join(image, "blobs", l.Digest.Algorithm().String(), l.Digest.Encoded()))
			// The checkpoint recorded its pages as verified.
			entries, _ := filepath.Glob(filepath.Join(r.root, verifyCacheDir, "sha256-"+l.Digest.Encoded()+"-*"))
			if len(entries) != 1 {
				t.Fatalf("cache entries for pages blob %s: %v, want one", l.Digest, entries)
			}
		}
	}
	if len(pages) == 0 {
		t.Fatal("no pages layer")
	}
	c2, err := r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := c2.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	p := pages[0]
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// Neither the checkpoint's cleanup nor the restore touched the blob:
	// its entry still describes it (the restore took it from the cache).
	entries, _ := filepath.Glob(filepath.Join(r.root, verifyCacheDir, "sha256-"+filepath.Base(p)+"-*"))
	if len(entries) != 1 {
		t.Fatalf("cache entries for %s: %v", p, entries)
	}
	var entry struct {
		CtimeNs int64 `json:"ctime_ns"`
	}
	if b, err := os.ReadFile(entries[0]); err != nil || json.Unmarshal(b, &entry) != nil {
		t.Fatalf("read cache entry %s: %v", entries[0], err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Ctim.Nano() != entry.CtimeNs {
		t.Fatalf("pages blob ctime %d, cache entry says %d: something changed the blob after the checkpoint", st.Ctim.Nano(), entry.CtimeNs)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	buf[0] ^= 0xff
	if _, err := f.WriteAt(buf, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}

	_, err = r.Restore(ctx, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle}, ImagePath: image})
	if !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("restore of an image tampered with after a cached verification: got %v, want ErrDigestMismatch", err)
	}
	if list, err := r.List(); err != nil || len(list) != 0 {
		t.Fatalf("containers after a refused restore: %v, %v", list, err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/freezer", cgroup)); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s exists after a refused restore", cgroup)
	}
}

// TestCheckpointWhileWaited checkpoints (leaving it running, then stopping it) a container
// whose init this process is waiting for, as a shim does: the waiter must not steal the
// ptrace stops of the dump, and it sees the init's exit only when the init really exits.
func TestCheckpointWhileWaited(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	c, _ := startCounter(t, r, "ckpt-waited")
	waited := make(chan int, 1)
	go func() {
		code, _ := c.Wait()
		waited <- code
	}()
	done := make(chan error, 1)
	go func() {
		_, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(t.TempDir(), "one"), LeaveRunning: true})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("checkpoint of a waited-for container hangs")
	}
	select {
	case code := <-waited:
		t.Fatalf("the waiter returned (%d) while the init runs on", code)
	case <-time.After(200 * time.Millisecond):
	}
	if st, err := c.Status(); err != nil || st != Running {
		t.Fatalf("after a leave-running checkpoint: %v %v", st, err)
	}
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(t.TempDir(), "two")}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	select {
	case code := <-waited:
		if code != 128+int(syscall.SIGKILL) {
			t.Fatalf("init exit code %d after a checkpoint, want SIGKILL's", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not see the init's exit after a checkpoint without leave-running")
	}
}
