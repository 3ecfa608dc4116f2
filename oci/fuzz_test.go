package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"path"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// seedLayout returns the index, manifest and config blobs of a real image.
func seedLayout(f *testing.F) (index, manifest, config []byte) {
	f.Helper()
	dir := goodLayoutF(f)
	idx, m := layoutManifest(f, dir)
	ib, _ := json.Marshal(idx)
	mb, _ := json.Marshal(m)
	cb, err := readBlob(dir, m.Config)
	if err != nil {
		f.Fatal(err)
	}
	return ib, mb, cb
}

func goodLayoutF(f *testing.F) string {
	engine := makeEngineDir(f, engineFiles{"inventory.img": []byte("i"), "pages-1.img": randBytes(1, 10000), "pages-2.img": {}})
	dir := f.TempDir() + "/ckpt"
	if _, err := WriteCheckpoint(dir, engine, testConfig("fuzz"), WriteOptions{ChunkSize: 4096}); err != nil {
		f.Fatal(err)
	}
	return dir
}

func FuzzParseConfig(f *testing.F) {
	_, _, cb := seedLayout(f)
	f.Add(cb)
	f.Add([]byte(`{"formatRevision":1,"containerID":"c","created":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"formatRevision":99}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidImage) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if c.FormatRevision < 1 || c.FormatRevision > FormatRevision || c.ContainerID == "" || c.Created.IsZero() {
			t.Fatalf("accepted config %+v", c)
		}
		// What was accepted survives a round trip.
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseConfig(again); err != nil {
			t.Fatalf("re-encoded config refused: %v", err)
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	ib, _, _ := seedLayout(f)
	f.Add(ib)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseIndex(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidImage) && !errors.Is(err, ErrNotCheckpoint) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if checkDigest(info.manifest.Digest) != nil || info.container == "" || info.manifest.Size > maxManifestSize || info.manifest.Size < 0 {
			t.Fatalf("accepted %+v", info)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	_, mb, _ := seedLayout(f)
	f.Add(mb)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cryo.checkpoint.v1",` +
		`"config":{"mediaType":"application/vnd.cryo.checkpoint.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/vnd.cryo.checkpoint.state.v1.tar","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"io.cryo.checkpoint.path":"parent"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, p, err := parseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidImage) && !errors.Is(err, ErrNotCheckpoint) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		// Invariants of an accepted plan: every descriptor inside the
		// layout, every path clean, generations without gaps, pages
		// files contiguous and beside their generation's records.
		if p.states[0].dir != "." {
			t.Fatalf("first generation %q", p.states[0].dir)
		}
		gens := map[string]bool{}
		for k, s := range p.states {
			if s.dir != parentDirAt(k) {
				t.Fatalf("generation %d at %q", k, s.dir)
			}
			gens[s.dir] = true
		}
		for _, l := range append(m.Layers, m.Config) {
			if checkDescriptor(l) != nil {
				t.Fatalf("accepted descriptor %+v", l)
			}
		}
		for _, pf := range p.pages {
			if cleanRel(pf.path, false) != nil || !isPagesName(path.Base(pf.path)) || !gens[path.Dir(pf.path)] {
				t.Fatalf("accepted pages file %q", pf.path)
			}
			var off int64
			for _, c := range pf.chunks {
				if chunkOffset(c) != off {
					t.Fatalf("%s: chunk at %d, want %d", pf.path, chunkOffset(c), off)
				}
				off += c.Size
			}
			if off != pf.size {
				t.Fatalf("%s: size %d, chunks %d", pf.path, pf.size, off)
			}
		}
	})
}

func FuzzScanStateTar(f *testing.F) {
	var good bytes.Buffer
	if err := writeStateTarEntries(&good, map[string]string{"inventory.img": "x", "mm/mm-1.img": "yy"}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	for _, name := range []string{"../x", "/abs", "a/../../b", "a//b", "./a", "pages-1.img"} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: 1, Mode: 0o600})
		tw.Write([]byte("z"))
		tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"})
		tw.Close()
		f.Add(b.Bytes())
	}
	f.Add(sparseTar("inventory.img"))
	f.Fuzz(func(t *testing.T, b []byte) {
		set := pathSet{}
		// A pages file and a parent generation, as in a real image.
		if err := set.add("pages-1.img", kindFile, 0); err != nil {
			t.Fatal(err)
		}
		if err := set.add(ParentDir, kindGeneration, 1); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		err := scanStateTar(bytes.NewReader(b), int64(len(b)), set, ".", 0, func(e stateEntry, body io.Reader) error {
			if err := cleanRel(e.name, false); err != nil {
				t.Fatalf("unclean name accepted: %q", e.name)
			}
			if seen[e.name] && !e.isDir {
				t.Fatalf("duplicate accepted: %q", e.name)
			}
			if e.name == "pages-1.img" || e.name == ParentDir || len(e.name) > len(ParentDir) && e.name[:len(ParentDir)+1] == ParentDir+"/" {
				t.Fatalf("entry %q shadows a pages file or a parent generation", e.name)
			}
			if e.size < 0 || e.size > maxStateEntrySize {
				t.Fatalf("size %d accepted", e.size)
			}
			seen[e.name] = true
			_, err := io.Copy(io.Discard, body)
			return err
		})
		if err != nil && !errors.Is(err, ErrUnsafeEntry) && !errors.Is(err, ErrInvalidImage) {
			t.Fatalf("error outside the sentinels: %v", err)
		}
	})
}

func FuzzArchiveEntry(f *testing.F) {
	f.Add("oci-layout", byte(tar.TypeReg))
	f.Add("./blobs/sha256/", byte(tar.TypeDir))
	f.Add("blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000", byte(tar.TypeReg))
	f.Add("blobs/sha256/../../x", byte(tar.TypeReg))
	f.Fuzz(func(t *testing.T, name string, typ byte) {
		clean, _, ok := archiveEntry(name, typ)
		if !ok {
			return
		}
		if cleanRel(clean, false) != nil {
			t.Fatalf("archive entry %q accepted as %q", name, clean)
		}
		switch clean {
		case ocispec.ImageLayoutFile, ocispec.ImageIndexFile, ocispec.ImageBlobsDir, blobsSHA256:
		default:
			if path.Dir(clean) != blobsSHA256 || len(path.Base(clean)) != 64 {
				t.Fatalf("archive entry %q accepted as %q", name, clean)
			}
		}
	})
}

// writeStateTarEntries writes a state tar of in-memory files.
func writeStateTarEntries(w io.Writer, files map[string]string) error {
	tw := tar.NewWriter(w)
	for _, name := range keys(files) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(files[name])), Mode: 0o600}); err != nil {
			return err
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			return err
		}
	}
	return tw.Close()
}
