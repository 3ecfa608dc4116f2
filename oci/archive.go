package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blobsSHA256 is the blobs directory of sha256 digests, slash-separated.
const blobsSHA256 = ocispec.ImageBlobsDir + "/sha256"

// WriteArchive writes the checkpoint layout layoutDir as the tar archive
// tarPath (0600; ErrExists if it exists): oci-layout and index.json first,
// then the blobs in digest order, with owner 0 and times at the epoch, so the
// same layout always gives the same archive. The layout is checked (index,
// manifest, config, blob sizes), not hashed: OpenCheckpoint verifies.
func WriteArchive(layoutDir, tarPath string) (err error) {
	c, err := openCheckpoint(layoutDir, openOptions{structureOnly: true})
	if err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	defer c.Close()
	if _, err := os.Lstat(tarPath); err == nil {
		return fmt.Errorf("write archive %s: %w", tarPath, ErrExists)
	}
	blobs, err := os.ReadDir(filepath.Join(c.Path, filepath.FromSlash(blobsSHA256)))
	if err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(tarPath), "."+filepath.Base(tarPath)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	defer func() {
		if cerr := tmp.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
			err = cerr
		}
		os.Remove(tmp.Name())
		if err != nil {
			err = fmt.Errorf("write archive %s: %w", tarPath, err)
		}
	}()
	tw := tar.NewWriter(tmp)
	addDir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: tarEpoch, Format: tar.FormatPAX})
	}
	addFile := func(name, src string) error {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrInvalidImage, src)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: fi.Size(), ModTime: tarEpoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		n, err := io.Copy(tw, io.LimitReader(f, fi.Size()))
		if err == nil && n != fi.Size() {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	for _, name := range []string{ocispec.ImageLayoutFile, ocispec.ImageIndexFile} {
		if err := addFile(name, filepath.Join(c.Path, name)); err != nil {
			return err
		}
	}
	if err := addDir(ocispec.ImageBlobsDir); err != nil {
		return err
	}
	if err := addDir(blobsSHA256); err != nil {
		return err
	}
	for _, e := range blobs {
		if strings.HasPrefix(e.Name(), ".") {
			continue // a temporary file of a writer
		}
		if digest.NewDigestFromEncoded(digest.SHA256, e.Name()).Validate() != nil {
			return fmt.Errorf("%w: stray file %s in %s", ErrInvalidImage, e.Name(), blobsSHA256)
		}
		if err := addFile(blobsSHA256+"/"+e.Name(), filepath.Join(c.Path, filepath.FromSlash(blobsSHA256), e.Name())); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// A hardlink never replaces an existing file: the no-overwrite commit.
	if err := os.Link(tmp.Name(), tarPath); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return err
	}
	return nil
}

// archiveEntry classifies a path of a checkpoint archive; ok is false for
// anything that has no place in an OCI layout of a checkpoint.
func archiveEntry(name string, typ byte) (clean string, max int64, ok bool) {
	clean = strings.TrimPrefix(name, "./")
	if typ == tar.TypeDir {
		clean = strings.TrimSuffix(clean, "/")
		return clean, 0, clean == ocispec.ImageBlobsDir || clean == blobsSHA256
	}
	if typ != tar.TypeReg && typ != tar.TypeRegA { //nolint:staticcheck // old writers
		return clean, 0, false
	}
	switch clean {
	case ocispec.ImageLayoutFile:
		return clean, 4096, true
	case ocispec.ImageIndexFile:
		return clean, maxIndexSize, true
	}
	hex, found := strings.CutPrefix(clean, blobsSHA256+"/")
	if !found || digest.NewDigestFromEncoded(digest.SHA256, hex).Validate() != nil {
		return clean, 0, false
	}
	return clean, 1 << 62, true
}

// unpackArchive unpacks a checkpoint archive into a new private (0700)
// temporary directory, accepting only what an OCI layout of a checkpoint
// holds: oci-layout, index.json, blobs/sha256/<hex>, regular files and
// those two directories, each once. Nothing in the archive names a path
// that is not one of these. The caller verifies the layout.
func unpackArchive(tarPath string) (dir string, err error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp("", "cryo-checkpoint-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(blobsSHA256)), 0o700); err != nil {
		return "", err
	}
	seen := map[string]bool{}
	var total int64
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: archive: %w", ErrNotCheckpoint, err)
		}
		name, max, ok := archiveEntry(hdr.Name, hdr.Typeflag)
		if !ok {
			return "", fmt.Errorf("%w: archive entry %q (type %q) has no place in a checkpoint layout", ErrUnsafeEntry, hdr.Name, hdr.Typeflag)
		}
		if seen[name] {
			return "", fmt.Errorf("%w: archive entry %q twice", ErrUnsafeEntry, name)
		}
		seen[name] = true
		if len(seen) > 2*maxLayers+8 {
			return "", fmt.Errorf("%w: archive has too many entries", ErrUnsafeEntry)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		if hdr.Size < 0 || hdr.Size > max || isSparse(hdr) {
			return "", fmt.Errorf("%w: archive entry %q of %d bytes, or sparse", ErrUnsafeEntry, name, hdr.Size)
		}
		// An archive holds its files' bytes: more is a trick (sparse).
		if total += hdr.Size; total > fi.Size() {
			return "", fmt.Errorf("%w: archive entries hold more bytes than the archive", ErrUnsafeEntry)
		}
		if err := extractStateEntry(dir, "", stateEntry{name: name, size: hdr.Size}, tr); err != nil {
			return "", err
		}
	}
	for _, must := range []string{ocispec.ImageLayoutFile, ocispec.ImageIndexFile} {
		if !seen[must] {
			return "", fmt.Errorf("%w: archive has no %s", ErrNotCheckpoint, must)
		}
	}
	return dir, nil
}

// readArchiveIndex returns index.json of a checkpoint archive without
// unpacking it (the blobs are skipped).
func readArchiveIndex(tarPath string) ([]byte, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: archive has no %s", ErrNotCheckpoint, ocispec.ImageIndexFile)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: archive: %w", ErrNotCheckpoint, err)
		}
		name, max, ok := archiveEntry(hdr.Name, hdr.Typeflag)
		if !ok {
			return nil, fmt.Errorf("%w: archive entry %q", ErrNotCheckpoint, hdr.Name)
		}
		if name != ocispec.ImageIndexFile {
			continue
		}
		if hdr.Size > max {
			return nil, fmt.Errorf("%w: index.json of %d bytes", ErrInvalidImage, hdr.Size)
		}
		return io.ReadAll(io.LimitReader(tr, max))
	}
}
