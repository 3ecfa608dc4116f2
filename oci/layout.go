package oci

import (
	"crypto/sha256"
	"encoding/json"
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
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	imgspec "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Limits a reader applies to the JSON documents of a layout.
const (
	maxIndexSize    = 4 << 20
	maxManifestSize = 4 << 20
	maxLayers       = 1 << 16
	maxPathLen      = 4096
	maxNameLen      = 255
)

// hashBufSize is the read size when hashing blobs.
const hashBufSize = 1 << 20

// blobPath is where the blob of digest d lives in the layout at root.
func blobPath(root string, d digest.Digest) string {
	return filepath.Join(root, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// checkDigest accepts well-formed sha256 digests only: anything else could
// name a path outside blobs/sha256 or need a hash this package does not link.
func checkDigest(d digest.Digest) error {
	if !strings.HasPrefix(string(d), string(digest.SHA256)+":") {
		// (digest.Digest.Algorithm panics without a ':'.)
		if alg, _, ok := strings.Cut(string(d), ":"); ok && (alg == string(digest.SHA384) || alg == string(digest.SHA512)) {
			return fmt.Errorf("%w: digest algorithm of %q", ErrUnsupported, d)
		}
		return fmt.Errorf("%w: digest %q", ErrInvalidImage, d)
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", ErrInvalidImage, d, err)
	}
	return nil
}

// checkDescriptor checks what every descriptor of a checkpoint must satisfy:
// a sha256 digest, a sane size, and no external URLs.
func checkDescriptor(d ocispec.Descriptor) error {
	if err := checkDigest(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: descriptor %s: negative size %d", ErrInvalidImage, d.Digest, d.Size)
	}
	if len(d.URLs) > 0 {
		return fmt.Errorf("%w: descriptor %s points outside the layout (urls)", ErrInvalidImage, d.Digest)
	}
	return nil
}

// cleanRel checks that p is a clean relative slash-separated path that stays
// inside the directory it is joined to: no "..", no absolute path, no empty
// or "." element, no NUL or backslash. "." itself is accepted only when
// allowDot is set.
func cleanRel(p string, allowDot bool) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case p == ".":
		if allowDot {
			return nil
		}
		return errors.New(`path "."`)
	case len(p) > maxPathLen:
		return fmt.Errorf("path of %d bytes", len(p))
	case strings.ContainsAny(p, "\x00\\"):
		return fmt.Errorf("path %q holds NUL or backslash", p)
	case path.IsAbs(p):
		return fmt.Errorf("absolute path %q", p)
	case path.Clean(p) != p:
		return fmt.Errorf("unclean path %q", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." || len(el) > maxNameLen {
			return fmt.Errorf("path %q escapes or has an invalid element", p)
		}
	}
	return nil
}

// isPagesName reports whether a base name is an engine pages file name.
func isPagesName(name string) bool {
	return len(name) > len(pagesPrefix)+len(pagesSuffix) &&
		strings.HasPrefix(name, pagesPrefix) && strings.HasSuffix(name, pagesSuffix)
}

// parentDirAt returns the directory of the ancestor at depth k (0 = own).
func parentDirAt(k int) string {
	if k == 0 {
		return "."
	}
	return strings.TrimSuffix(strings.Repeat(ParentDir+"/", k), "/")
}

// indexInfo is what index.json says about the checkpoint.
type indexInfo struct {
	manifest  ocispec.Descriptor
	name      string
	container string
	created   time.Time
}

// parseIndex decodes and checks index.json: one manifest, a checkpoint,
// with its annotations.
func parseIndex(b []byte) (*indexInfo, error) {
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("%w: index.json of %d bytes", ErrInvalidImage, len(b))
	}
	var idx ocispec.Index
	if err := decodeStrictJSON(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index.json: %w", ErrInvalidImage, err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: index.json: schemaVersion %d", ErrInvalidImage, idx.SchemaVersion)
	}
	if idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%w: index.json: media type %q", ErrInvalidImage, idx.MediaType)
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("%w: index.json holds %d manifests, a checkpoint has one", ErrNotCheckpoint, len(idx.Manifests))
	}
	m := idx.Manifests[0]
	if m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: index.json: manifest media type %q", ErrNotCheckpoint, m.MediaType)
	}
	if m.ArtifactType != "" && m.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("%w: index.json: artifact type %q", ErrNotCheckpoint, m.ArtifactType)
	}
	if err := checkDescriptor(m); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if m.Size > maxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrInvalidImage, m.Size)
	}
	info := &indexInfo{manifest: m, name: m.Annotations[AnnotationName], container: m.Annotations[AnnotationContainer]}
	created, ok := m.Annotations[AnnotationCreated]
	if info.container == "" || !ok {
		return nil, fmt.Errorf("%w: index.json: no %s and %s annotations", ErrNotCheckpoint, AnnotationContainer, AnnotationCreated)
	}
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil {
		return nil, fmt.Errorf("%w: index.json: annotation %s: %w", ErrInvalidImage, AnnotationCreated, err)
	}
	info.created = t
	return info, nil
}

