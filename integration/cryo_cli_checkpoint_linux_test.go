package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCryoArchiveCheckpointRestore checkpoints the counter with `cryo checkpoint --archive`
// (the container stops and is deleted), inspects the archive (text and json), and restores it
// with `cryo restore --archive` into the same bundle: the same shell, PID 1, counts on.
func TestCryoArchiveCheckpointRestore(t *testing.T) {
	c := newCryoCLI(t)
	id := "images-archive"
	b, pid, _ := runTokenLoop(t, c, id, tokenLoop)
	archive := filepath.Join(t.TempDir(), "ck.tar")
	c.must("checkpoint", "--archive", archive, "--name", "job-1", id)
	if slices.Contains(c.ids(), id) {
		t.Fatalf("container %s still exists after a checkpoint without --leave-running", id)
	}
	waitGone(t, pid)
	// the bundle's rootfs is a plain directory: the file holds the last count written
	last, err := readTokenFile(filepath.Join(b.dir, "rootfs/state/counter"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive %s: %v, mode %v, want 0600", archive, err, fi.Mode())
	}

	s := cryoInspect(t, archive)
	assertCounterImage(t, s, id)
	if s.Name != "job-1" || s.FormatRevision < 1 || s.Host.Kernel == "" || len(s.Host.CPUFeatures) == 0 {
		t.Errorf("inspect: name %q revision %d host %+v", s.Name, s.FormatRevision, s.Host)
	}
	if p := s.Processes[0]; p.UID != 0 || p.Cwd != "/" || p.Threads != 1 || p.MemBytes == 0 {
		t.Errorf("inspect: init %+v, want uid 0, cwd /, 1 thread, memory saved", p)
	}
	text := c.must("inspect", archive)
	for _, want := range []string{id, "job-1", s.Host.Kernel, "sh", s.Manifest} {
		if !strings.Contains(text, want) {
			t.Errorf("cryo inspect text lacks %q:\n%s", want, text)
		}
	}

	start := time.Now()
	c.detached("restore", "--archive", archive, "--detach", "--bundle", b.dir, id)
	st := c.state(id)
	if st.Status != "running" {
		t.Fatalf("restored container: %+v", st)
	}
	assertContinues(t, st.Pid, last, last.n+1, start)
}

// TestCryoCheckpointLsRm lists the checkpoints of a directory (a layout and an archive of the
// same running container) and removes them: `cryo checkpoint rm` refuses a user who does not
// own the image even where the file modes would let that user delete it, and lets the owner
// and root delete.
func TestCryoCheckpointLsRm(t *testing.T) {
	c := newCryoCLI(t)
	id := "images-lsrm"
	_, pid, _ := runTokenLoop(t, c, id, tokenLoop)
	dir := publicDir(t, 0o777)
	layout := filepath.Join(dir, "one")
	archive := filepath.Join(dir, "two.tar")
	c.must("checkpoint", "--leave-running", "--image-path", layout, "--name", "first", id)
	c.must("checkpoint", "--leave-running", "--archive", archive, "--name", "second", id)
	if st := c.state(id); st.Status != "running" || st.Pid != pid {
		t.Fatalf("after leave-running checkpoints: %+v, want running pid %d", st, pid)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a checkpoint"), 0o666); err != nil {
		t.Fatal(err)
	}

	type entry struct {
		Path        string `json:"path"`
		Name        string `json:"name"`
		ContainerID string `json:"containerID"`
		Owner       int    `json:"owner"`
	}
	list := func() []entry {
		var es []entry
		if err := json.Unmarshal([]byte(c.must("checkpoint", "ls", "--format", "json", dir)), &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	es := list()
	if len(es) != 2 || es[0].Name != "first" || es[1].Name != "second" || es[0].ContainerID != id || es[1].Path != archive {
		t.Fatalf("checkpoint ls: %+v, want first (layout) then second (archive) of %s", es, id)
	}
	table := c.must("checkpoint", "ls", dir)
	if !strings.Contains(table, "first") || !strings.Contains(table, "second") || strings.Contains(table, "notes.txt") {
		t.Fatalf("checkpoint ls table:\n%s", table)
	}

	// The archive now belongs to uid 1000 and is writable by all, in a directory writable by
	// all: only cryo's owner check stands between uid 1001 and its deletion.
	chownTree(t, archive, 1000, 1000)
	cryo := publicCryo(t)
	rm := func(uid uint32, p string) (string, error) {
		cmd := asUser(exec.Command(cryo, "--root", filepath.Join(dir, "state"), "checkpoint", "rm", p), uid, uid)
		_, stderr, err := runCapture(cmd)
		return stderr, err
	}
	stderr, err := rm(1001, archive)
	if err == nil || !isExit(err) || !strings.Contains(stderr, "owned by uid 1000, not 1001") {
		t.Fatalf("rm by uid 1001 of uid 1000's checkpoint: err %v, stderr %q; want refused", err, stderr)
	}
	cryoInspect(t, archive) // still there, intact
	// a root-owned layout (private modes): refused for uid 1001 as well
	if stderr, err := rm(1001, layout); err == nil {
		t.Fatalf("rm by uid 1001 of root's checkpoint succeeded (%q)", stderr)
	}
	cryoInspect(t, layout)
	// the owner may, root may
	if stderr, err := rm(1000, archive); err != nil {
		t.Fatalf("rm by the owner: %v: %s", err, stderr)
	}
	c.must("checkpoint", "rm", layout)
	for _, p := range []string{archive, layout} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still exists after rm (%v)", p, err)
		}
	}
	if es := list(); len(es) != 0 {
		t.Fatalf("checkpoint ls after rm: %+v", es)
	}
	// rm never deletes what is not a checkpoint
	if _, _, err := c.run("checkpoint", "rm", filepath.Join(dir, "notes.txt")); err == nil {
		t.Fatal("cryo checkpoint rm deleted a file that is not a checkpoint")
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatal(err)
	}
}

// TestCryoRestoreRefusals makes one checkpoint and has cryo restore refuse, before it creates
// anything (no container, no cgroup), a copy with a tampered pages blob, a copy whose config
// (digests fixed up) names a CPU feature this host lacks, a restore by a user who does not own
// the image, and one by its non-root owner (the processes ran as root); then the untouched
// image restores and continues.
func TestCryoRestoreRefusals(t *testing.T) {
	c := newCryoCLI(t)
	id := "images-refuse"
	orig, _, _ := runTokenLoop(t, c, id, tokenLoop)
	image := filepath.Join(t.TempDir(), "ck")
	c.must("checkpoint", "--image-path", image, id)
	last, err := readTokenFile(filepath.Join(orig.dir, "rootfs/state/counter"))
	if err != nil {
		t.Fatal(err)
	}
	// a bundle other users can read (for the not-owner cases), with its own cgroup
	b := newCLIBundleIn(t, c, publicDir(t, 0o755), "restored", "sh", "-c", "exit 99")
	cg := b.spec.Linux.CgroupsPath
	rid := "images-refuse-restored"
	c.cleanup(rid)

	refused := func(t *testing.T, cmd *exec.Cmd, want string) {
		t.Helper()
		_, stderr, err := runDetachedCmd(t, cmd)
		if err == nil || !isExit(err) {
			t.Fatalf("restore succeeded (err %v, stderr %q), want it refused", err, stderr)
		}
		if !strings.Contains(stderr, want) {
			t.Fatalf("restore refused with %q, want a message with %q", strings.TrimSpace(stderr), want)
		}
		if slices.Contains(c.ids(), rid) {
			t.Fatalf("refused restore left container %s", rid)
		}
		if left := cgroupLeft(cg); len(left) > 0 {
			t.Fatalf("refused restore left cgroups %v", left)
		}
		t.Logf("refused: %s", strings.TrimSpace(stderr))
	}
	restore := func(img string) *exec.Cmd {
		return c.cmd("restore", "--image-path", img, "--detach", "--bundle", b.dir, rid)
	}

	t.Run("tampered", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "ck")
		copyLayout(t, image, cp)
		blob := largestBlob(t, cp)
		data, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x5a
		if err := os.WriteFile(blob, data, 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, restore(cp), filepath.Base(blob))
	})

	t.Run("cpu-feature", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "ck")
		copyLayout(t, image, cp)
		const feature = "cryo_it_no_such_cpu_feature"
		editConfig(t, cp, func(cfg map[string]any) {
			host := cfg["host"].(map[string]any)
			host["cpuFeatures"] = append(host["cpuFeatures"].([]any), feature)
		})
		// the copy is a valid image: only the feature check can fail
		s := cryoInspect(t, cp)
		if !slices.Contains(s.Host.CPUFeatures, feature) {
			t.Fatalf("edited config lacks %s: %v", feature, s.Host.CPUFeatures)
		}
		refused(t, restore(cp), "this host's CPU lacks "+feature)
	})

	t.Run("not-owner", func(t *testing.T) {
		dir := publicDir(t, 0o777)
		cp := filepath.Join(dir, "ck")
		copyLayout(t, image, cp)
		chownTree(t, cp, 1000, 1000)
		cryo := publicCryo(t)
		for _, tc := range []struct {
			uid  uint32
			want string
		}{
			{1001, "owned by uid 1000"},
			{1000, "ran as uid 0"},
		} {
			cmd := asUser(exec.Command(cryo, "--root", filepath.Join(dir, fmt.Sprintf("state-%d", tc.uid)),
				"restore", "--image-path", cp, "--detach", "--bundle", b.dir, rid), tc.uid, tc.uid)
			refused(t, cmd, tc.want)
		}
	})

	// the original image is fine: it restores, and the restored shell counts on
	start := time.Now()
	c.detached("restore", "--image-path", image, "--detach", "--bundle", b.dir, rid)
	assertContinues(t, c.state(rid).Pid, last, last.n+1, start)
}

