package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/cryo-run/cryo/integration/testutil"
)

// cachedLayout writes an image recording its blobs in a fresh cache and
// returns the layout, the cache and the digest of its biggest pages layer.
func cachedLayout(t *testing.T) (string, *VerifyCache, digest.Digest) {
	t.Helper()
	testutil.RequiresRoot(t)
	engine := makeEngineDir(t, engineFiles{
		"inventory.img": []byte("inv"), "core-1.img": randBytes(5, 2000),
		"pages-1.img": randBytes(6, 256<<10), "pages-2.img": randBytes(7, 5000),
	})
	cache := NewVerifyCache(filepath.Join(t.TempDir(), "verified"))
	dir := filepath.Join(t.TempDir(), "image")
	res, err := WriteCheckpoint(dir, engine, testConfig("cached"), WriteOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	var pages digest.Digest
	var size int64
	for _, l := range res.Layers {
		if l.MediaType == MediaTypePages && l.Size > size {
			pages, size = l.Digest, l.Size
		}
		if !cacheHolds(t, cache, dir, l.Digest) {
			t.Fatalf("layer %s (%s) not recorded at write", l.Digest, l.MediaType)
		}
	}
	return dir, cache, pages
}

// cacheHolds says whether cache records the blob of d as it is now.
func cacheHolds(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) bool {
	t.Helper()
	f, err := os.Open(blobPath(dir, d))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return cache.lookup(d, f, fi)
}

// writeInPlace changes one byte of a blob through the same inode, keeping
// its size and putting its mtime back.
func writeInPlace(t *testing.T, p string, off int64) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// forge records the blob of d, whatever it holds, as verified (what a
// cache written by root could say of a file changed after the fact).
func forge(t *testing.T, cache *VerifyCache, dir string, d digest.Digest, edit func(*verifiedEntry)) {
	t.Helper()
	f, err := os.Open(blobPath(dir, d))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := blobIdentity(d, f, fi)
	if !ok {
		t.Fatalf("blob %s cannot be cached", d)
	}
	if edit != nil {
		edit(e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache.dir, entryName(e)), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCacheRefusesBlobChangedAfterVerification(t *testing.T) {
	dir, cache, pages := cachedLayout(t)
	c, err := OpenCheckpointWith(dir, OpenOptions{Cache: cache})
	if err != nil {
		t.Fatalf("open with the cache: %v", err)
	}
	c.Close()
	// Same size, same mtime, same inode: only the ctime tells.
	writeInPlace(t, blobPath(dir, pages), 1000)
	if cacheHolds(t, cache, dir, pages) {
		t.Fatal("the cache still holds a blob written to after it was recorded")
	}
	if _, err := OpenCheckpointWith(dir, OpenOptions{Cache: cache}); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("open of a blob changed after its verification was cached: got %v, want ErrDigestMismatch", err)
	}
}

func TestVerifyCacheRecordsHashedBlobs(t *testing.T) {
	dir, _, pages := cachedLayout(t)
	fresh := NewVerifyCache(filepath.Join(t.TempDir(), "verified"))
	if cacheHolds(t, fresh, dir, pages) {
		t.Fatal("an empty cache holds a blob")
	}
	c, err := OpenCheckpointWith(dir, OpenOptions{Cache: fresh})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !cacheHolds(t, fresh, dir, pages) {
		t.Fatal("a blob hashed and found right was not recorded")
	}
	fi, err := os.Stat(fresh.dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	entries, err := os.ReadDir(fresh.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("entry %s: %v, %v; want mode 0600", e.Name(), fi.Mode(), err)
		}
	}
}

// A forged entry for a corrupted blob shows which paths trust the cache:
// the blob is only refused where the cache must not be used.
func TestVerifyCacheUse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest)
		opts    func(cache *VerifyCache) OpenOptions
		trusted bool
	}{
		{name: "entry matches", trusted: true,
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) { forge(t, cache, dir, d, nil) }},
		{name: "verify full",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) { forge(t, cache, dir, d, nil) },
			opts:  func(cache *VerifyCache) OpenOptions { return OpenOptions{Cache: cache, Full: true} }},
		{name: "no cache",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) { forge(t, cache, dir, d, nil) },
			opts:  func(*VerifyCache) OpenOptions { return OpenOptions{} }},
		{name: "another boot",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				forge(t, cache, dir, d, func(e *verifiedEntry) { e.BootID = "00000000-0000-0000-0000-000000000000" })
			}},
		{name: "other ctime",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				forge(t, cache, dir, d, func(e *verifiedEntry) { e.CtimeNs-- })
			}},
		{name: "caller not root",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				forge(t, cache, dir, d, nil)
				cache.root = false
			}},
		{name: "cache directory open to others",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				forge(t, cache, dir, d, nil)
				if err := os.Chmod(cache.dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "entry not root's",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				forge(t, cache, dir, d, nil)
				entries, _ := filepath.Glob(filepath.Join(cache.dir, "sha256-"+d.Encoded()+"-*"))
				for _, e := range entries {
					if err := os.Chown(e, 1000, 1000); err != nil {
						t.Fatal(err)
					}
				}
			}},
		{name: "blob not root's",
			setup: func(t *testing.T, cache *VerifyCache, dir string, d digest.Digest) {
				if err := os.Chown(blobPath(dir, d), 1000, 1000); err != nil {
					t.Fatal(err)
				}
				// The entry would match: it is the owner that rules it out.
				cache.root = true
				f, err := os.Open(blobPath(dir, d))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fi, _ := f.Stat()
				if _, ok := blobIdentity(d, f, fi); ok {
					t.Fatal("a blob owned by a user may be cached")
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, cache, pages := cachedLayout(t)
			writeInPlace(t, blobPath(dir, pages), 1000)
			tc.setup(t, cache, dir, pages)
			opts := OpenOptions{Cache: cache}
			if tc.opts != nil {
				opts = tc.opts(cache)
			}
			c, err := OpenCheckpointWith(dir, opts)
			if tc.trusted {
				if err != nil {
					t.Fatalf("a blob with a matching entry was hashed: %v", err)
				}
				c.Close()
				return
			}
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("got %v, want ErrDigestMismatch (the blob hashed)", err)
			}
		})
	}
}

