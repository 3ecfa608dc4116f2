package oci

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Checkpoint is an opened, verified checkpoint image.
type Checkpoint struct {
	// Path is the layout directory: the one opened, or for an archive a
	// private temporary directory that Close removes.
	Path string
	// Source is the path given to OpenCheckpoint.
	Source string
	// Name, ContainerID and Created come from index.json (and agree with
	// the config).
	Name        string
	ContainerID string
	Created     time.Time
	// ManifestDescriptor is the manifest's entry in index.json.
	ManifestDescriptor ocispec.Descriptor
	// Manifest and Config are the decoded manifest and config blobs.
	Manifest ocispec.Manifest
	Config   Config
	// Files lists what Extract lays out, sorted by path: the records of
	// every state layer and the pages files.
	Files []File

	plan     *plan
	verified map[digest.Digest]os.FileInfo
	// fullyVerified is set when every blob was hashed (Extract needs it).
	fullyVerified bool
	temp          string
}

// File is a file or directory that Extract creates.
type File struct {
	Path  string `json:"path"` // slash-separated, relative to the extraction directory
	Size  int64  `json:"size"`
	Dir   bool   `json:"dir,omitempty"`
	Pages bool   `json:"pages,omitempty"` // a pages file (made of pages layers)
}

// OpenCheckpoint opens the checkpoint image at path, an OCI layout directory
// or a .tar archive of one, and verifies it entirely before returning:
// oci-layout, index.json, manifest and config are parsed strictly, EVERY
// blob is checked against its descriptor's size and digest (a *BlobError
// naming the blob, the expected and the actual digest, which unwraps to
// ErrDigestMismatch, ErrSizeMismatch or ErrBlobMissing), and each state
// layer is scanned for path tricks (ErrUnsafeEntry). An archive is unpacked
// into a private temporary directory first, trusting none of its paths.
// Close the Checkpoint when done.
func OpenCheckpoint(p string) (*Checkpoint, error) {
	return openCheckpoint(p, openOptions{})
}

// OpenOptions tune OpenCheckpointWith.
type OpenOptions struct {
	// Cache, when set (and the caller is root), lets a blob that it records
	// as verified, whose file is exactly as recorded, count as verified
	// without being hashed, and records the blobs hashed (see VerifyCache).
	// Not used for an archive, which is unpacked into fresh files.
	Cache *VerifyCache
	// Full hashes every blob whatever Cache holds (and records them there).
	Full bool
}

// OpenCheckpointWith is OpenCheckpoint with options: with none, the same.
func OpenCheckpointWith(p string, opts OpenOptions) (*Checkpoint, error) {
	return openCheckpoint(p, openOptions{cache: opts.Cache, full: opts.Full})
}

type openOptions struct {
	// cache is the verified-blob cache (nil: hash everything); with full,
	// only recorded into.
	cache *VerifyCache
	full  bool
	// structureOnly parses and checks sizes but does not hash the layers
	// nor scan the state layers (a parent being linked into a child: the
	// child is verified when opened).
	structureOnly bool
	// bulkUnhashed hashes the state layers (and scans them) but only
	// checks the sizes of pages and rootfs layers (inspect, list).
	bulkUnhashed bool
}

func openCheckpoint(p string, o openOptions) (_ *Checkpoint, err error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	c := &Checkpoint{Path: p, Source: p}
	switch {
	case fi.IsDir():
	case fi.Mode().IsRegular():
		if c.temp, err = unpackArchive(p); err != nil {
			return nil, fmt.Errorf("open checkpoint %s: %w", p, err)
		}
		c.Path = c.temp
	default:
		return nil, fmt.Errorf("open checkpoint %s: %w: neither a directory nor an archive", p, ErrNotCheckpoint)
	}
	defer func() {
		if err != nil {
			c.Close()
			err = fmt.Errorf("open checkpoint %s: %w", p, err)
		}
	}()
	if err := checkLayoutDirs(c.Path); err != nil {
		return nil, err
	}
	ib, err := readSmallFile(filepath.Join(c.Path, ocispec.ImageIndexFile), maxIndexSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no %s", ErrNotCheckpoint, ocispec.ImageIndexFile)
		}
		return nil, err
	}
	idx, err := parseIndex(ib)
	if err != nil {
		return nil, err
	}
	c.Name, c.ContainerID, c.Created, c.ManifestDescriptor = idx.name, idx.container, idx.created, idx.manifest
	mb, err := readBlob(c.Path, idx.manifest)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, pl, err := parseManifest(mb)
	if err != nil {
		return nil, err
	}
	c.Manifest, c.plan = *m, pl
	cb, err := readBlob(c.Path, m.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := parseConfig(cb)
	if err != nil {
		return nil, err
	}
	c.Config = *cfg
	if cfg.ContainerID != idx.container || cfg.Name != idx.name || !cfg.Created.Equal(idx.created) {
		return nil, fmt.Errorf("%w: index.json annotations (%q, %q, %s) disagree with the config (%q, %q, %s)",
			ErrInvalidImage, idx.name, idx.container, idx.created, cfg.Name, cfg.ContainerID, cfg.Created)
	}
	if o.structureOnly {
		for _, l := range m.Layers {
			f, _, err := openBlob(c.Path, l)
			if err != nil {
				return nil, err
			}
			f.Close()
		}
		return c, nil
	}
	toHash := m.Layers
	if o.bulkUnhashed {
		toHash = nil
		for _, l := range m.Layers {
			if l.MediaType == MediaTypeState {
				toHash = append(toHash, l)
				continue
			}
			f, _, err := openBlob(c.Path, l)
			if err != nil {
				return nil, err
			}
			f.Close()
		}
	}
	cache := o.cache
	if c.temp != "" {
		cache = nil
	}
	if c.verified, err = verifyBlobs(c.Path, toHash, cache, o.full); err != nil {
		return nil, err
	}
	c.fullyVerified = !o.bulkUnhashed
	if err := c.walk(func(f File, _ int, _ io.Reader) error {
		c.Files = append(c.Files, f)
		return nil
	}, nil); err != nil {
		return nil, err
	}
	sortFiles(c.Files)
	return c, nil
}