// stateLayer is a state tar and the directory it unpacks into.
type stateLayer struct {
	desc ocispec.Descriptor
	dir  string
}

// pagesFile is an engine pages file and the layers it is made of, in order.
type pagesFile struct {
	path   string
	chunks []ocispec.Descriptor
	size   int64
}

// plan is what a manifest's layers become on extraction.
type plan struct {
	states []stateLayer // own first, then parent, grandparent...
	pages  []pagesFile  // sorted by path
	rootfs *ocispec.Descriptor
}

// parseManifest decodes and checks a checkpoint manifest and turns its
// layers into a plan: one state layer per generation ("." for the image's
// own, then "parent", "parent/parent"...), pages files made of contiguous
// chunks living beside their generation's records, at most one rootfs diff.
func parseManifest(b []byte) (*ocispec.Manifest, *plan, error) {
	if len(b) > maxManifestSize {
		return nil, nil, fmt.Errorf("%w: manifest of %d bytes", ErrInvalidImage, len(b))
	}
	var m ocispec.Manifest
	if err := decodeStrictJSON(b, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: manifest: %w", ErrInvalidImage, err)
	}
	if m.SchemaVersion != 2 || m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, nil, fmt.Errorf("%w: manifest: schemaVersion %d, media type %q", ErrInvalidImage, m.SchemaVersion, m.MediaType)
	}
	if m.ArtifactType != ArtifactType || m.Config.MediaType != MediaTypeConfig {
		return nil, nil, fmt.Errorf("%w: manifest: artifact type %q, config media type %q", ErrNotCheckpoint, m.ArtifactType, m.Config.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, nil, fmt.Errorf("manifest config: %w", err)
	}
	if m.Config.Size > maxConfigSize {
		return nil, nil, fmt.Errorf("%w: config of %d bytes", ErrInvalidImage, m.Config.Size)
	}
	if len(m.Layers) > maxLayers {
		return nil, nil, fmt.Errorf("%w: manifest has %d layers", ErrInvalidImage, len(m.Layers))
	}
	p, err := planLayers(m.Layers)
	if err != nil {
		return nil, nil, err
	}
	return &m, p, nil
}

