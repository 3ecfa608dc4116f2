package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Limits of a state layer.
const (
	// maxStateEntrySize bounds one record file of a state layer.
	maxStateEntrySize = 1 << 30
	// maxStateEntries bounds the entries of a state layer.
	maxStateEntries = 1 << 20
)

// tarEpoch is the modification time of every entry cryo writes, so that the
// same files give the same tar, and the same digest.
var tarEpoch = time.Unix(0, 0).UTC()

// engineEntry is a file or directory of the engine's image directory.
type engineEntry struct {
	rel   string // slash-separated, relative to the image directory
	isDir bool
	size  int64
}

// scanEngineDir splits an engine image directory into its pages files (top
// level pages-*.img) and the entries of its state layer, in a fixed order
// (lexical walk). Anything but regular files and directories is refused:
// the engine writes neither links nor devices.
func scanEngineDir(dir string) (pages []engineEntry, state []engineEntry, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			if !d.IsDir() {
				return fmt.Errorf("engine image dir %s is not a directory", dir)
			}
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if err := cleanRel(rel, false); err != nil {
			return fmt.Errorf("engine file %s: %w", p, err)
		}
		switch {
		case d.IsDir():
			state = append(state, engineEntry{rel: rel, isDir: true})
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			e := engineEntry{rel: rel, size: fi.Size()}
			if !strings.Contains(rel, "/") && isPagesName(rel) {
				pages = append(pages, e)
			} else {
				state = append(state, e)
			}
		default:
			return fmt.Errorf("engine file %s is a %s, only regular files and directories go into an image", p, d.Type())
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("scan engine image dir: %w", err)
	}
	return pages, state, nil
}

// writeStateTar writes the state layer of the given entries of dir: names in
// the given order, modes 0600/0700, owner 0, times at the epoch.
func writeStateTar(w io.Writer, dir string, entries []engineEntry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.rel, ModTime: tarEpoch, Mode: 0o600, Typeflag: tar.TypeReg, Size: e.size, Format: tar.FormatPAX}
		if e.isDir {
			hdr.Name, hdr.Mode, hdr.Typeflag, hdr.Size = e.rel+"/", 0o700, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("state tar entry %s: %w", e.rel, err)
		}
		if e.isDir {
			continue
		}
		if err := copyFileInto(tw, filepath.Join(dir, filepath.FromSlash(e.rel)), e.size); err != nil {
			return fmt.Errorf("state tar entry %s: %w", e.rel, err)
		}
	}
	return tw.Close()
}

// copyFileInto copies exactly size bytes of a file into w.
func copyFileInto(w io.Writer, name string, size int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("file shrank from %d to %d bytes while being packed", size, n)
	}
	return nil
}

// pathKind is what a path of the extraction tree is.
type pathKind uint8

const (
	kindImplicitDir pathKind = iota + 1 // parent of an entry, not listed
	kindDir                             // listed directory
	kindFile                            // regular file
	kindGeneration                      // the directory of a parent generation
)

type pathInfo struct {
	kind  pathKind
	owner int // generation (0 = own) that created the path
}

// pathSet is the tree of paths an extraction creates. It refuses
// duplicates, files used as directories, and entries of one generation
// inside the directory of another.
type pathSet map[string]pathInfo

func (s pathSet) add(p string, kind pathKind, owner int) error {
	// The nearest generation directory above p must be p's own.
	checked := false
	for a := path.Dir(p); a != "."; a = path.Dir(a) {
		info, ok := s[a]
		switch {
		case !ok:
			s[a] = pathInfo{kind: kindImplicitDir, owner: owner}
		case info.kind == kindFile:
			return fmt.Errorf("%w: %q is under file %q", ErrUnsafeEntry, p, a)
		case info.kind == kindGeneration && !checked && kind != kindGeneration:
			if info.owner != owner {
				return fmt.Errorf("%w: %q is inside the records of another checkpoint generation", ErrUnsafeEntry, p)
			}
			checked = true
		}
	}
	if !checked && owner != 0 && kind != kindGeneration {
		return fmt.Errorf("%w: %q of generation %d is outside its directory", ErrUnsafeEntry, p, owner)
	}
	prev, ok := s[p]
	switch {
	case !ok:
	case prev.kind == kindImplicitDir && kind == kindDir && prev.owner == owner:
	case prev.kind == kindImplicitDir && kind == kindGeneration:
	default:
		return fmt.Errorf("%w: duplicate entry %q", ErrUnsafeEntry, p)
	}
	s[p] = pathInfo{kind: kind, owner: owner}
	return nil
}

