package oci

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 7})
	_, _ = r.Read(b)
	return b
}

// engineFiles is what a fake engine writes: name -> content.
type engineFiles map[string][]byte

// makeEngineDir writes files (slash paths; directories created 0700) into a
// new directory, as the engine would.
func makeEngineDir(t testing.TB, files engineFiles) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "engine")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testConfig is a config like the runtime fills in.
func testConfig(id string) *Config {
	return &Config{
		EngineVersion: "test-1",
		Created:       time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC),
		ContainerID:   id,
		Host:          Host{Kernel: "6.18.0-test", Arch: "amd64", CPUFeatures: []string{"avx2", "fpu", "sse2"}},
		Time:          Clocks{Realtime: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC), Monotonic: 12345678901, Boottime: 22345678901},
		Spec:          &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"/bin/counter"}, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"}},
		Processes: []Process{
			{Pid: 1, Comm: "counter", Args: []string{"/bin/counter", "-n"}, UID: 1000, GID: 1000, Cwd: "/work", Threads: 3, MemBytes: 4 << 20,
				Files: []string{"0 /dev/null", "1 pipe:[1234]", "3 /work/log (offset 42)"}, Sockets: []string{"4 unix stream /run/s.sock"}},
			{Pid: 7, PPid: 1, Comm: "child", UID: 1000, GID: 1000, Cwd: "/", Threads: 1, MemBytes: 1 << 20},
		},
		Engine: map[string]string{"pageBytes": "5242880", "dumpMillis": "12"},
	}
}

// readTree returns every regular file under dir (slash paths -> content)
// and checks the modes: files 0600, directories 0700.
func readTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("dir %s: mode %v, want 0700", rel, fi.Mode().Perm())
			}
		case fi.Mode().IsRegular():
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("file %s: mode %v, want 0600", rel, fi.Mode().Perm())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = b
		default:
			t.Errorf("%s: unexpected %v", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// copyTree copies a layout so that it can be tampered with.
func copyTree(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// readJSONFile decodes a layout file.
func readJSONFile(t testing.TB, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// layoutManifest returns the index and manifest of a layout.
func layoutManifest(t testing.TB, dir string) (ocispec.Index, ocispec.Manifest) {
	t.Helper()
	var idx ocispec.Index
	readJSONFile(t, filepath.Join(dir, "index.json"), &idx)
	var m ocispec.Manifest
	readJSONFile(t, blobPath(dir, idx.Manifests[0].Digest), &m)
	return idx, m
}

// putBlob adds b to the layout and returns its digest.
func putBlob(t testing.TB, dir string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	if err := os.WriteFile(blobPath(dir, d), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// rewriteManifest edits the manifest of a layout (and optionally index.json)
// and re-points index.json at the new manifest blob.
func rewriteManifest(t testing.TB, dir string, edit func(*ocispec.Manifest)) {
	t.Helper()
	idx, m := layoutManifest(t, dir)
	edit(&m)
	b, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	idx.Manifests[0].Digest = putBlob(t, dir, b)
	idx.Manifests[0].Size = int64(len(b))
	writeIndex(t, dir, idx)
}

func writeIndex(t testing.TB, dir string, idx ocispec.Index) {
	t.Helper()
	b, err := json.Marshal(&idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewriteConfig edits the config blob of a layout.
func rewriteConfig(t testing.TB, dir string, edit func(map[string]any)) {
	t.Helper()
	_, m := layoutManifest(t, dir)
	var c map[string]any
	readJSONFile(t, blobPath(dir, m.Config.Digest), &c)
	edit(c)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	rewriteManifest(t, dir, func(m *ocispec.Manifest) {
		m.Config.Digest = putBlob(t, dir, b)
		m.Config.Size = int64(len(b))
	})
}

// flipByte changes one byte of a file in place.
func flipByte(t testing.TB, p string, off int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off = int64(len(b)) + off
	}
	b[off] ^= 0x5a
	// Replace (new inode) rather than write through: pages blobs may be
	// hardlinks shared with the engine directory of another test.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func layerOf(t testing.TB, m ocispec.Manifest, mediaType string) ocispec.Descriptor {
	t.Helper()
	for _, l := range m.Layers {
		if l.MediaType == mediaType {
			return l
		}
	}
	t.Fatalf("no %s layer", mediaType)
	return ocispec.Descriptor{}
}

func equalBytes(a, b []byte) bool { return bytes.Equal(a, b) }