func planLayers(layers []ocispec.Descriptor) (*plan, error) {
	p := &plan{}
	states := map[string]ocispec.Descriptor{}
	files := map[string]*pagesFile{}
	offsets := map[string]map[int64]bool{}
	for i, l := range layers {
		if err := checkDescriptor(l); err != nil {
			return nil, fmt.Errorf("manifest layer %d: %w", i, err)
		}
		where := l.Annotations[AnnotationPath]
		_, hasOffset := l.Annotations[AnnotationOffset]
		switch l.MediaType {
		case MediaTypeState:
			if err := cleanRel(where, true); err != nil {
				return nil, fmt.Errorf("%w: state layer %s: %w", ErrInvalidImage, l.Digest, err)
			}
			if _, dup := states[where]; dup || hasOffset {
				return nil, fmt.Errorf("%w: state layer %s: second layer for %q or an offset", ErrInvalidImage, l.Digest, where)
			}
			states[where] = l
		case MediaTypePages:
			if err := cleanRel(where, false); err != nil || !isPagesName(path.Base(where)) {
				return nil, fmt.Errorf("%w: pages layer %s: path %q is not a pages file", ErrInvalidImage, l.Digest, where)
			}
			var off int64
			if hasOffset {
				s := l.Annotations[AnnotationOffset]
				v, err := strconv.ParseInt(s, 10, 64)
				if err != nil || v < 0 || strconv.FormatInt(v, 10) != s {
					return nil, fmt.Errorf("%w: pages layer %s: offset %q", ErrInvalidImage, l.Digest, s)
				}
				off = v
			}
			f := files[where]
			if f == nil {
				f = &pagesFile{path: where}
				files[where] = f
				offsets[where] = map[int64]bool{}
			}
			if offsets[where][off] {
				return nil, fmt.Errorf("%w: pages layer %s: two layers at offset %d of %s", ErrInvalidImage, l.Digest, off, where)
			}
			offsets[where][off] = true
			d := l
			d.Annotations = map[string]string{AnnotationOffset: strconv.FormatInt(off, 10)}
			f.chunks = append(f.chunks, d)
		case MediaTypeRootfsDiff:
			if p.rootfs != nil || where != "" || hasOffset {
				return nil, fmt.Errorf("%w: rootfs diff layer %s: a second one, or a path", ErrInvalidImage, l.Digest)
			}
			d := l
			p.rootfs = &d
		case MediaTypePagesZstd:
			return nil, fmt.Errorf("%w: layer %s: zstd pages are not supported yet", ErrUnsupported, l.Digest)
		default:
			return nil, fmt.Errorf("%w: layer %s: media type %q", ErrUnsupported, l.Digest, l.MediaType)
		}
	}
	// Generations: ".", "parent", "parent/parent"... without gaps.
	for k := 0; k < len(states); k++ {
		d, ok := states[parentDirAt(k)]
		if !ok {
			return nil, fmt.Errorf("%w: no state layer for %q", ErrInvalidImage, parentDirAt(k))
		}
		p.states = append(p.states, stateLayer{desc: d, dir: parentDirAt(k)})
	}
	if len(p.states) == 0 {
		return nil, fmt.Errorf("%w: no state layer", ErrInvalidImage)
	}
	for _, f := range files {
		if dir := path.Dir(f.path); states[dir].Digest == "" {
			return nil, fmt.Errorf("%w: pages file %s has no state layer for %q", ErrInvalidImage, f.path, dir)
		}
		slices.SortFunc(f.chunks, func(a, b ocispec.Descriptor) int {
			return compareInt(chunkOffset(a), chunkOffset(b))
		})
		for _, c := range f.chunks {
			if chunkOffset(c) != f.size {
				return nil, fmt.Errorf("%w: pages file %s: layer %s at offset %d, expected %d", ErrInvalidImage, f.path, c.Digest, chunkOffset(c), f.size)
			}
			f.size += c.Size
			if f.size < 0 {
				return nil, fmt.Errorf("%w: pages file %s: size overflows", ErrInvalidImage, f.path)
			}
		}
		p.pages = append(p.pages, *f)
	}
	slices.SortFunc(p.pages, func(a, b pagesFile) int { return strings.Compare(a.path, b.path) })
	return p, nil
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// chunkOffset is the offset of a planned chunk (parsed by planLayers).
func chunkOffset(d ocispec.Descriptor) int64 {
	v, _ := strconv.ParseInt(d.Annotations[AnnotationOffset], 10, 64)
	return v
}

// checkLayoutDirs checks the oci-layout file and that blobs/sha256 is a real
// directory (not a symlink out of the layout).
func checkLayoutDirs(root string) error {
	b, err := readSmallFile(filepath.Join(root, ocispec.ImageLayoutFile), 4096)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: no %s", ErrNotCheckpoint, ocispec.ImageLayoutFile)
		}
		return err
	}
	var l ocispec.ImageLayout
	if err := decodeStrictJSON(b, &l); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotCheckpoint, ocispec.ImageLayoutFile, err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("%w: image layout version %q", ErrUnsupported, l.Version)
	}
	for _, d := range []string{ocispec.ImageBlobsDir, filepath.Join(ocispec.ImageBlobsDir, string(digest.SHA256))} {
		fi, err := os.Lstat(filepath.Join(root, d))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotCheckpoint, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrInvalidImage, d)
		}
	}
	return nil
}

// readSmallFile reads a regular file (not a symlink) of at most max bytes.
func readSmallFile(name string, max int64) ([]byte, error) {
	fi, err := os.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidImage, name)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%w: %s has %d bytes (limit %d)", ErrInvalidImage, name, fi.Size(), max)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s grew past %d bytes", ErrInvalidImage, name, max)
	}
	return b, nil
}

// openBlob opens the blob of d for reading, refusing anything but a regular
// file of the descriptor's size, and returns its identity.
func openBlob(root string, d ocispec.Descriptor) (*os.File, os.FileInfo, error) {
	name := blobPath(root, d.Digest)
	lfi, err := os.Lstat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, &BlobError{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Err: ErrBlobMissing}
		}
		return nil, nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if !lfi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%w: blob %s is not a regular file (%s)", ErrInvalidImage, d.Digest, lfi.Mode().Type())
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, lfi) {
		f.Close()
		return nil, nil, fmt.Errorf("%w: blob %s changed while being opened", ErrInvalidImage, d.Digest)
	}
	if fi.Size() != d.Size {
		f.Close()
		return nil, nil, &BlobError{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, ActualSize: fi.Size(), Err: ErrSizeMismatch}
	}
	return f, fi, nil
}