// largestBlob returns the path of the biggest blob of a layout (a pages layer).
func largestBlob(t *testing.T, layout string) string {
	t.Helper()
	blobs, err := filepath.Glob(filepath.Join(layout, "blobs/sha256/*"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("no blobs in %s (%v)", layout, err)
	}
	var best string
	var size int64 = -1
	for _, b := range blobs {
		fi, err := os.Stat(b)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size {
			best, size = b, fi.Size()
		}
	}
	return best
}

// editConfig rewrites the config blob of a layout with edit, and fixes up the manifest and
// index.json so that every digest matches again.
func editConfig(t *testing.T, layout string, edit func(cfg map[string]any)) {
	t.Helper()
	var index map[string]any
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	mdesc := index["manifests"].([]any)[0].(map[string]any)
	var manifest map[string]any
	readJSON(t, blobFile(layout, mdesc["digest"].(string)), &manifest)
	cdesc := manifest["config"].(map[string]any)
	var cfg map[string]any
	readJSON(t, blobFile(layout, cdesc["digest"].(string)), &cfg)
	edit(cfg)
	cdesc["digest"], cdesc["size"] = writeBlob(t, layout, cfg)
	mdesc["digest"], mdesc["size"] = writeBlob(t, layout, manifest)
	data, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "index.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func blobFile(layout, dgst string) string {
	return filepath.Join(layout, "blobs", strings.Replace(dgst, ":", "/", 1))
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.UseNumber() // keep big integers exact
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// writeBlob stores v as JSON in the layout and returns its digest and size.
func writeBlob(t *testing.T, layout string, v any) (string, int) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	if err := os.WriteFile(blobFile(layout, d), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return d, len(data)
}

// TestCryoCheckpointPreCopy: `cryo checkpoint --pre-copy` (the container runs while its memory
// is copied, then is stopped and removed) writes an image with pre-copied pages that restores
// and counts on; --pre-copy with --no-pre-copy is refused and the container left as it was.
func TestCryoCheckpointPreCopy(t *testing.T) {
	c := newCryoCLI(t)
	id := "images-precopy"
	b, pid, _ := runTokenLoop(t, c, id, tokenLoop)
	layout := filepath.Join(t.TempDir(), "ck")
	if _, stderr, err := c.run("checkpoint", "--pre-copy", "--no-pre-copy", "--image-path", layout, id); err == nil || !strings.Contains(stderr, "--pre-copy") {
		t.Fatalf("checkpoint --pre-copy --no-pre-copy: %v, %q; want refused", err, stderr)
	}
	if st := c.state(id); st.Status != "running" {
		t.Fatalf("container after a refused checkpoint: %+v", st)
	}
	c.must("checkpoint", "--pre-copy", "--image-path", layout, id)
	waitGone(t, pid)
	last, err := readTokenFile(filepath.Join(b.dir, "rootfs/state/counter"))
	if err != nil {
		t.Fatal(err)
	}
	pre := false
	for _, l := range cryoInspect(t, layout).Layers {
		pre = pre || strings.HasSuffix(l.Path, "-pre.img")
	}
	if !pre {
		t.Errorf("no pre-copied pages in %s", layout)
	}
	start := time.Now()
	c.detached("restore", "--image-path", layout, "--detach", "--bundle", b.dir, id)
	assertContinues(t, c.state(id).Pid, last, last.n+1, start)
}
