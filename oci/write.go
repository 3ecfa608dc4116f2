package oci

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriteOptions tune WriteCheckpoint.
type WriteOptions struct {
	// Name is the checkpoint's name (AnnotationName); default Config.Name,
	// then the container id.
	Name string
	// Parent is the path of the parent checkpoint (layout or archive) of an
	// incremental checkpoint. The new image's manifest lists the parent's
	// state and pages layers (under ParentDir, see AnnotationPath) plus its
	// own; the parent's blobs are hardlinked (or copied) into the new layout
	// so that it stands alone, and Config.Parent names the parent manifest.
	Parent string
	// RootfsDiff is the path of a tar of the container's rootfs changes,
	// stored as a MediaTypeRootfsDiff layer (hardlinked when possible).
	RootfsDiff string
	// ChunkSize, when positive, splits pages files larger than it into
	// layers of this size. By default (0) each pages file is one layer,
	// hardlinked: no copy at write nor at Extract, but a blob hashes on one
	// core only (sha256 is sequential), at write and at every open. Chunks
	// hash on every core, at the price of one copy of the file at write and
	// at Extract. An engine that writes several bounded pages files gets
	// both (see the package doc).
	ChunkSize int64
	// Digests are the digests of engine files (by name relative to the
	// engine directory, e.g. "pages-1.img") that the engine computed while
	// writing them: such a file is hardlinked and not hashed again
	// (copied files are hashed anyway). A wrong digest does not make a
	// wrong restore: OpenCheckpoint verifies every blob and refuses it.
	Digests map[string]digest.Digest
	// Sync flushes every blob and directory to stable storage before
	// index.json is committed.
	Sync bool
	// Owner, when set, is given the image's files and directories (like a
	// statefile belongs to whoever checkpointed).
	Owner *Owner
	// MovePages moves the engine's pages files into the layout (rename)
	// instead of hardlinking them: the engine directory loses them, and
	// the caller's removal of it later leaves the blobs' inodes alone (an
	// unlink changes the ctime a VerifyCache entry holds).
	MovePages bool
	// Cache, when set (and the caller is root), records every layer blob
	// written, once complete, as verified (see VerifyCache): the digests
	// were computed over the bytes written, here or, for Digests, by the
	// engine. A restore on this host then need not hash them again.
	Cache *VerifyCache
}

// Owner is a user and group id.
type Owner struct {
	UID, GID int
}

// WriteResult describes a written checkpoint.
type WriteResult struct {
	Path     string             // the layout directory
	Manifest ocispec.Descriptor // as listed in index.json
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	Size     int64 // bytes of all blobs
}