func TestVerifyCacheNotRecordedForOthers(t *testing.T) {
	testutil.RequiresRoot(t)
	engine := makeEngineDir(t, engineFiles{"inventory.img": []byte("inv"), "pages-1.img": randBytes(6, 8192)})
	dir := filepath.Join(t.TempDir(), "image")
	cache := NewVerifyCache(filepath.Join(t.TempDir(), "verified"))
	cache.root = false
	if _, err := WriteCheckpoint(dir, engine, testConfig("user"), WriteOptions{Cache: cache}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpointWith(dir, OpenOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := os.Stat(cache.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a cache used by a caller other than root was written: %v", err)
	}
	// An image given to a user (WriteOptions.Owner) is not recorded either.
	dir2 := filepath.Join(t.TempDir(), "image")
	engine2 := makeEngineDir(t, engineFiles{"inventory.img": []byte("inv"), "pages-1.img": randBytes(7, 8192)})
	cache.root = true
	res, err := WriteCheckpoint(dir2, engine2, testConfig("user"), WriteOptions{Cache: cache, Owner: &Owner{UID: 1000, GID: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Layers {
		if cacheHolds(t, cache, dir2, l.Digest) {
			t.Errorf("layer %s of an image owned by a user is cached", l.Digest)
		}
	}
}

func TestWriteMovePages(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("digest given %v", trusted), func(t *testing.T) { testWriteMovePages(t, trusted) })
	}
}

func testWriteMovePages(t *testing.T, trusted bool) {
	testutil.RequiresRoot(t)
	data := randBytes(9, 64<<10)
	engine := makeEngineDir(t, engineFiles{"inventory.img": []byte("inv"), "pages-1.img": data})
	d := digest.FromBytes(data)
	dir := filepath.Join(t.TempDir(), "image")
	cache := NewVerifyCache(filepath.Join(t.TempDir(), "verified"))
	wo := WriteOptions{Cache: cache, MovePages: true}
	if trusted {
		wo.Digests = map[string]digest.Digest{"pages-1.img": d}
	}
	if _, err := WriteCheckpoint(dir, engine, testConfig("move"), wo); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(engine, "pages-1.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("moved pages file still in the engine directory: %v", err)
	}
	// Removing the engine directory leaves the blob as recorded.
	if err := os.RemoveAll(engine); err != nil {
		t.Fatal(err)
	}
	if !cacheHolds(t, cache, dir, d) {
		t.Fatal("moved pages blob not recorded as it is")
	}
	c, err := OpenCheckpointWith(dir, OpenOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	work := filepath.Join(t.TempDir(), "work")
	files, err := c.ExtractOpen(work)
	if err != nil {
		t.Fatal(err)
	}
	f := files["pages-1.img"]
	if f == nil || len(files) != 1 {
		t.Fatalf("ExtractOpen returned %v, want pages-1.img", files)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !equalBytes(got, data) {
		t.Fatalf("opened pages file differs from the engine's (%v)", err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(work, "pages-1.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ExtractOpen linked the pages file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "inventory.img")); err != nil {
		t.Fatalf("ExtractOpen left out the records: %v", err)
	}
	if !cacheHolds(t, cache, dir, d) {
		t.Fatal("ExtractOpen changed the blob's identity")
	}
}