// walk visits what the plan lays out: the generation directories, the
// pages files, then every entry of every state layer (with its bytes), all
// checked against one path set. Each state layer is hashed while read and
// compared with its digest at the end (it may have changed since Open).
func (c *Checkpoint) walk(fn func(f File, gen int, body io.Reader) error, pagesFn func(pf pagesFile, gen int) error) error {
	set := pathSet{}
	for k := 1; k < len(c.plan.states); k++ {
		dir := parentDirAt(k)
		if err := set.add(dir, kindGeneration, k); err != nil {
			return err
		}
		if err := fn(File{Path: dir, Dir: true}, k, nil); err != nil {
			return err
		}
	}
	for _, pf := range c.plan.pages {
		gen := strings.Count(pf.path, ParentDir+"/")
		if err := set.add(pf.path, kindFile, gen); err != nil {
			return err
		}
		if pagesFn != nil {
			if err := pagesFn(pf, gen); err != nil {
				return err
			}
		}
		if err := fn(File{Path: pf.path, Size: pf.size, Pages: true}, gen, nil); err != nil {
			return err
		}
	}
	for gen, st := range c.plan.states {
		if err := c.walkState(set, st, gen, fn); err != nil {
			return err
		}
	}
	return nil
}

func (c *Checkpoint) walkState(set pathSet, st stateLayer, gen int, fn func(f File, gen int, body io.Reader) error) error {
	f, err := c.openVerified(st.desc)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	tee := io.TeeReader(f, h)
	err = scanStateTar(tee, st.desc.Size, set, st.dir, gen, func(e stateEntry, body io.Reader) error {
		return fn(File{Path: path.Join(st.dir, e.name), Size: e.size, Dir: e.isDir}, gen, body)
	})
	if err != nil {
		return fmt.Errorf("state layer %s: %w", st.desc.Digest, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return err
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != st.desc.Digest {
		return &BlobError{Digest: st.desc.Digest, MediaType: st.desc.MediaType, Actual: got, Size: st.desc.Size, Err: ErrDigestMismatch}
	}
	return nil
}

// openVerified opens a blob that Open verified, refusing one that was
// replaced or modified since (other inode, size or modification time).
func (c *Checkpoint) openVerified(d ocispec.Descriptor) (*os.File, error) {
	f, fi, err := openBlob(c.Path, d)
	if err != nil {
		return nil, err
	}
	if err := c.sameAsVerified(d, fi); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (c *Checkpoint) sameAsVerified(d ocispec.Descriptor, fi os.FileInfo) error {
	v, ok := c.verified[d.Digest]
	if !ok || !os.SameFile(v, fi) || v.Size() != fi.Size() || !v.ModTime().Equal(fi.ModTime()) {
		return &BlobError{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Err: fmt.Errorf("%w: changed since it was verified", ErrDigestMismatch)}
	}
	return nil
}

// Extract lays the engine files out in workDir (created 0700; it must not
// exist or be empty, else ErrExists): the image's own records and pages
// files with the names the engine gave them, and for an incremental image
// the parent's under ParentDir (recursively). Pages files made of one layer
// are hardlinks to the verified blobs (copies across filesystems); pages
// files of several layers are assembled by copy. Treat them as read-only:
// they are the image's blobs. Every state layer is hashed again while
// unpacked; on any error workDir is left empty (or removed if created).
func (c *Checkpoint) Extract(workDir string) error {
	_, err := c.extract(workDir, false)
	return err
}

// ExtractOpen is Extract, except that the pages files made of one whole
// blob are not linked into workDir: they are returned open instead
// (read-only, the very files verified), by their slash-separated path
// relative to workDir, for the caller to hand to the engine and to close.
// Nothing then touches the blobs' inodes: a hardlink, and its removal once
// the caller is done, would change their ctime and so the identity that a
// VerifyCache holds for them.
func (c *Checkpoint) ExtractOpen(workDir string) (map[string]*os.File, error) {
	return c.extract(workDir, true)
}

func (c *Checkpoint) extract(workDir string, open bool) (opened map[string]*os.File, err error) {
	if !c.fullyVerified {
		return nil, fmt.Errorf("extract %s: checkpoint not verified", c.Source)
	}
	created, err := claimDir(workDir)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", c.Source, err)
	}
	if open {
		opened = map[string]*os.File{}
	}
	defer func() {
		if err != nil {
			for _, f := range opened {
				f.Close()
			}
			opened = nil
			cleanupDir(workDir, created)
			err = fmt.Errorf("extract %s into %s: %w", c.Source, workDir, err)
		}
	}()
	var pending []pagesFile
	err = c.walk(func(f File, _ int, body io.Reader) error {
		switch {
		case f.Pages:
			return nil
		case body == nil && f.Dir: // generation directory
			return os.Mkdir(filepath.Join(workDir, filepath.FromSlash(f.Path)), 0o700)
		}
		dir, name := path.Split(f.Path)
		return extractStateEntry(workDir, dir, stateEntry{name: name, isDir: f.Dir, size: f.Size}, body)
	}, func(pf pagesFile, _ int) error {
		pending = append(pending, pf)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return opened, c.extractPages(workDir, pending, opened)
}

// extractPages lays out the pages files, chunks in parallel; with opened
// not nil, whole-blob ones are opened into it instead.
func (c *Checkpoint) extractPages(workDir string, files []pagesFile, opened map[string]*os.File) error {
	type piece struct {
		target string
		desc   ocispec.Descriptor
		off    int64
		whole  bool
	}
	var pieces []piece
	for _, pf := range files {
		target := filepath.Join(workDir, filepath.FromSlash(pf.path))
		if len(pf.chunks) == 1 && opened != nil {
			f, err := c.openVerified(pf.chunks[0])
			if err != nil {
				return err
			}
			opened[pf.path] = f
			continue
		}
		if len(pf.chunks) == 1 || len(pf.chunks) == 0 {
			var d ocispec.Descriptor
			if len(pf.chunks) == 1 {
				d = pf.chunks[0]
			}
			pieces = append(pieces, piece{target: target, desc: d, whole: true})
			continue
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		err = f.Truncate(pf.size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		for _, d := range pf.chunks {
			pieces = append(pieces, piece{target: target, desc: d, off: chunkOffset(d)})
		}
	}
	return parallel(len(pieces), func(i int, _ []byte, _ *atomic.Bool) error {
		p := pieces[i]
		if p.whole {
			return c.linkBlob(p.desc, p.target)
		}
		return c.copyBlobAt(p.desc, p.target, p.off)
	})
}

// linkBlob makes target a hardlink to the verified blob d, or a copy.
func (c *Checkpoint) linkBlob(d ocispec.Descriptor, target string) error {
	if err := os.Link(blobPath(c.Path, d.Digest), target); err == nil {
		fi, err := os.Lstat(target)
		if err != nil {
			return err
		}
		return c.sameAsVerified(d, fi)
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	return c.copyBlobAt(d, target, 0)
}

// copyBlobAt copies the verified blob d into target at off (in-kernel copy
// where the platform has one).
func (c *Checkpoint) copyBlobAt(d ocispec.Descriptor, target string, off int64) error {
	src, err := c.openVerified(d)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err = dst.Seek(off, io.SeekStart); err == nil {
		var n int64
		n, err = io.Copy(dst, io.LimitReader(src, d.Size))
		if err == nil && n != d.Size {
			err = io.ErrUnexpectedEOF
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy blob %s: %w", d.Digest, err)
	}
	return nil
}

// RootfsDiff returns the path of the verified rootfs diff blob (a tar of the
// container's rootfs changes), if the image has one.
func (c *Checkpoint) RootfsDiff() (string, bool) {
	if c.plan == nil || c.plan.rootfs == nil {
		return "", false
	}
	return blobPath(c.Path, c.plan.rootfs.Digest), true
}

// Close releases the checkpoint: removes the temporary layout of an archive.
func (c *Checkpoint) Close() error {
	if c.temp == "" {
		return nil
	}
	err := os.RemoveAll(c.temp)
	c.temp = ""
	return err
}

// ancestry returns the descriptors of the manifest and config of this
// checkpoint and of each ancestor its layout holds.
func (c *Checkpoint) ancestry() []ocispec.Descriptor {
	out := []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageManifest, Digest: c.ManifestDescriptor.Digest, Size: c.ManifestDescriptor.Size},
		c.Manifest.Config,
	}
	parent := c.Config.Parent
	for range maxLayers {
		if parent == "" {
			break
		}
		fi, err := os.Lstat(blobPath(c.Path, parent))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxManifestSize {
			break
		}
		md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: parent, Size: fi.Size()}
		mb, err := readBlob(c.Path, md)
		if err != nil {
			break
		}
		m, _, err := parseManifest(mb)
		if err != nil {
			break
		}
		cb, err := readBlob(c.Path, m.Config)
		if err != nil {
			break
		}
		cfg, err := parseConfig(cb)
		if err != nil {
			break
		}
		out = append(out, md, m.Config)
		parent = cfg.Parent
	}
	return out
}

func sortFiles(files []File) {
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
}
