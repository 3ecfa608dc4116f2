package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The page copy pipeline of a dump. The dumping goroutine reads runs of a
// task's memory with process_vm_readv into a batch buffer (>= 16 MiB:
// process_vm_readv is fastest in big chunks, KERNEL.md) and hands the
// filled batch on; one goroutine appends batches to the pages file while
// another computes its sha256 (the digest of the image blob, so that
// packing need not read the file again), so that reading, writing and
// hashing overlap on the cores there are. Buffers come from a pool shared
// by every task of the dump and are allocated once per dump.

const (
	copyBatch   = 16 << 20 // bytes per batch
	copyBuffers = 3        // batches in flight: one read, one written/hashed, one spare
	copyRuns    = 1024     // iovecs per process_vm_readv (IOV_MAX)
)

// pageBatch is one buffer of the pipeline and the memory runs it holds.
type pageBatch struct {
	buf     []byte
	used    int
	runs    []unix.RemoteIovec
	pending sync.WaitGroup // the writer and the hasher
}

// pagePool hands out the copy buffers of one dump.
type pagePool struct {
	free chan *pageBatch
	all  []*pageBatch
	mu   sync.Mutex
}

func newPagePool() *pagePool {
	return &pagePool{free: make(chan *pageBatch, copyBuffers)}
}

// get returns a free batch, allocating one while fewer than copyBuffers exist.
func (p *pagePool) get() (*pageBatch, error) {
	select {
	case b := <-p.free:
		return b, nil
	default:
	}
	p.mu.Lock()
	if len(p.all) < copyBuffers {
		// A pre-faulted anonymous mapping: no zeroing by the Go allocator,
		// no page faults inside process_vm_readv.
		buf, err := unix.Mmap(-1, 0, copyBatch, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("copy buffer: %w", err)
		}
		b := &pageBatch{buf: buf}
		p.all = append(p.all, b)
		p.mu.Unlock()
		return b, nil
	}
	p.mu.Unlock()
	return <-p.free, nil
}

func (p *pagePool) put(b *pageBatch) {
	b.used = 0
	b.runs = b.runs[:0]
	p.free <- b
}

// release unmaps every buffer; no writer may be running.
func (p *pagePool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.all {
		_ = unix.Munmap(b.buf)
	}
	p.all = nil
	p.free = make(chan *pageBatch, copyBuffers)
}

// pageWriter copies runs of one task's memory into its pages file.
type pageWriter struct {
	pid  int
	f    *os.File
	mem  *os.File
	pool *pagePool
	off  uint64
	cur  *pageBatch
	hash hash.Hash // nil: no digest

	toWrite, toHash chan *pageBatch
	workers         sync.WaitGroup
	inflight        sync.WaitGroup
	errMu           sync.Mutex
	err             error
}

// newPageWriter starts the pipeline of one pages file; with hashed, it also
// computes the file's sha256 (digest).
func newPageWriter(pid int, f, mem *os.File, pool *pagePool, hashed bool) *pageWriter {
	w := &pageWriter{pid: pid, f: f, mem: mem, pool: pool,
		toWrite: make(chan *pageBatch, copyBuffers), toHash: make(chan *pageBatch, copyBuffers)}
	w.workers.Add(1)
	go w.writeLoop()
	if hashed {
		w.hash = sha256.New()
		w.workers.Add(1)
		go w.hashLoop()
	}
	return w
}

func (w *pageWriter) setErr(err error) {
	w.errMu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.errMu.Unlock()
}

func (w *pageWriter) failed() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *pageWriter) writeLoop() {
	defer w.workers.Done()
	for b := range w.toWrite {
		if w.failed() == nil {
			if _, err := w.f.Write(b.buf[:b.used]); err != nil {
				w.setErr(fmt.Errorf("write pages of pid %d: %w", w.pid, err))
			}
		}
		b.pending.Done()
	}
}

func (w *pageWriter) hashLoop() {
	defer w.workers.Done()
	for b := range w.toHash {
		w.hash.Write(b.buf[:b.used])
		b.pending.Done()
	}
}

// add queues n bytes at addr and returns their offset in the pages file.
func (w *pageWriter) add(addr, n uint64) (uint64, error) {
	off := w.off
	for n > 0 {
		if w.cur == nil {
			b, err := w.pool.get()
			if err != nil {
				return 0, err
			}
			w.cur = b
		}
		b := w.cur
		k := min(n, uint64(len(b.buf)-b.used))
		b.runs = append(b.runs, unix.RemoteIovec{Base: uintptr(addr), Len: int(k)})
		b.used += int(k)
		w.off += k
		addr += k
		n -= k
		if b.used == len(b.buf) || len(b.runs) == copyRuns {
			if err := w.submit(); err != nil {
				return 0, err
			}
		}
	}
	return off, nil
}

// submit reads the current batch from the task and hands it to the writer
// (and the hasher).
func (w *pageWriter) submit() error {
	b := w.cur
	if b == nil || b.used == 0 {
		return w.failed()
	}
	w.cur = nil
	if err := w.read(b); err != nil {
		w.pool.put(b)
		return err
	}
	consumers := 1
	if w.hash != nil {
		consumers = 2
	}
	b.pending.Add(consumers)
	w.inflight.Add(1)
	go func() {
		b.pending.Wait()
		w.pool.put(b)
		w.inflight.Done()
	}()
	w.toWrite <- b
	if w.hash != nil {
		w.toHash <- b
	}
	return w.failed()
}

// read fills b with its runs: process_vm_readv, and /proc/PID/mem (which
// reads through PROT_NONE, FOLL_FORCE) for whatever it could not read.
func (w *pageWriter) read(b *pageBatch) error {
	local := []unix.Iovec{{Base: &b.buf[0]}}
	local[0].SetLen(b.used)
	got, err := unix.ProcessVMReadv(w.pid, local, b.runs, 0)
	if err == nil && got == b.used {
		return nil
	}
	if got < 0 {
		got = 0
	}
	pos := 0
	for _, r := range b.runs {
		end := pos + r.Len
		if end > got {
			from := max(pos, got)
			if _, err := w.mem.ReadAt(b.buf[from:end], int64(r.Base)+int64(from-pos)); err != nil {
				return fmt.Errorf("read memory of pid %d at %#x: %w", w.pid, r.Base, err)
			}
		}
		pos = end
	}
	return nil
}

// flush submits what is queued and waits until every byte is in the file.
func (w *pageWriter) flush() error {
	err := w.submit()
	w.inflight.Wait()
	if err != nil {
		return err
	}
	return w.failed()
}

// release stops the pipeline (after waiting for it); the buffers stay in
// the pool for the next task.
func (w *pageWriter) release() {
	if w.cur != nil {
		w.pool.put(w.cur)
		w.cur = nil
	}
	w.inflight.Wait()
	close(w.toWrite)
	close(w.toHash)
	w.workers.Wait()
}

// digest is "sha256:<hex>" of everything flushed, or "" without hashing.
func (w *pageWriter) digest() string {
	if w.hash == nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(w.hash.Sum(nil))
}