// WriteCheckpoint makes the OCI layout dst from an engine image directory
// and the checkpoint's config:
//
//   - every top-level pages-*.img file becomes a MediaTypePages layer
//     (hardlinked into blobs/sha256 when on the same filesystem, else
//     copied; split into chunks above a positive ChunkSize), annotated
//     with its name;
//   - every other file goes, in a deterministic tar (sorted, owner 0, times
//     at the epoch), into the MediaTypeState layer;
//   - then the rootfs diff layer, the config, the manifest, oci-layout, and
//     last index.json, the commit point: a crash leaves no index.json, so
//     no image that looks valid.
//
// dst must not exist or be an empty directory (else ErrExists). Directories
// are 0700 and files 0600. The engine directory stays as it was, but its
// pages files share their inode with the blobs: the caller removes the
// engine directory and never writes to it again. Blobs are hashed in
// parallel on all cores.
func WriteCheckpoint(dst, engineDir string, cfg *Config, opts WriteOptions) (res *WriteResult, err error) {
	if cfg == nil || cfg.ContainerID == "" {
		return nil, errors.New("write checkpoint: config with a container id required")
	}
	c := *cfg
	c.FormatRevision = FormatRevision
	if c.Created.IsZero() {
		c.Created = time.Now()
	}
	c.Created = c.Created.UTC()
	switch {
	case opts.Name != "":
		c.Name = opts.Name
	case c.Name == "":
		c.Name = c.ContainerID
	}
	if c.Host.Arch == "" {
		c.Host.Arch = runtime.GOARCH
	}

	pages, state, err := scanEngineDir(engineDir)
	if err != nil {
		return nil, fmt.Errorf("write checkpoint %s: %w", dst, err)
	}
	var parent *Checkpoint
	if opts.Parent != "" {
		parent, err = openCheckpoint(opts.Parent, openOptions{structureOnly: true})
		if err != nil {
			return nil, fmt.Errorf("write checkpoint %s: parent: %w", dst, err)
		}
		defer parent.Close()
		c.Parent = parent.ManifestDescriptor.Digest
		for _, e := range state {
			if e.rel == ParentDir || strings.HasPrefix(e.rel, ParentDir+"/") {
				return nil, fmt.Errorf("write checkpoint %s: engine file %s: %q is where the parent's files go", dst, e.rel, ParentDir)
			}
		}
	}

	created, err := claimDir(dst)
	if err != nil {
		return nil, fmt.Errorf("write checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			cleanupDir(dst, created)
			err = fmt.Errorf("write checkpoint %s: %w", dst, err)
		}
	}()
	w := &blobWriter{dir: filepath.Join(dst, ocispec.ImageBlobsDir, string(digest.SHA256)), sync: opts.Sync}
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Dir(w.dir), 0o700); err != nil {
		return nil, err
	}

	jobs, err := layerJobs(w, engineDir, pages, state, parent, opts)
	if err != nil {
		return nil, err
	}
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return compareInt(jobs[b].size, jobs[a].size) })
	if err := parallel(len(jobs), func(i int, buf []byte, stop *atomic.Bool) error {
		j := &jobs[order[i]]
		d, n, err := j.run(buf, stop)
		if err != nil {
			return err
		}
		j.desc.Digest, j.desc.Size = d, n
		return nil
	}); err != nil {
		return nil, err
	}
	res = &WriteResult{Path: dst}
	counted := map[digest.Digest]bool{}
	for _, j := range jobs {
		if j.layer {
			res.Layers = append(res.Layers, j.desc)
		}
		if !counted[j.desc.Digest] {
			counted[j.desc.Digest] = true
			res.Size += j.desc.Size
		}
	}
	// What a reader will check of the layers, checked before the commit.
	if _, err := planLayers(res.Layers); err != nil {
		return nil, err
	}

	cb, err := marshalJSON(&c)
	if err != nil {
		return nil, err
	}
	if res.Config, err = w.writeBytes(MediaTypeConfig, cb); err != nil {
		return nil, err
	}
	created3339 := c.Created.Format(time.RFC3339Nano)
	m := ocispec.Manifest{
		Versioned:    versioned2,
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       res.Config,
		Layers:       res.Layers,
		Annotations: map[string]string{
			AnnotationName:            c.Name,
			AnnotationContainer:       c.ContainerID,
			AnnotationCreated:         created3339,
			ocispec.AnnotationCreated: created3339,
		},
	}
	mb, err := marshalJSON(&m)
	if err != nil {
		return nil, err
	}
	if res.Manifest, err = w.writeBytes(ocispec.MediaTypeImageManifest, mb); err != nil {
		return nil, err
	}
	res.Manifest.ArtifactType = ArtifactType
	res.Manifest.Annotations = map[string]string{
		AnnotationName:            c.Name,
		AnnotationContainer:       c.ContainerID,
		AnnotationCreated:         created3339,
		ocispec.AnnotationRefName: c.Name,
	}
	res.Size += res.Config.Size + res.Manifest.Size

	lb, err := marshalJSON(&ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dst, ocispec.ImageLayoutFile, lb, opts.Sync); err != nil {
		return nil, err
	}
	if opts.Sync {
		if err := syncDir(w.dir); err != nil {
			return nil, err
		}
	}
	if opts.Owner != nil {
		if err := chownTree(dst, *opts.Owner); err != nil {
			return nil, err
		}
	}
	ib, err := marshalJSON(&ocispec.Index{
		Versioned: versioned2,
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{res.Manifest},
	})
	if err != nil {
		return nil, err
	}
	// The commit point.
	if err := writeFileAtomic(dst, ocispec.ImageIndexFile, ib, opts.Sync); err != nil {
		return nil, err
	}
	if opts.Owner != nil {
		if err := os.Lchown(filepath.Join(dst, ocispec.ImageIndexFile), opts.Owner.UID, opts.Owner.GID); err != nil {
			return nil, err
		}
	}
	// Recorded last, as the blobs stay from now on (an image given to
	// another owner is not recorded: see VerifyCache).
	for _, l := range res.Layers {
		opts.Cache.recordPath(dst, l.Digest)
	}
	return res, nil
}

// blobJob produces one blob.
type blobJob struct {
	desc  ocispec.Descriptor // media type and annotations; digest and size once run
	size  int64              // expected size, for scheduling
	layer bool               // listed in the manifest's layers
	run   func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error)
}