// readBlob reads and verifies a small blob (manifest, config).
func readBlob(root string, d ocispec.Descriptor) ([]byte, error) {
	f, _, err := openBlob(root, d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d.Digest, err)
	}
	if int64(len(b)) != d.Size {
		return nil, &BlobError{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, ActualSize: int64(len(b)), Err: ErrSizeMismatch}
	}
	if got := digest.FromBytes(b); got != d.Digest {
		return nil, &BlobError{Digest: d.Digest, MediaType: d.MediaType, Actual: got, Size: d.Size, Err: ErrDigestMismatch}
	}
	return b, nil
}

// hashFile hashes what r yields, at most limit+1 bytes, stopping early when
// stop is set.
func hashFile(r io.Reader, limit int64, buf []byte, stop *atomic.Bool) (digest.Digest, int64, error) {
	h := sha256.New()
	var n int64
	r = io.LimitReader(r, limit+1)
	for {
		if stop != nil && stop.Load() {
			return "", n, errStopped
		}
		k, err := r.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", n, err
		}
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), n, nil
}

// errStopped marks work abandoned because another worker failed.
var errStopped = errors.New("stopped")

// verifyBlobs checks every distinct blob of descs against its digest and
// size, in parallel, and returns the identity of each verified file. A blob
// that cache records as verified, exactly as its file is now, is not
// hashed (unless full); one hashed and found right is recorded in cache,
// unless its file changed while it was read (cache may be nil).
func verifyBlobs(root string, descs []ocispec.Descriptor, cache *VerifyCache, full bool) (map[digest.Digest]os.FileInfo, error) {
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	var todo []ocispec.Descriptor
	for _, d := range descs {
		if prev, ok := byDigest[d.Digest]; ok {
			if prev.Size != d.Size {
				return nil, fmt.Errorf("%w: blob %s listed with sizes %d and %d", ErrInvalidImage, d.Digest, prev.Size, d.Size)
			}
			continue
		}
		byDigest[d.Digest] = d
		todo = append(todo, d)
	}
	slices.SortFunc(todo, func(a, b ocispec.Descriptor) int { return compareInt(b.Size, a.Size) })
	ids := make([]os.FileInfo, len(todo))
	err := parallel(len(todo), func(i int, buf []byte, stop *atomic.Bool) error {
		d := todo[i]
		f, fi, err := openBlob(root, d)
		if err != nil {
			return err
		}
		defer f.Close()
		if !full && cache.lookup(d.Digest, f, fi) {
			ids[i] = fi
			return nil
		}
		got, n, err := hashFile(f, d.Size, buf, stop)
		if err != nil {
			return fmt.Errorf("read blob %s: %w", d.Digest, err)
		}
		if n != d.Size {
			return &BlobError{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, ActualSize: n, Err: ErrSizeMismatch}
		}
		if got != d.Digest {
			return &BlobError{Digest: d.Digest, MediaType: d.MediaType, Actual: got, Size: d.Size, Err: ErrDigestMismatch}
		}
		ids[i] = fi
		if cache.usable() {
			// Recorded only if nothing changed the file since fi was
			// taken, before it was read.
			if now, err := f.Stat(); err == nil && sameIdentity(fi, now) {
				cache.record(d.Digest, f, fi)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[digest.Digest]os.FileInfo, len(todo))
	for i, d := range todo {
		out[d.Digest] = ids[i]
	}
	return out, nil
}

// parallel runs job(0..n-1) on GOMAXPROCS workers, each with its own hashing
// buffer; the first error stops the others (they see stop set) and is
// returned.
func parallel(n int, job func(i int, buf []byte, stop *atomic.Bool) error) error {
	workers := min(runtime.GOMAXPROCS(0), n)
	var (
		next  atomic.Int64
		stop  atomic.Bool
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, hashBufSize)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || stop.Load() {
					return
				}
				if err := job(i, buf, &stop); err != nil {
					if !errors.Is(err, errStopped) {
						once.Do(func() { first = err })
					}
					stop.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && stop.Load() {
		first = errStopped
	}
	return first
}

// marshalJSON encodes a layout document (deterministic: struct order).
func marshalJSON(v any) ([]byte, error) {
	return json.Marshal(v)
}

// versioned2 is the schemaVersion of OCI manifests and indexes.
var versioned2 = imgspec.Versioned{SchemaVersion: 2}
