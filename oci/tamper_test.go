package oci

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// goodLayout writes one image with every blob kind and returns its path.
func goodLayout(t *testing.T) string {
	t.Helper()
	engine := makeEngineDir(t, engineFiles{
		"inventory.img": []byte("inv"), "core-1.img": randBytes(5, 2000),
		"pages-1.img": randBytes(6, 64<<10), "pages-2.img": randBytes(7, 5000),
	})
	rootfs := filepath.Join(t.TempDir(), "diff.tar")
	if err := os.WriteFile(rootfs, makeTar(t, map[string]string{"etc/motd": "hi"}), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "good")
	if _, err := WriteCheckpoint(dir, engine, testConfig("victim"), WriteOptions{RootfsDiff: rootfs}); err != nil {
		t.Fatal(err)
	}
	if c, err := OpenCheckpoint(dir); err != nil {
		t.Fatalf("untampered image refused: %v", err)
	} else {
		c.Close()
	}
	return dir
}

// stateTar builds a state layer from raw headers (bodies for regular files).
func stateTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func reg(name, body string) tarEntry {
	return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(body))}, body}
}

// replaceState swaps the image's own state layer for the given tar.
func replaceState(t *testing.T, dir string, b []byte) {
	t.Helper()
	d := putBlob(t, dir, b)
	rewriteManifest(t, dir, func(m *ocispec.Manifest) {
		for i, l := range m.Layers {
			if l.MediaType == MediaTypeState {
				m.Layers[i].Digest, m.Layers[i].Size = d, int64(len(b))
			}
		}
	})
}

