package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
)

// # The verified-blob cache
//
// Hashing every blob of a big image at every restore costs about as much as
// the restore itself (sha256 runs at ~1.6 GB/s per core). Most restores
// read an image that cryo wrote, or verified, on the same host since it
// booted, and nobody changed since. A VerifyCache remembers such blobs so
// that OpenCheckpointWith can take them as verified without reading them:
//
//   - WriteCheckpoint (WriteOptions.Cache) records each blob it wrote or
//     hashed once it is final; pages files whose digest the engine computed
//     while writing them count as hashed;
//   - OpenCheckpointWith (OpenOptions.Cache) records each blob it hashed and
//     found right, provided the file did not change while it was hashed.
//
// An entry is a file of the cache directory named after the digest and the
// file's device and inode, holding the file's identity as fstat gives it:
// st_dev, st_ino, size, mtime and ctime in nanoseconds, and the boot id
// (/proc/sys/kernel/random/boot_id). A blob whose open file matches its
// entry exactly is taken as verified; any difference, a missing or
// unreadable entry, another boot, a caller other than root: the blob is
// hashed in full as before (and recorded when right).
//
// Why this is sound:
//
//   - Only root writes the cache: the cache is used only when the caller's
//     euid is 0, its directory must be a directory owned by root with no
//     group or other permission (created 0700), and each entry a regular
//     file owned by root with mode 0600 (written to a temporary name and
//     renamed), else it is ignored. The default place, /run/cryo/verified,
//     is cleared at reboot where /run is a tmpfs; the boot id covers the
//     hosts where it is not.
//   - Every change of a file's content changes its ctime, and no system
//     call sets ctime to a chosen value (utimensat sets atime and mtime,
//     and sets ctime to the current time). A blob rewritten in place, even
//     with the same size and its mtime put back, no longer matches. Since
//     Linux 6.13 (multigrain timestamps on ext4, xfs, btrfs, tmpfs) a change
//     made after the ctime was read by a stat gets a distinct fine-grained
//     ctime; on older kernels, or filesystems with coarse timestamps, a
//     write within the same clock tick (a few ms) as the stat that made
//     the entry can go unnoticed.
//   - A blob replaced by another file (rename, delete and re-create) has
//     another inode or, if the inode number is reused, a new ctime.
//   - Writes through a shared writable mapping update ctime only at the
//     first write to a clean page, so a mapping made before the entry could
//     change the content unnoticed later: only blobs owned by root and not
//     writable by group or others are taken from (and put in) the cache,
//     so only root could hold such a mapping. The same rule keeps out an
//     image a user owns (which that user may rewrite at will).
//   - Only local filesystems whose timestamps the kernel keeps are trusted
//     (ext4, xfs, btrfs, tmpfs, f2fs): not FUSE, NFS or other filesystems
//     that report attributes they are told.
//   - An image from elsewhere (another host, a registry, an archive that is
//     unpacked, a layout copied or moved across filesystems) has files no
//     entry describes: it is hashed in full.
//
// What it does not cover: root itself changing a blob and putting its ctime
// back (by setting the system clock), or a device number reused within one
// boot by another filesystem whose inode holds the very same identity (a
// crafted filesystem image that root mounts). OpenOptions.Cache nil (`cryo
// restore --verify-full`) hashes everything whatever the cache says.
//
// Entries are never removed but by a reboot (or by hand): each is ~200
// bytes, one per blob file cryo wrote or verified.

// DefaultVerifyCacheDir is where the runtime keeps its cache: "verified"
// under its state root, /run/cryo by default.
const DefaultVerifyCacheDir = "/run/cryo/verified"

// VerifyCache is a cache of verified blobs, in a directory (see above).
// A nil *VerifyCache is no cache.
type VerifyCache struct {
	dir string
	// root is whether the caller is root: the cache is used only then.
	root bool
}

// NewVerifyCache returns the cache kept in dir (created 0700 when first
// written). It is inert unless the caller's effective uid is 0.
func NewVerifyCache(dir string) *VerifyCache {
	return &VerifyCache{dir: dir, root: isRoot()}
}

func isRoot() bool { return os.Geteuid() == 0 }

// usable says whether the cache may be consulted and written.
func (c *VerifyCache) usable() bool { return c != nil && c.root && c.dir != "" }

// verifiedEntry is the content of a cache entry.
type verifiedEntry struct {
	Digest  digest.Digest `json:"digest"`
	Dev     uint64        `json:"dev"`
	Ino     uint64        `json:"ino"`
	Size    int64         `json:"size"`
	MtimeNs int64         `json:"mtime_ns"`
	CtimeNs int64         `json:"ctime_ns"`
	BootID  string        `json:"boot_id"`
}

// maxEntrySize bounds what is read of an entry.
const maxEntrySize = 4096

func entryName(e *verifiedEntry) string {
	return fmt.Sprintf("%s-%s-%d-%d", e.Digest.Algorithm(), e.Digest.Encoded(), e.Dev, e.Ino)
}

// lookup says whether the blob open as f (fi its fstat) is recorded as
// holding d, exactly as it is now.
func (c *VerifyCache) lookup(d digest.Digest, f *os.File, fi os.FileInfo) bool {
	if !c.usable() {
		return false
	}
	want, ok := blobIdentity(d, f, fi)
	if !ok || c.checkDir(false) != nil {
		return false
	}
	got, err := c.readEntry(entryName(want))
	return err == nil && *got == *want
}

// record notes that the blob open as f, whose fstat was fi, holds d.
// Errors are ignored: a missing entry only means hashing the next time.
func (c *VerifyCache) record(d digest.Digest, f *os.File, fi os.FileInfo) {
	if !c.usable() {
		return
	}
	e, ok := blobIdentity(d, f, fi)
	if !ok || c.checkDir(true) != nil {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(c.dir, entryName(e)))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}

// recordPath records the blob of d in the layout at root as it is now.
func (c *VerifyCache) recordPath(root string, d digest.Digest) {
	if !c.usable() {
		return
	}
	f, err := os.Open(blobPath(root, d))
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		c.record(d, f, fi)
	}
}

// checkDir checks that the cache directory is root's alone, creating it
// (0700) when create is set and it does not exist.
func (c *VerifyCache) checkDir(create bool) error {
	fi, err := os.Lstat(c.dir)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return err
		}
		fi, err = os.Lstat(c.dir)
	}
	if err != nil {
		return err
	}
	if uid, ok := fileOwner(fi); !ok || uid != 0 || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("verify cache %s is not a directory that only root may use", c.dir)
	}
	return nil
}

// readEntry reads an entry, refusing anything but a small regular file of
// root's with no group or other permission.
func (c *VerifyCache) readEntry(name string) (*verifiedEntry, error) {
	f, err := openNoFollow(filepath.Join(c.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if uid, ok := fileOwner(fi); !ok || uid != 0 || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 || fi.Size() > maxEntrySize {
		return nil, fmt.Errorf("verify cache entry %s is not root's", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxEntrySize))
	if err != nil {
		return nil, err
	}
	var e verifiedEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
