package oci

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestRoundTripMatrix(t *testing.T) {
	records := engineFiles{
		"inventory.img":   []byte("tree of 2 tasks"),
		"core-1.img":      randBytes(1, 3000),
		"core-7.img":      randBytes(2, 1500),
		"mm/mm-1.img":     randBytes(3, 800),
		"fdinfo/empty":    {},
		"pages-x.txt":     []byte("not a pages file: a record"),
		"sub/pages-9.img": []byte("pages name below the top: a record"),
	}
	sizes := []struct {
		name  string
		pages engineFiles
		chunk int64
	}{
		{"empty-pages", engineFiles{"pages-1.img": {}}, 0},
		{"no-pages", engineFiles{}, 0},
		{"small", engineFiles{"pages-1.img": randBytes(10, 3*4096)}, 0},
		{"several-MiB", engineFiles{"pages-1.img": randBytes(11, 5<<20+4096)}, 0},
		{"multiple", engineFiles{"pages-1.img": randBytes(12, 3<<20), "pages-2.img": randBytes(13, 4096), "pages-10.img": {}}, 0},
		{"chunked", engineFiles{"pages-1.img": randBytes(14, 3<<20+12345), "pages-2.img": randBytes(15, 1<<20)}, 1 << 20},
		{"chunk-above-size", engineFiles{"pages-1.img": randBytes(16, 3<<20)}, 4 << 20},
	}
	for _, sz := range sizes {
		for _, withRootfs := range []bool{false, true} {
			for _, archive := range []bool{false, true} {
				name := sz.name
				if withRootfs {
					name += "/rootfs"
				}
				if archive {
					name += "/archive"
				}
				t.Run(name, func(t *testing.T) {
					files := engineFiles{}
					for k, v := range records {
						files[k] = v
					}
					for k, v := range sz.pages {
						files[k] = v
					}
					engine := makeEngineDir(t, files)
					tmp := t.TempDir()
					opts := WriteOptions{ChunkSize: sz.chunk}
					var rootfs []byte
					if withRootfs {
						rootfs = makeTar(t, map[string]string{"etc/hostname": "cryo\n", "data/x": "y"})
						opts.RootfsDiff = filepath.Join(tmp, "diff.tar")
						if err := os.WriteFile(opts.RootfsDiff, rootfs, 0o600); err != nil {
							t.Fatal(err)
						}
					}
					layout := filepath.Join(tmp, "ckpt")
					res, err := WriteCheckpoint(layout, engine, testConfig("ctr-"+sz.name), opts)
					if err != nil {
						t.Fatal(err)
					}
					readTree(t, layout) // modes
					wantLayers := 1 + len(sz.pages)
					if sz.name == "chunked" {
						wantLayers = 1 + 4 + 1
					}
					if withRootfs {
						wantLayers++
					}
					if len(res.Layers) != wantLayers {
						t.Errorf("got %d layers, want %d", len(res.Layers), wantLayers)
					}
					src := layout
					if archive {
						src = filepath.Join(tmp, "ckpt.tar")
						if err := WriteArchive(layout, src); err != nil {
							t.Fatal(err)
						}
						if fi, err := os.Stat(src); err != nil || fi.Mode().Perm() != 0o600 {
							t.Fatalf("archive: %v, mode %v", err, fi.Mode())
						}
					}
					c, err := OpenCheckpoint(src)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					if c.ManifestDescriptor.Digest != res.Manifest.Digest {
						t.Errorf("manifest %s, want %s", c.ManifestDescriptor.Digest, res.Manifest.Digest)
					}
					want := testConfig("ctr-" + sz.name)
					want.FormatRevision, want.Name = FormatRevision, want.ContainerID
					if !reflect.DeepEqual(&c.Config, want) {
						t.Errorf("config:\ngot  %+v\nwant %+v", c.Config, *want)
					}
					if c.Name != want.ContainerID || c.ContainerID != want.ContainerID || !c.Created.Equal(want.Created) {
						t.Errorf("index: %q %q %v", c.Name, c.ContainerID, c.Created)
					}
					work := filepath.Join(tmp, "work")
					if err := c.Extract(work); err != nil {
						t.Fatal(err)
					}
					got := readTree(t, work)
					if len(got) != len(files) {
						t.Errorf("extracted %d files, want %d: %v", len(got), len(files), keys(got))
					}
					for name, b := range files {
						if !bytes.Equal(got[name], b) {
							t.Errorf("%s: %d bytes differ from the %d written", name, len(got[name]), len(b))
						}
					}
					for _, f := range c.Files {
						if !f.Dir && !f.Pages && files[f.Path] == nil {
							t.Errorf("listed file %s was not written", f.Path)
						}
					}
					// Whole-file pages are hardlinks of the verified blobs.
					for _, l := range c.Manifest.Layers {
						if l.MediaType != MediaTypePages || sz.chunk > 0 && sz.chunk < int64(len(files[l.Annotations[AnnotationPath]])) {
							continue
						}
						a, err1 := os.Stat(filepath.Join(work, l.Annotations[AnnotationPath]))
						b, err2 := os.Stat(blobPath(c.Path, l.Digest))
						if err1 != nil || err2 != nil || !os.SameFile(a, b) {
							t.Errorf("%s is not a hardlink of blob %s (%v, %v)", l.Annotations[AnnotationPath], l.Digest, err1, err2)
						}
					}
					diff, ok := c.RootfsDiff()
					if ok != withRootfs {
						t.Fatalf("RootfsDiff: %v, want %v", ok, withRootfs)
					}
					if ok {
						if b, err := os.ReadFile(diff); err != nil || !bytes.Equal(b, rootfs) {
							t.Errorf("rootfs diff: %v", err)
						}
					}
					if archive {
						tmpLayout := c.Path
						if err := c.Close(); err != nil {
							t.Fatal(err)
						}
						if _, err := os.Stat(tmpLayout); !errors.Is(err, os.ErrNotExist) {
							t.Errorf("Close left the archive's temporary layout: %v", err)
						}
					}
				})
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func makeTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range keys(files) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLayoutContract pins index.json and the manifest to DESIGN.md: media
// types, artifactType, annotations, layer annotations.
func TestLayoutContract(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"inventory.img": []byte("x"), "pages-1.img": randBytes(1, 8192), "pages-2.img": randBytes(2, 100)})
	dir := filepath.Join(t.TempDir(), "ckpt")
	rootfs := filepath.Join(t.TempDir(), "diff.tar")
	if err := os.WriteFile(rootfs, makeTar(t, map[string]string{"a": "b"}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteCheckpoint(dir, engine, testConfig("ctr1"), WriteOptions{Name: "before-upgrade", RootfsDiff: rootfs}); err != nil {
		t.Fatal(err)
	}
	var layoutFile map[string]any
	readJSONFile(t, filepath.Join(dir, "oci-layout"), &layoutFile)
	if !reflect.DeepEqual(layoutFile, map[string]any{"imageLayoutVersion": "1.0.0"}) {
		t.Errorf("oci-layout: %v", layoutFile)
	}
	var raw map[string]any
	readJSONFile(t, filepath.Join(dir, "index.json"), &raw)
	if raw["schemaVersion"] != 2.0 || raw["mediaType"] != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index.json: %v", raw)
	}
	idx, m := layoutManifest(t, dir)
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	created := "2025-03-04T05:06:07.00000089Z"
	wantAnn := map[string]string{
		"io.cryo.checkpoint.name":           "before-upgrade",
		"io.cryo.checkpoint.container":      "ctr1",
		"io.cryo.checkpoint.created":        created,
		"org.opencontainers.image.ref.name": "before-upgrade",
	}
	if md.MediaType != "application/vnd.oci.image.manifest.v1+json" || md.ArtifactType != "application/vnd.cryo.checkpoint.v1" || !reflect.DeepEqual(md.Annotations, wantAnn) {
		t.Errorf("index.json manifest entry: %+v", md)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != "application/vnd.cryo.checkpoint.v1" ||
		m.Config.MediaType != "application/vnd.cryo.checkpoint.config.v1+json" {
		t.Errorf("manifest: %+v", m)
	}
	wantManifestAnn := map[string]string{
		"io.cryo.checkpoint.name":          "before-upgrade",
		"io.cryo.checkpoint.container":     "ctr1",
		"io.cryo.checkpoint.created":       created,
		"org.opencontainers.image.created": created,
	}
	if !reflect.DeepEqual(m.Annotations, wantManifestAnn) {
		t.Errorf("manifest annotations: %v", m.Annotations)
	}
	type layer struct{ mediaType, path, offset string }
	var got []layer
	for _, l := range m.Layers {
		got = append(got, layer{l.MediaType, l.Annotations["io.cryo.checkpoint.path"], l.Annotations["io.cryo.checkpoint.offset"]})
	}
	want := []layer{
		{"application/vnd.cryo.checkpoint.state.v1.tar", ".", ""},
		{"application/vnd.cryo.checkpoint.pages.v1", "pages-1.img", "0"},
		{"application/vnd.cryo.checkpoint.pages.v1", "pages-2.img", "0"},
		{"application/vnd.oci.image.layer.v1.tar", "", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layers:\ngot  %v\nwant %v", got, want)
	}
	// The state layer is a plain tar: names sorted by walk, mode 0600,
	// owner 0, epoch times.
	st, err := os.Open(blobPath(dir, m.Layers[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tr := tar.NewReader(st)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != "inventory.img" || hdr.Mode != 0o600 || hdr.Uid != 0 || !hdr.ModTime.Equal(time.Unix(0, 0)) {
		t.Errorf("state tar entry: %+v, %v", hdr, err)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"b.img": []byte("b"), "a/c.img": []byte("c"), "pages-1.img": randBytes(3, 5000)})
	var digests []string
	for i := range 2 {
		res, err := WriteCheckpoint(filepath.Join(t.TempDir(), "ckpt"), engine, testConfig("ctr"), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.Manifest.Digest.String())
		// Touch the records: times and modes are not part of the image.
		if i == 0 {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(engine, "b.img"), later, later); err != nil {
				t.Fatal(err)
			}
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("same engine files and config gave manifests %s and %s", digests[0], digests[1])
	}
}

func TestWriteRefusesExisting(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"pages-1.img": []byte("p"), "r.img": []byte("r")})
	dst := filepath.Join(t.TempDir(), "ckpt")
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := readTree(t, dst)
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second write: got %v, want ErrExists", err)
	}
	if after := readTree(t, dst); !reflect.DeepEqual(before, after) {
		t.Error("refused write changed the existing image")
	}
	// A non-empty directory that is not an image is not overwritten either.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "keep"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteCheckpoint(other, engine, testConfig("c"), WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("write into non-empty dir: got %v, want ErrExists", err)
	}
	// An existing empty directory (what containerd hands the shim) is used.
	empty := t.TempDir()
	if err := os.Chmod(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteCheckpoint(empty, engine, testConfig("c"), WriteOptions{}); err != nil {
		t.Fatalf("write into empty dir: %v", err)
	}
	readTree(t, empty)
	// An archive is not overwritten.
	tarPath := filepath.Join(t.TempDir(), "x.tar")
	if err := os.WriteFile(tarPath, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(dst, tarPath); !errors.Is(err, ErrExists) {
		t.Fatalf("archive over a file: got %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(tarPath); string(b) != "old" {
		t.Error("archive overwritten")
	}
}

func TestFailedWriteLeavesNothing(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"pages-1.img": randBytes(1, 1<<20), "r.img": []byte("r")})
	dst := filepath.Join(t.TempDir(), "ckpt")
	// A rootfs diff that is a directory fails after the layout was started.
	_, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{RootfsDiff: t.TempDir()})
	if err == nil {
		t.Fatal("write with a directory as rootfs diff succeeded")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed write left %s: %v", dst, err)
	}
	// Engine directories holding links or devices are refused.
	if err := os.Symlink("/etc/passwd", filepath.Join(engine, "link.img")); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{}); err == nil || !strings.Contains(err.Error(), "link.img") {
		t.Errorf("engine dir with a symlink: got %v", err)
	}
	// A layout without index.json (a crash before the commit) is no image.
	engine2 := makeEngineDir(t, engineFiles{"r.img": []byte("r")})
	if _, err := WriteCheckpoint(dst, engine2, testConfig("c"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dst, "index.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(dst); !errors.Is(err, ErrNotCheckpoint) {
		t.Errorf("layout without index.json: got %v, want ErrNotCheckpoint", err)
	}
	if l, err := List(filepath.Dir(dst)); err != nil || len(l) != 0 {
		t.Errorf("List shows an uncommitted layout: %v %v", l, err)
	}
}

func TestExtractRefusesNonEmpty(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"pages-1.img": []byte("p"), "r.img": []byte("r")})
	dst := filepath.Join(t.TempDir(), "ckpt")
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dst)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "r.img"), []byte("planted"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Extract(work); !errors.Is(err, ErrExists) {
		t.Fatalf("extract into non-empty dir: got %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "r.img")); string(b) != "planted" {
		t.Error("extract touched a non-empty directory")
	}
}

// TestIncrementalChain writes three checkpoints, each the parent of the
// next, and checks the third stands alone, shares its ancestors' blobs by
// hardlink, and lays the whole chain out.
func TestIncrementalChain(t *testing.T) {
	tmp := t.TempDir()
	gens := []engineFiles{
		{"inventory.img": []byte("gen0"), "pagemap-1.img": []byte("pm0"), "pages-1.img": randBytes(20, 2<<20)},
		{"inventory.img": []byte("gen1"), "pagemap-1.img": []byte("pm1"), "pages-1.img": randBytes(21, 64<<10)},
		{"inventory.img": []byte("gen2"), "pagemap-1.img": []byte("pm2"), "pages-1.img": randBytes(22, 4096), "pages-2.img": randBytes(23, 8192)},
	}
	var paths []string
	var manifests []string
	for i, files := range gens {
		p := filepath.Join(tmp, "gen"+string(rune('0'+i)))
		opts := WriteOptions{}
		if i > 0 {
			opts.Parent = paths[i-1]
		}
		cfg := testConfig("ctr")
		cfg.Created = cfg.Created.Add(time.Duration(i) * time.Minute)
		res, err := WriteCheckpoint(p, makeEngineDir(t, files), cfg, opts)
		if err != nil {
			t.Fatalf("gen %d: %v", i, err)
		}
		paths = append(paths, p)
		manifests = append(manifests, res.Manifest.Digest.String())
	}
	c, err := OpenCheckpoint(paths[2])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Config.Parent.String() != manifests[1] {
		t.Errorf("parent %s, want %s", c.Config.Parent, manifests[1])
	}
	var where []string
	for _, l := range c.Manifest.Layers {
		where = append(where, l.MediaType[len("application/vnd.cryo.checkpoint."):]+" "+l.Annotations[AnnotationPath])
	}
	want := []string{
		"state.v1.tar parent/parent", "pages.v1 parent/parent/pages-1.img",
		"state.v1.tar parent", "pages.v1 parent/pages-1.img",
		"state.v1.tar .", "pages.v1 pages-1.img", "pages.v1 pages-2.img",
	}
	if !reflect.DeepEqual(where, want) {
		t.Errorf("layers:\ngot  %q\nwant %q", where, want)
	}
	// Shared blobs are hardlinks of the ancestors' (same filesystem).
	a, _ := os.Stat(blobPath(paths[0], layerOf(t, mustManifest(t, paths[0]), MediaTypePages).Digest))
	b, _ := os.Stat(blobPath(paths[2], c.Manifest.Layers[1].Digest))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("grandparent pages blob is not shared by hardlink")
	}
	// The chain's manifests and configs travel too: the parent resolves.
	for _, m := range manifests[:2] {
		if _, err := os.Stat(filepath.Join(paths[2], "blobs", "sha256", m[len("sha256:"):])); err != nil {
			t.Errorf("ancestor manifest %s missing: %v", m, err)
		}
	}
	// The image stands alone: remove the ancestors, archive it, restore.
	for _, p := range paths[:2] {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	arch := filepath.Join(tmp, "gen2.tar")
	if err := WriteArchive(paths[2], arch); err != nil {
		t.Fatal(err)
	}
	ca, err := OpenCheckpoint(arch)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	work := filepath.Join(tmp, "work")
	if err := ca.Extract(work); err != nil {
		t.Fatal(err)
	}
	got := readTree(t, work)
	for i, files := range gens {
		prefix := strings.Repeat("parent/", 2-i)
		for name, content := range files {
			if !bytes.Equal(got[prefix+name], content) {
				t.Errorf("%s%s differs", prefix, name)
			}
		}
	}
	if len(got) != 3+3+4 {
		t.Errorf("extracted %d files: %v", len(got), keys(got))
	}
	// A fourth generation built from the archive works too.
	g3 := filepath.Join(tmp, "gen3")
	if _, err := WriteCheckpoint(g3, makeEngineDir(t, engineFiles{"inventory.img": []byte("gen3")}), testConfig("ctr"), WriteOptions{Parent: arch}); err != nil {
		t.Fatal(err)
	}
	c3, err := OpenCheckpoint(g3)
	if err != nil {
		t.Fatal(err)
	}
	c3.Close()
	if len(c3.Manifest.Layers) != 8 {
		t.Errorf("gen3 has %d layers, want 8", len(c3.Manifest.Layers))
	}
}

func mustManifest(t *testing.T, dir string) ocispec.Manifest {
	_, m := layoutManifest(t, dir)
	return m
}

func TestPrecomputedDigests(t *testing.T) {
	pages := randBytes(30, 200000)
	engine := makeEngineDir(t, engineFiles{"pages-1.img": pages, "r.img": []byte("r")})
	good := filepath.Join(t.TempDir(), "good")
	_, err := WriteCheckpoint(good, engine, testConfig("c"), WriteOptions{Digests: map[string]digest.Digest{"pages-1.img": digest.FromBytes(pages)}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := OpenCheckpoint(good); err != nil {
		t.Fatalf("image with a right precomputed digest refused: %v", err)
	} else {
		c.Close()
	}
	// A wrong digest is trusted at write, and the image refused at open.
	bad := filepath.Join(t.TempDir(), "bad")
	wrong := digest.FromString("something else")
	if _, err := WriteCheckpoint(bad, engine, testConfig("c"), WriteOptions{Digests: map[string]digest.Digest{"pages-1.img": wrong}}); err != nil {
		t.Fatal(err)
	}
	var be *BlobError
	if _, err := OpenCheckpoint(bad); !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &be) || be.Digest != wrong || be.Actual != digest.FromBytes(pages) {
		t.Fatalf("got %v, want a digest mismatch naming %s", err, wrong)
	}
	if _, err := WriteCheckpoint(filepath.Join(t.TempDir(), "x"), engine, testConfig("c"), WriteOptions{Digests: map[string]digest.Digest{"pages-1.img": "sha256:nothex"}}); !errors.Is(err, ErrInvalidImage) {
		t.Errorf("malformed precomputed digest: got %v", err)
	}
}

func TestWriteWithSync(t *testing.T) {
	engine := makeEngineDir(t, engineFiles{"pages-1.img": randBytes(40, 100000), "r.img": []byte("r"), "d/x.img": []byte("x")})
	dst := filepath.Join(t.TempDir(), "ckpt")
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{Sync: true, ChunkSize: 4096 * 5}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	work := filepath.Join(t.TempDir(), "w")
	if err := c.Extract(work); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, work); len(got) != 3 || !bytes.Equal(got["d/x.img"], []byte("x")) {
		t.Errorf("extracted %v", keys(got))
	}
}

func TestIncrementalRefusesEngineParentDir(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "p")
	if _, err := WriteCheckpoint(parent, makeEngineDir(t, engineFiles{"r.img": []byte("r")}), testConfig("c"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	engine := makeEngineDir(t, engineFiles{"r.img": []byte("r2"), "parent/r.img": []byte("clash")})
	dst := filepath.Join(t.TempDir(), "child")
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{Parent: parent}); err == nil {
		t.Fatal("engine files under parent/ accepted in an incremental checkpoint")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused write left %s", dst)
	}
	// Without a parent, parent/ is an ordinary engine directory.
	if _, err := WriteCheckpoint(dst, engine, testConfig("c"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dst)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