// stateEntry is a checked entry of a state layer.
type stateEntry struct {
	name  string // clean relative path
	isDir bool
	size  int64
}

// scanStateTar reads a state layer and calls fn for each entry after
// checking it: only regular files and directories, clean relative names that
// stay inside (no "..", no absolute path), no duplicate, no file used as a
// directory, sizes and counts within bounds. Each entry's path is added to
// set under dir (the layer's directory) for generation owner. fn may read
// the file's bytes from body; if it does not, they are skipped.
//
// limit bounds the sum of the entries' sizes: the size of the layer, which
// only a sparse entry (refused) could exceed.
func scanStateTar(r io.Reader, limit int64, set pathSet, dir string, owner int, fn func(e stateEntry, body io.Reader) error) error {
	tr := tar.NewReader(r)
	var total int64
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: state tar: %w", ErrInvalidImage, err)
		}
		if n >= maxStateEntries {
			return fmt.Errorf("%w: state tar has more than %d entries", ErrUnsafeEntry, maxStateEntries)
		}
		e := stateEntry{name: hdr.Name}
		if isSparse(hdr) {
			return fmt.Errorf("%w: state tar entry %q is sparse", ErrUnsafeEntry, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // accept old writers' regular files
			if hdr.Size < 0 || hdr.Size > maxStateEntrySize {
				return fmt.Errorf("%w: state tar entry %q of %d bytes", ErrUnsafeEntry, hdr.Name, hdr.Size)
			}
			e.size = hdr.Size
			if total += e.size; total > limit {
				return fmt.Errorf("%w: state tar entries hold more bytes than the layer's %d", ErrUnsafeEntry, limit)
			}
		case tar.TypeDir:
			e.isDir = true
			e.name = strings.TrimSuffix(e.name, "/")
		default:
			return fmt.Errorf("%w: state tar entry %q has type %q (only files and directories)", ErrUnsafeEntry, hdr.Name, hdr.Typeflag)
		}
		if err := cleanRel(e.name, false); err != nil {
			return fmt.Errorf("%w: state tar entry: %w", ErrUnsafeEntry, err)
		}
		kind := kindFile
		if e.isDir {
			kind = kindDir
		}
		if err := set.add(path.Join(dir, e.name), kind, owner); err != nil {
			return fmt.Errorf("state tar: %w", err)
		}
		if fn != nil {
			if err := fn(e, tarBody{tr}); err != nil {
				return err
			}
		}
	}
}

// extractStateEntry creates one checked entry under root: a 0700 directory,
// or a new 0600 file (never an existing one) with the entry's bytes.
func extractStateEntry(root, dir string, e stateEntry, body io.Reader) error {
	target := filepath.Join(root, filepath.FromSlash(path.Join(dir, e.name)))
	if e.isDir {
		if err := os.MkdirAll(target, 0o700); err != nil {
			return fmt.Errorf("extract %s: %w", e.name, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return fmt.Errorf("extract %s: %w", e.name, err)
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("extract %s: %w", e.name, err)
	}
	n, err := io.Copy(f, io.LimitReader(body, e.size))
	if err == nil && n != e.size {
		err = io.ErrUnexpectedEOF
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", e.name, err)
	}
	return nil
}

// isSparse reports a sparse entry (old GNU or PAX GNU.sparse.*): its holes
// would expand to more bytes than the tar holds.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// tarBody reads an entry's bytes; a truncated or malformed tar is an
// invalid image, not an I/O error.
type tarBody struct{ r io.Reader }

func (b tarBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: state tar: %w", ErrInvalidImage, err)
	}
	return n, err
}