func TestTamperedImagesAreRefused(t *testing.T) {
	good := goodLayout(t)
	_, gm := layoutManifest(t, good)
	idx0, _ := layoutManifest(t, good)
	pages := layerOf(t, gm, MediaTypePages)
	state := layerOf(t, gm, MediaTypeState)
	rootfs := layerOf(t, gm, MediaTypeRootfsDiff)

	cases := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   error
		blob   digest.Digest // the blob the error must name
		// archivable: WriteArchive accepts the damaged layout, so the
		// archive path is checked too.
		archivable bool
	}{
		{"flip pages byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, pages.Digest), 4097) }, ErrDigestMismatch, pages.Digest, true},
		{"flip last pages byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, pages.Digest), -1) }, ErrDigestMismatch, pages.Digest, true},
		{"flip state byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, state.Digest), 600) }, ErrDigestMismatch, state.Digest, true},
		{"flip rootfs byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, rootfs.Digest), 520) }, ErrDigestMismatch, rootfs.Digest, true},
		{"flip config byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, gm.Config.Digest), 10) }, ErrDigestMismatch, gm.Config.Digest, false},
		{"flip manifest byte", func(t *testing.T, d string) { flipByte(t, blobPath(d, idx0.Manifests[0].Digest), 30) }, ErrDigestMismatch, idx0.Manifests[0].Digest, false},
		{"truncate pages", func(t *testing.T, d string) {
			if err := os.Truncate(blobPath(d, pages.Digest), pages.Size-1); err != nil {
				t.Fatal(err)
			}
		}, ErrSizeMismatch, pages.Digest, false},
		{"pages grew", func(t *testing.T, d string) {
			f, err := os.OpenFile(blobPath(d, pages.Digest), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte{0})
			f.Close()
		}, ErrSizeMismatch, pages.Digest, false},
		{"wrong size in manifest", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Size++ })
		}, ErrSizeMismatch, gm.Layers[1].Digest, false},
		{"wrong size in index", func(t *testing.T, d string) {
			idx, _ := layoutManifest(t, d)
			idx.Manifests[0].Size--
			writeIndex(t, d, idx)
		}, ErrSizeMismatch, idx0.Manifests[0].Digest, false},
		{"missing pages blob", func(t *testing.T, d string) { os.Remove(blobPath(d, pages.Digest)) }, ErrBlobMissing, pages.Digest, false},
		{"missing state blob", func(t *testing.T, d string) { os.Remove(blobPath(d, state.Digest)) }, ErrBlobMissing, state.Digest, false},
		{"missing config", func(t *testing.T, d string) { os.Remove(blobPath(d, gm.Config.Digest)) }, ErrBlobMissing, gm.Config.Digest, false},
		{"blob is a symlink out", func(t *testing.T, d string) {
			p := blobPath(d, pages.Digest)
			os.Remove(p)
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}, ErrInvalidImage, "", false},
		{"blobs dir is a symlink", func(t *testing.T, d string) {
			real := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.Rename(filepath.Join(d, "blobs", "sha256"), real); err != nil {
				t.Fatal(err)
			}
			os.Symlink(real, filepath.Join(d, "blobs", "sha256"))
		}, ErrInvalidImage, "", false},
		{"layer digest escapes", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Digest = "sha256:../../../../etc/passwd" })
		}, ErrInvalidImage, "", false},
		{"layer with urls", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].URLs = []string{"https://example.com/x"} })
		}, ErrInvalidImage, "", false},
		{"sha512 digest", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Digest = digest.Digest("sha512:" + strings.Repeat("ab", 64)) })
		}, ErrUnsupported, "", false},
		{"pages path escapes", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationPath] = "../pages-1.img" })
		}, ErrInvalidImage, "", false},
		{"pages path absolute", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationPath] = "/tmp/pages-1.img" })
		}, ErrInvalidImage, "", false},
		{"pages path not a pages file", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationPath] = "inventory.img" })
		}, ErrInvalidImage, "", false},
		{"state path escapes", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[0].Annotations[AnnotationPath] = ".." })
		}, ErrInvalidImage, "", false},
		{"pages chunk gap", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationOffset] = "4096" })
		}, ErrInvalidImage, "", false},
		{"pages offset not decimal", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationOffset] = "+0" })
		}, ErrInvalidImage, "", false},
		{"two layers for one file", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) {
				m.Layers[2].Annotations[AnnotationPath] = m.Layers[1].Annotations[AnnotationPath]
			})
		}, ErrInvalidImage, "", false},
		{"no state layer", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers = m.Layers[1:] })
		}, ErrInvalidImage, "", false},
		{"unknown layer type", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[3].MediaType = "application/x-evil" })
		}, ErrUnsupported, "", false},
		{"zstd pages", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Layers[1].MediaType = MediaTypePagesZstd })
		}, ErrUnsupported, "", false},
		{"not a checkpoint artifact", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.ArtifactType = "" })
		}, ErrNotCheckpoint, "", false},
		{"container image config", func(t *testing.T, d string) {
			rewriteManifest(t, d, func(m *ocispec.Manifest) { m.Config.MediaType = ocispec.MediaTypeImageConfig })
		}, ErrNotCheckpoint, "", false},
		{"two manifests", func(t *testing.T, d string) {
			idx, _ := layoutManifest(t, d)
			idx.Manifests = append(idx.Manifests, idx.Manifests[0])
			writeIndex(t, d, idx)
		}, ErrNotCheckpoint, "", false},
		{"index without annotations", func(t *testing.T, d string) {
			idx, _ := layoutManifest(t, d)
			idx.Manifests[0].Annotations = nil
			writeIndex(t, d, idx)
		}, ErrNotCheckpoint, "", false},
		{"index disagrees with config", func(t *testing.T, d string) {
			idx, _ := layoutManifest(t, d)
			idx.Manifests[0].Annotations[AnnotationContainer] = "someone-else"
			writeIndex(t, d, idx)
		}, ErrInvalidImage, "", false},
		{"index not json", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, "index.json"), []byte("{\"schemaVersion\":2,"), 0o600)
		}, ErrInvalidImage, "", false},
		{"index trailing data", func(t *testing.T, d string) {
			b, _ := os.ReadFile(filepath.Join(d, "index.json"))
			os.WriteFile(filepath.Join(d, "index.json"), append(b, []byte("{}")...), 0o600)
		}, ErrInvalidImage, "", false},
		{"no oci-layout", func(t *testing.T, d string) { os.Remove(filepath.Join(d, "oci-layout")) }, ErrNotCheckpoint, "", false},
		{"future layout version", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, "oci-layout"), []byte(`{"imageLayoutVersion":"9.0.0"}`), 0o600)
		}, ErrUnsupported, "", false},
		{"future revision", func(t *testing.T, d string) {
			rewriteConfig(t, d, func(c map[string]any) { c["formatRevision"] = FormatRevision + 1 })
		}, ErrUnsupported, "", false},
		{"config without container", func(t *testing.T, d string) {
			rewriteConfig(t, d, func(c map[string]any) { delete(c, "containerID") })
		}, ErrInvalidImage, "", false},
		{"state tar ../ entry", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("inventory.img", "x"), reg("../../escape", "evil")))
		}, ErrUnsafeEntry, "", true},
		{"state tar dir/../ entry", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("a/../../escape", "evil")))
		}, ErrUnsafeEntry, "", true},
		{"state tar absolute entry", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("/etc/cron.d/evil", "evil")))
		}, ErrUnsafeEntry, "", true},
		{"state tar symlink", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, tarEntry{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, reg("link/passwd", "evil")))
		}, ErrUnsafeEntry, "", true},
		{"state tar hardlink", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, tarEntry{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}))
		}, ErrUnsafeEntry, "", true},
		{"state tar device", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, tarEntry{hdr: tar.Header{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o600}}))
		}, ErrUnsafeEntry, "", true},
		{"state tar fifo", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, tarEntry{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o600}}))
		}, ErrUnsafeEntry, "", true},
		{"state tar duplicate", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("core-1.img", "a"), reg("core-1.img", "b")))
		}, ErrUnsafeEntry, "", true},
		{"state tar file used as dir", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("a", "a"), reg("a/b", "b")))
		}, ErrUnsafeEntry, "", true},
		{"state tar shadows a pages file", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("pages-1.img", "forged pages")))
		}, ErrUnsafeEntry, "", true},
		{"state tar writes into parent records", func(t *testing.T, d string) {
			replaceState(t, d, stateTar(t, reg("parent/inventory.img", "forged")))
			// a fake parent generation so that "parent" is reserved
			st := stateTar(t, reg("inventory.img", "p"))
			sd := putBlob(t, d, st)
			rewriteManifest(t, d, func(m *ocispec.Manifest) {
				m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: MediaTypeState, Digest: sd, Size: int64(len(st)),
					Annotations: map[string]string{AnnotationPath: "parent"}})
			})
		}, ErrUnsafeEntry, "", true},
		{"state tar sparse entry", func(t *testing.T, d string) {
			replaceState(t, d, sparseTar("inventory.img"))
		}, ErrUnsafeEntry, "", true},
		{"state tar oversized entry", func(t *testing.T, d string) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: maxStateEntrySize + 1, Mode: 0o600})
			replaceState(t, d, buf.Bytes()) // header only: the scan must stop at it
		}, ErrUnsafeEntry, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t, good)
			tc.tamper(t, dir)
			c, err := OpenCheckpoint(dir)
			if err == nil {
				c.Close()
				t.Fatalf("tampered image opened, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
			if tc.blob != "" {
				var be *BlobError
				if !errors.As(err, &be) || be.Digest != tc.blob {
					t.Fatalf("error %v does not name blob %s", err, tc.blob)
				}
				if errors.Is(err, ErrDigestMismatch) && (be.Actual == "" || be.Actual == be.Digest || !strings.Contains(err.Error(), be.Actual.String())) {
					t.Errorf("digest mismatch error lacks the actual digest: %v", err)
				}
			}
			// The same image as an archive is refused the same way. Only
			// damage that WriteArchive does not see (it checks structure
			// and sizes, not digests) can be archived.
			if !tc.archivable {
				return
			}
			arch := filepath.Join(t.TempDir(), "x.tar")
			if err := WriteArchive(dir, arch); err != nil {
				t.Fatal(err)
			}
			if c, err := OpenCheckpoint(arch); !errors.Is(err, tc.want) {
				if err == nil {
					c.Close()
				}
				t.Errorf("archive: got %v, want %v", err, tc.want)
			}
		})
	}
}

