package oci

import (
	"errors"
	"fmt"
	"io/fs"

	digest "github.com/opencontainers/go-digest"
)

var (
	// ErrNotCheckpoint means the path is not a cryo checkpoint image: no OCI
	// layout, no index.json, or a manifest that is not a checkpoint.
	ErrNotCheckpoint = errors.New("not a cryo checkpoint image")
	// ErrInvalidImage means the image is malformed: bad JSON, missing or
	// inconsistent fields, layers that do not describe a valid set of files.
	ErrInvalidImage = errors.New("invalid checkpoint image")
	// ErrDigestMismatch means a blob's content does not match its digest.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrSizeMismatch means a blob's size does not match its descriptor.
	ErrSizeMismatch = errors.New("blob size mismatch")
	// ErrBlobMissing means a descriptor names a blob absent from the layout.
	ErrBlobMissing = errors.New("blob missing")
	// ErrUnsafeEntry means a tar (state layer or archive) holds an entry
	// that could escape or confuse the extraction directory: absolute or
	// unclean path, "..", link, device, fifo, duplicate, oversized entry.
	ErrUnsafeEntry = errors.New("unsafe tar entry")
	// ErrUnsupported means the image uses a revision, digest algorithm or
	// media type this version cannot read.
	ErrUnsupported = errors.New("unsupported checkpoint image feature")
	// ErrExists means the destination (image, archive, extraction
	// directory) already exists and is not empty.
	ErrExists = errors.New("already exists")
	// ErrPermission means the caller may not act on the image (Remove by
	// someone who is neither its owner nor root). It also matches
	// fs.ErrPermission through errors.Is.
	ErrPermission = fmt.Errorf("checkpoint image: %w", fs.ErrPermission)
)

// BlobError tells which blob failed verification and how. It unwraps to
// ErrDigestMismatch, ErrSizeMismatch or ErrBlobMissing.
type BlobError struct {
	Digest     digest.Digest // the digest the descriptor names
	MediaType  string        // the descriptor's media type
	Actual     digest.Digest // the digest of the content found (mismatch only)
	Size       int64         // the size the descriptor names
	ActualSize int64         // the size found (size mismatch only)
	Err        error         // the sentinel
}

func (e *BlobError) Error() string {
	switch {
	case errors.Is(e.Err, ErrDigestMismatch):
		return fmt.Sprintf("blob %s (%s): %v: expected %s, got %s", e.Digest, e.MediaType, e.Err, e.Digest, e.Actual)
	case errors.Is(e.Err, ErrSizeMismatch):
		return fmt.Sprintf("blob %s (%s): %v: expected %d bytes, got %d", e.Digest, e.MediaType, e.Err, e.Size, e.ActualSize)
	default:
		return fmt.Sprintf("blob %s (%s): %v", e.Digest, e.MediaType, e.Err)
	}
}

func (e *BlobError) Unwrap() error { return e.Err }
