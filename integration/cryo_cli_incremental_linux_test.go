package integration

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestCryoIncrementalChain checkpoints the counter three times with `cryo checkpoint
// --parent-path` (a --pre-dump first, then leaving it running, the last time stopping it): each image names its
// parent's manifest, lists every layer of its parent (the same blobs, hardlinked: the chain
// shares them on disk), and the last link alone restores the counter, which continues from the
// third checkpoint.
func TestCryoIncrementalChain(t *testing.T) {
	c := newCryoCLI(t)
	id := "images-incr"
	b, pid, _ := runTokenLoop(t, c, id, tokenLoop)
	dir := t.TempDir()
	links := []string{filepath.Join(dir, "c1"), filepath.Join(dir, "c2"), filepath.Join(dir, "c3")}
	// runc's pre-copy pass: the container runs on, its writes tracked for the next link
	c.must("checkpoint", "--pre-dump", "--image-path", links[0], id)
	n := waitToken(t, pid, 0).n
	waitToken(t, pid, n+2)
	c.must("checkpoint", "--leave-running", "--parent-path", links[0], "--image-path", links[1], id)
	n = waitToken(t, pid, 0).n
	waitToken(t, pid, n+2)
	c.must("checkpoint", "--parent-path", links[1], "--image-path", links[2], id)
	waitGone(t, pid)
	last, err := readTokenFile(filepath.Join(b.dir, "rootfs/state/counter"))
	if err != nil {
		t.Fatal(err)
	}

	var sums []ckSummary
	for _, l := range links {
		sums = append(sums, cryoInspect(t, l))
	}
	if sums[0].Parent != "" {
		t.Errorf("first checkpoint has parent %s", sums[0].Parent)
	}
	for i := 1; i < len(sums); i++ {
		if sums[i].Parent != sums[i-1].Manifest {
			t.Errorf("checkpoint %d names parent %q, want %s", i+1, sums[i].Parent, sums[i-1].Manifest)
		}
		var own int64
		for _, l := range sums[i-1].Layers {
			if !slices.ContainsFunc(sums[i].Layers, func(m ckLayer) bool { return m.Digest == l.Digest }) {
				t.Errorf("checkpoint %d does not list its parent's layer %s (%s)", i+1, l.Digest, l.MediaType)
				continue
			}
			// the same blob on disk: a hardlink of the parent's
			a, b := blobInode(t, links[i-1], l.Digest), blobInode(t, links[i], l.Digest)
			if a != b {
				t.Errorf("layer %s of checkpoint %d is a copy of its parent's (inodes %d, %d)", l.Digest, i+1, a, b)
			}
		}
		for _, l := range sums[i].Layers[len(sums[i-1].Layers):] {
			own += l.Size
		}
		var parentOwn int64
		for _, l := range sums[i-1].Layers {
			parentOwn += l.Size
		}
		t.Logf("checkpoint %d: %d layers, its own are %d bytes (its parent's layers: %d bytes)", i+1, len(sums[i].Layers), own, parentOwn)
	}

	start := time.Now()
	c.detached("restore", "--image-path", links[2], "--detach", "--bundle", b.dir, id)
	assertContinues(t, c.state(id).Pid, last, last.n+1, start)
}

// blobInode returns the inode of a layout's blob.
func blobInode(t *testing.T, layout, dgst string) uint64 {
	t.Helper()
	fi, err := os.Stat(blobFile(layout, dgst))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