// archiveOf builds a checkpoint archive from raw entries.
func archiveOf(t *testing.T, good string, extra ...tarEntry) string {
	t.Helper()
	var entries []tarEntry
	add := func(name string) {
		b, err := os.ReadFile(filepath.Join(good, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, reg(name, string(b)))
	}
	add("oci-layout")
	add("index.json")
	blobs, _ := os.ReadDir(filepath.Join(good, "blobs", "sha256"))
	for _, b := range blobs {
		add("blobs/sha256/" + b.Name())
	}
	entries = append(entries, extra...)
	p := filepath.Join(t.TempDir(), "evil.tar")
	if err := os.WriteFile(p, stateTar(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostileArchivesAreRefused(t *testing.T) {
	good := goodLayout(t)
	if c, err := OpenCheckpoint(archiveOf(t, good)); err != nil {
		t.Fatalf("hand-built archive of a good layout refused: %v", err)
	} else {
		c.Close()
	}
	outside := filepath.Join(t.TempDir(), "target")
	cases := map[string]tarEntry{
		"dotdot":           reg("../../escape", "evil"),
		"absolute":         reg(outside, "evil"),
		"symlink":          {hdr: tar.Header{Name: "blobs/sha256/link", Typeflag: tar.TypeSymlink, Linkname: outside}},
		"hardlink":         {hdr: tar.Header{Name: "blobs/sha256/" + strings.Repeat("a", 64), Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}},
		"device":           {hdr: tar.Header{Name: "dev", Typeflag: tar.TypeBlock, Mode: 0o600}},
		"stray file":       reg("notes.txt", "x"),
		"bad blob name":    reg("blobs/sha256/xyz", "x"),
		"nested blob":      reg("blobs/sha256/"+strings.Repeat("b", 64)+"/x", "x"),
		"duplicate index":  reg("index.json", "{}"),
		"other algorithm":  reg("blobs/sha512/"+strings.Repeat("c", 128), "x"),
		"oversized layout": {hdr: tar.Header{Name: "./oci-layout", Typeflag: tar.TypeReg, Size: 5000, Mode: 0o600}, body: strings.Repeat(" ", 5000)},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			p := archiveOf(t, good, e)
			c, err := OpenCheckpoint(p)
			if err == nil {
				c.Close()
				t.Fatal("hostile archive opened")
			}
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("got %v, want ErrUnsafeEntry", err)
			}
			if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("archive wrote outside: %v", err)
			}
		})
	}
	// A sparse blob: 512 MiB of holes in a few blocks.
	t.Run("sparse blob", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "sparse.tar")
		if err := os.WriteFile(p, sparseTar("blobs/sha256/"+strings.Repeat("d", 64)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenCheckpoint(p); !errors.Is(err, ErrUnsafeEntry) {
			t.Fatalf("got %v, want ErrUnsafeEntry", err)
		}
	})
	// Not a tar at all.
	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, randBytes(1, 3000), 0o600)
	if _, err := OpenCheckpoint(junk); !errors.Is(err, ErrNotCheckpoint) {
		t.Errorf("junk archive: got %v, want ErrNotCheckpoint", err)
	}
}