// layerJobs lists the blobs of the new image, in manifest order: the
// parent's layers (and its manifest and config chain, not layers), then the
// own state layer, own pages layers, and the rootfs diff.
func layerJobs(w *blobWriter, engineDir string, pages, state []engineEntry, parent *Checkpoint, opts WriteOptions) ([]blobJob, error) {
	var jobs []blobJob
	if parent != nil {
		seen := map[digest.Digest]bool{}
		importBlob := func(d ocispec.Descriptor, layer bool, annotations map[string]string) {
			nd := d
			nd.Annotations = annotations
			src := blobPath(parent.Path, d.Digest)
			j := blobJob{desc: nd, size: d.Size, layer: layer}
			if seen[d.Digest] {
				// Listed twice (same content): one import is enough.
				j.size = 0
				j.run = func([]byte, *atomic.Bool) (digest.Digest, int64, error) { return d.Digest, d.Size, nil }
			} else {
				j.run = func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
					return w.importFile(src, d, buf, stop, false, false)
				}
			}
			seen[d.Digest] = true
			jobs = append(jobs, j)
		}
		for _, l := range parent.Manifest.Layers {
			switch l.MediaType {
			case MediaTypeState:
				importBlob(l, true, map[string]string{AnnotationPath: path.Join(ParentDir, l.Annotations[AnnotationPath])})
			case MediaTypePages:
				a := map[string]string{AnnotationPath: path.Join(ParentDir, l.Annotations[AnnotationPath])}
				if off, ok := l.Annotations[AnnotationOffset]; ok {
					a[AnnotationOffset] = off
				}
				importBlob(l, true, a)
			}
		}
		// The parent's manifest and config, and its ancestors' as far as
		// its layout holds them, so that Config.Parent resolves.
		for _, d := range parent.ancestry() {
			importBlob(d, false, nil)
		}
	}

	var stateSize int64
	for _, e := range state {
		stateSize += e.size + 1024
	}
	jobs = append(jobs, blobJob{
		desc:  ocispec.Descriptor{MediaType: MediaTypeState, Annotations: map[string]string{AnnotationPath: "."}},
		size:  stateSize,
		layer: true,
		run: func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
			return w.writeStream(func(out io.Writer) error { return writeStateTar(out, engineDir, state) })
		},
	})

	chunk := opts.ChunkSize
	for _, p := range pages {
		src := filepath.Join(engineDir, p.rel)
		if known, ok := opts.Digests[p.rel]; ok {
			if err := checkDigest(known); err != nil {
				return nil, fmt.Errorf("digest given for %s: %w", p.rel, err)
			}
		}
		if chunk <= 0 || p.size <= chunk {
			jobs = append(jobs, blobJob{
				desc:  ocispec.Descriptor{MediaType: MediaTypePages, Annotations: map[string]string{AnnotationPath: p.rel, AnnotationOffset: "0"}},
				size:  p.size,
				layer: true,
				run: func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
					return w.importFile(src, ocispec.Descriptor{Size: p.size, Digest: opts.Digests[p.rel]}, buf, stop, opts.Digests[p.rel] != "", opts.MovePages)
				},
			})
			continue
		}
		for off := int64(0); off < p.size; off += chunk {
			n := min(chunk, p.size-off)
			jobs = append(jobs, blobJob{
				desc: ocispec.Descriptor{MediaType: MediaTypePages, Annotations: map[string]string{
					AnnotationPath: p.rel, AnnotationOffset: strconv.FormatInt(off, 10)}},
				size:  n,
				layer: true,
				run: func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
					return w.copyRange(src, off, n, buf, stop)
				},
			})
		}
	}

	if opts.RootfsDiff != "" {
		fi, err := os.Stat(opts.RootfsDiff)
		if err != nil {
			return nil, fmt.Errorf("rootfs diff: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("rootfs diff %s is not a regular file", opts.RootfsDiff)
		}
		jobs = append(jobs, blobJob{
			desc:  ocispec.Descriptor{MediaType: MediaTypeRootfsDiff},
			size:  fi.Size(),
			layer: true,
			run: func(buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
				return w.importFile(opts.RootfsDiff, ocispec.Descriptor{Size: fi.Size()}, buf, stop, false, false)
			},
		})
	}
	return jobs, nil
}

// blobWriter adds blobs to a layout's blobs/sha256 directory, each through
// a temporary name renamed to its digest once complete.
type blobWriter struct {
	dir  string
	sync bool
	seq  atomic.Int64
}

func (w *blobWriter) tempName() string {
	return filepath.Join(w.dir, ".tmp-"+strconv.FormatInt(w.seq.Add(1), 10))
}

// commit renames a complete temporary blob to its digest.
func (w *blobWriter) commit(tmp string, d digest.Digest) error {
	return os.Rename(tmp, filepath.Join(w.dir, d.Encoded()))
}

// writeBytes stores a small blob.
func (w *blobWriter) writeBytes(mediaType string, b []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(b)
	tmp := w.tempName()
	if err := writeNewFile(tmp, b, w.sync); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := w.commit(tmp, d); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
}

