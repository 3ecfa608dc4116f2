package oci

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

const benchPagesSize = 512 << 20

// benchEngineDir writes an engine directory with one 512 MiB pages file
// and a few records, once per benchmark.
func benchEngineDir(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "engine")
	if err := os.Mkdir(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "pages-1.img"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	const block = 8 << 20
	for off := 0; off < benchPagesSize; off += block {
		if _, err := f.Write(randBytes(uint64(off/block), block)); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for i := range 16 {
		if err := os.WriteFile(filepath.Join(dir, "core-"+strconv.Itoa(i)+".img"), randBytes(uint64(i), 4096), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

var benchChunkings = []struct {
	name  string
	chunk int64
}{
	{"whole-file-hardlink", 0},
	{"chunks-64MiB", 64 << 20},
	{"chunks-32MiB", 32 << 20},
}

// BenchmarkWriteCheckpoint512MiB packs a 512 MiB pages file: hardlink and
// hash it whole, or split it into chunks hashed on every core.
func BenchmarkWriteCheckpoint512MiB(b *testing.B) {
	engine := benchEngineDir(b)
	for _, ch := range benchChunkings {
		b.Run(ch.name, func(b *testing.B) {
			b.SetBytes(benchPagesSize)
			root := b.TempDir()
			for i := 0; b.Loop(); i++ {
				dst := filepath.Join(root, strconv.Itoa(i))
				if _, err := WriteCheckpoint(dst, engine, testConfig("bench"), WriteOptions{ChunkSize: ch.chunk}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(dst); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkWriteCheckpoint512MiBPrecomputed packs the same file with its
// digest given (WriteOptions.Digests: the engine hashed while writing), so
// packing is a hardlink and the records' tar.
func BenchmarkWriteCheckpoint512MiBPrecomputed(b *testing.B) {
	engine := benchEngineDir(b)
	f, err := os.Open(filepath.Join(engine, "pages-1.img"))
	if err != nil {
		b.Fatal(err)
	}
	d, _, err := hashFile(f, benchPagesSize, make([]byte, hashBufSize), nil)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	opts := WriteOptions{Digests: map[string]digest.Digest{"pages-1.img": d}}
	b.SetBytes(benchPagesSize)
	root := b.TempDir()
	for i := 0; b.Loop(); i++ {
		dst := filepath.Join(root, strconv.Itoa(i))
		if _, err := WriteCheckpoint(dst, engine, testConfig("bench"), opts); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkOpenCheckpoint512MiB verifies a checkpoint with a 512 MiB pages
// file (every blob hashed), whole or in chunks.
func BenchmarkOpenCheckpoint512MiB(b *testing.B) {
	engine := benchEngineDir(b)
	for _, ch := range benchChunkings {
		b.Run(ch.name, func(b *testing.B) {
			dst := filepath.Join(b.TempDir(), "ckpt")
			if _, err := WriteCheckpoint(dst, engine, testConfig("bench"), WriteOptions{ChunkSize: ch.chunk}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchPagesSize)
			for b.Loop() {
				c, err := OpenCheckpoint(dst)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkExtract512MiB lays the engine files of a verified 512 MiB image
// out: hardlinks for whole files, parallel in-kernel copies for chunks.
func BenchmarkExtract512MiB(b *testing.B) {
	engine := benchEngineDir(b)
	for _, ch := range benchChunkings {
		b.Run(ch.name, func(b *testing.B) {
			dst := filepath.Join(b.TempDir(), "ckpt")
			if _, err := WriteCheckpoint(dst, engine, testConfig("bench"), WriteOptions{ChunkSize: ch.chunk}); err != nil {
				b.Fatal(err)
			}
			c, err := OpenCheckpoint(dst)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(benchPagesSize)
			root := b.TempDir()
			for i := 0; b.Loop(); i++ {
				work := filepath.Join(root, strconv.Itoa(i))
				if err := c.Extract(work); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(work); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSHA256Baseline is the machine's sha256 rate on one goroutine at
// the time of the run (other load included), to read the numbers above
// against: a single blob cannot hash faster than this.
func BenchmarkSHA256Baseline(b *testing.B) {
	buf := randBytes(1, 1<<20)
	b.SetBytes(int64(len(buf)))
	h := sha256.New()
	for b.Loop() {
		h.Write(buf)
	}
}