// TestExtractRefusesBlobChangedAfterOpen swaps a verified blob between
// OpenCheckpoint and Extract.
func TestExtractRefusesBlobChangedAfterOpen(t *testing.T) {
	for _, kind := range []string{MediaTypePages, MediaTypeState} {
		t.Run(kind, func(t *testing.T) {
			dir := copyTree(t, goodLayout(t))
			c, err := OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			l := layerOf(t, c.Manifest, kind)
			flipByte(t, blobPath(dir, l.Digest), 700) // a new inode
			work := filepath.Join(t.TempDir(), "work")
			if err := c.Extract(work); !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("got %v, want ErrDigestMismatch", err)
			}
			if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed extract left %s", work)
			}
		})
	}
}

// sparseTar is a tar whose one entry is a PAX GNU sparse 1.0 file of 512
// MiB of holes stored in one 512-byte block: a decompression bomb for a
// naive extractor. archive/tar does not write sparse files, so the blocks
// are built by hand.
func sparseTar(name string) []byte {
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", name) + rec("GNU.sparse.realsize", "536870912")
	body := "1\n0\n0\n"
	var out []byte
	out = append(out, ustarBlock("PaxHeader", 'x', len(pax))...)
	out = append(out, padBlock(pax)...)
	out = append(out, ustarBlock("GNUSparseFile.0/"+name, '0', 512)...)
	out = append(out, padBlock(body)...)
	return append(out, make([]byte, 1024)...)
}

func padBlock(s string) []byte {
	b := []byte(s)
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

func ustarBlock(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000600\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	var sum int
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}