// writeStream stores the blob that fn writes.
func (w *blobWriter) writeStream(fn func(io.Writer) error) (digest.Digest, int64, error) {
	tmp := w.tempName()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	dg := digest.SHA256.Digester()
	cw := &countWriter{w: io.MultiWriter(f, dg.Hash())}
	err = fn(cw)
	if err == nil && w.sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	d := dg.Digest()
	return d, cw.n, w.commit(tmp, d)
}

// importFile makes src a blob: a hardlink (or with move, src itself,
// renamed) when possible (no copy), else a copy. Either way it hashes the
// result, unless trusted says want.Digest is known to be right and the
// file was linked or moved (the size is still checked); if want names a
// digest, a different content is an error.
func (w *blobWriter) importFile(src string, want ocispec.Descriptor, buf []byte, stop *atomic.Bool, trusted, move bool) (digest.Digest, int64, error) {
	tmp := w.tempName()
	link := os.Link
	if move {
		link = os.Rename
	}
	if err := link(src, tmp); err != nil {
		return w.copyRange(src, 0, -1, buf, stop, want)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", 0, err
	}
	if trusted {
		fi, err := f.Stat()
		if err != nil {
			return "", 0, err
		}
		if fi.Size() != want.Size {
			return "", 0, fmt.Errorf("%s: %w: expected %d bytes, got %d", src, ErrSizeMismatch, want.Size, fi.Size())
		}
		if w.sync {
			if err := f.Sync(); err != nil {
				return "", 0, err
			}
		}
		return want.Digest, want.Size, w.commit(tmp, want.Digest)
	}
	d, n, err := hashFile(f, 1<<62, buf, stop)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", src, err)
	}
	if err := checkImported(src, want, d, n); err != nil {
		return "", 0, err
	}
	if w.sync {
		if err := f.Sync(); err != nil {
			return "", 0, err
		}
	}
	return d, n, w.commit(tmp, d)
}

func checkImported(src string, want ocispec.Descriptor, d digest.Digest, n int64) error {
	if want.Digest != "" && d != want.Digest {
		return &BlobError{Digest: want.Digest, MediaType: want.MediaType, Actual: d, Size: want.Size, Err: ErrDigestMismatch}
	}
	if want.Size >= 0 && n != want.Size && (want.Digest != "" || want.Size > 0) {
		return fmt.Errorf("%s: %w: expected %d bytes, got %d", src, ErrSizeMismatch, want.Size, n)
	}
	return nil
}

// copyRange copies n bytes of src from off (n < 0: to the end) into a new
// blob, hashing them on the way.
func (w *blobWriter) copyRange(src string, off, n int64, buf []byte, stop *atomic.Bool, want ...ocispec.Descriptor) (digest.Digest, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	var r io.Reader = in
	if n >= 0 {
		r = io.NewSectionReader(in, off, n)
	}
	tmp := w.tempName()
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	dg := digest.SHA256.Digester()
	var total int64
	for err == nil {
		if stop.Load() {
			err = errStopped
			break
		}
		var k int
		k, err = r.Read(buf)
		if k > 0 {
			dg.Hash().Write(buf[:k])
			total += int64(k)
			if _, werr := out.Write(buf[:k]); werr != nil {
				err = werr
			}
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && w.sync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("copy %s: %w", src, err)
	}
	d := dg.Digest()
	if n >= 0 && total != n {
		return "", 0, fmt.Errorf("%s: %w: shrank to %d bytes while copied", src, ErrSizeMismatch, off+total)
	}
	if len(want) > 0 {
		if err := checkImported(src, want[0], d, total); err != nil {
			return "", 0, err
		}
	}
	return d, total, w.commit(tmp, d)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// claimDir makes dir for a new image or extraction: created when absent,
// accepted when an empty directory (containerd hands the shim one), else
// ErrExists. It ends 0700.
func claimDir(dir string) (created bool, err error) {
	if err := os.Mkdir(dir, 0o700); err == nil {
		return true, os.Chmod(dir, 0o700)
	} else if !errors.Is(err, fs.ErrExist) {
		return false, err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if len(names) > 0 {
		return false, fmt.Errorf("%s: %w (not empty)", dir, ErrExists)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return false, os.Chmod(dir, 0o700)
}

// cleanupDir undoes a failed write: removes dir if it was created, else
// empties it.
func cleanupDir(dir string, created bool) {
	if created {
		os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// writeNewFile creates name (which must not exist) 0600 with b.
func writeNewFile(name string, b []byte, sync bool) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}

// writeFileAtomic writes dir/name through a temporary file and a rename.
func writeFileAtomic(dir, name string, b []byte, sync bool) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := writeNewFile(tmp, b, sync); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	if sync {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// chownTree gives every file and directory under root to o.
func chownTree(root string, o Owner) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, o.UID, o.GID)
	})
}
