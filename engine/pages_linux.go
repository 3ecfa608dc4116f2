package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
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
	buf   []byte
	used  int
	start uint64 // offset of buf[0] in the task's pages data
	// preset bytes at the start of buf were copied in (addBytes); runs
	// fill buf[preset:used].
	preset  int
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
	b.used, b.preset = 0, 0
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

// hugePageSize is the size of a PMD mapping on x86-64.
const hugePageSize = 2 << 20

// pagesPartSize bounds each file of a task's page data (image.Mm.PagesParts):
// the packer and the verifier hash several files at once, one per core,
// where sha256 over one big file runs on one core only.
// A variable (a multiple of the page size) so that tests can split small
// images.
var pagesPartSize uint64 = 64 << 20

// pageHashers is how many goroutines hash the parts (part k: hasher k%n).
const pageHashers = 2

// pageWriter copies runs of one task's memory into its pages files.
type pageWriter struct {
	pid  int
	mem  *os.File
	pool *pagePool
	open func(part int) (*os.File, error) // creates part k's file
	off  uint64                           // bytes queued so far
	// partSize is pagesPartSize when the writer was made.
	partSize uint64
	cur      *pageBatch
	hashed   bool

	files   []*os.File // the writer goroutine's, until flush
	hashes  [pageHashers]map[int]hash.Hash
	toWrite chan *pageBatch
	toHash  [pageHashers]chan *pageBatch
	workers sync.WaitGroup
	// inflight counts submitted batches not yet written and hashed.
	inflight sync.WaitGroup
	errMu    sync.Mutex
	err      error
}

// newPageWriter creates part 0 (open(0)) and starts the pipeline; with
// hashed, it also computes each part's sha256 (finish).
func newPageWriter(pid int, mem *os.File, pool *pagePool, hashed bool, open func(part int) (*os.File, error)) (*pageWriter, error) {
	f, err := open(0)
	if err != nil {
		return nil, err
	}
	w := &pageWriter{pid: pid, mem: mem, pool: pool, open: open, hashed: hashed, partSize: pagesPartSize,
		files: []*os.File{f}, toWrite: make(chan *pageBatch, copyBuffers)}
	w.workers.Add(1)
	go w.writeLoop()
	if hashed {
		for i := range w.toHash {
			w.hashes[i] = map[int]hash.Hash{}
			w.toHash[i] = make(chan *pageBatch, copyBuffers)
			w.workers.Add(1)
			go w.hashLoop(i)
		}
	}
	return w, nil
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

// pieces calls fn for each part-contained piece of b's bytes.
func pieces(b *pageBatch, partSize uint64, fn func(part int, data []byte)) {
	off, data := b.start, b.buf[:b.used]
	for len(data) > 0 {
		part := int(off / partSize)
		n := min(uint64(len(data)), uint64(part+1)*partSize-off)
		fn(part, data[:n])
		off += n
		data = data[n:]
	}
}

func (w *pageWriter) writeLoop() {
	defer w.workers.Done()
	for b := range w.toWrite {
		pieces(b, w.partSize, func(part int, data []byte) {
			if w.failed() != nil {
				return
			}
			for len(w.files) <= part {
				f, err := w.open(len(w.files))
				if err != nil {
					w.setErr(err)
					return
				}
				w.files = append(w.files, f)
			}
			if _, err := w.files[part].Write(data); err != nil {
				w.setErr(fmt.Errorf("write pages of pid %d: %w", w.pid, err))
			}
		})
		b.pending.Done()
	}
}

func (w *pageWriter) hashLoop(i int) {
	defer w.workers.Done()
	hs := w.hashes[i]
	for b := range w.toHash[i] {
		pieces(b, w.partSize, func(part int, data []byte) {
			if part%pageHashers != i {
				return
			}
			h := hs[part]
			if h == nil {
				h = sha256.New()
				hs[part] = h
			}
			h.Write(data)
		})
		b.pending.Done()
	}
}

// batch returns the batch being filled, taking a new one from the pool
// (starting at the current offset) when there is none.
func (w *pageWriter) batch() (*pageBatch, error) {
	if w.cur == nil {
		b, err := w.pool.get()
		if err != nil {
			return nil, err
		}
		b.start = w.off
		w.cur = b
	}
	return w.cur, nil
}

// add queues n bytes at addr and returns their offset in the pages data.
func (w *pageWriter) add(addr, n uint64) (uint64, error) {
	off := w.off
	for n > 0 {
		b, err := w.batch()
		if err != nil {
			return 0, err
		}
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

// addBytes queues bytes already read from the task (an incremental dump's
// compared pages) and returns their offset in the pages data.
func (w *pageWriter) addBytes(data []byte) (uint64, error) {
	if w.cur != nil && len(w.cur.runs) > 0 {
		// Copied bytes go before a batch's runs: start a new batch.
		if err := w.submit(); err != nil {
			return 0, err
		}
	}
	off := w.off
	for len(data) > 0 {
		b, err := w.batch()
		if err != nil {
			return 0, err
		}
		k := copy(b.buf[b.used:], data)
		b.used += k
		b.preset = b.used
		w.off += uint64(k)
		data = data[k:]
		if b.used == len(b.buf) {
			if err := w.submit(); err != nil {
				return 0, err
			}
		}
	}
	return off, nil
}

// submit reads the current batch from the task and hands it to the writer
// and the hashers.
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
	if w.hashed {
		consumers += pageHashers
	}
	b.pending.Add(consumers)
	w.inflight.Add(1)
	go func() {
		b.pending.Wait()
		w.pool.put(b)
		w.inflight.Done()
	}()
	w.toWrite <- b
	if w.hashed {
		for _, c := range w.toHash {
			c <- b
		}
	}
	return w.failed()
}

// read fills b with its runs: process_vm_readv, and /proc/PID/mem (which
// reads through PROT_NONE, FOLL_FORCE) for whatever it could not read.
func (w *pageWriter) read(b *pageBatch) error {
	want := b.used - b.preset
	if want == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b.buf[b.preset]}}
	local[0].SetLen(want)
	got, err := unix.ProcessVMReadv(w.pid, local, b.runs, 0)
	if err == nil && got == want {
		return nil
	}
	if got < 0 {
		got = 0
	}
	got += b.preset
	pos := b.preset
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

// finish writes out what is queued, stops the pipeline and closes the
// files. It returns how many parts the data has and, when hashed, the
// "sha256:<hex>" digest of each part.
func (w *pageWriter) finish() (parts int, digests []string, err error) {
	err = w.submit()
	w.release()
	if err == nil {
		err = w.failed()
	}
	for _, f := range w.files {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	w.files = nil
	if err != nil {
		return 0, nil, err
	}
	parts = max(1, int((w.off+w.partSize-1)/w.partSize))
	if w.hashed {
		for k := 0; k < parts; k++ {
			h := w.hashes[k%pageHashers][k]
			if h == nil {
				h = sha256.New() // an empty pages file
			}
			digests = append(digests, "sha256:"+hex.EncodeToString(h.Sum(nil)))
		}
	}
	return parts, digests, nil
}

// release stops the pipeline (waiting for what is in flight); the buffers
// stay in the pool for the next task. Safe to call more than once.
func (w *pageWriter) release() {
	if w.cur != nil {
		w.pool.put(w.cur)
		w.cur = nil
	}
	w.inflight.Wait()
	if w.toWrite != nil {
		close(w.toWrite)
		for _, c := range w.toHash {
			if c != nil {
				close(c)
			}
		}
		w.workers.Wait()
		w.toWrite = nil
	}
	for _, f := range w.files {
		f.Close()
	}
	w.files = nil
}

// mapPagesFrom maps page data (every file of it at its offset in the
// concatenation, contiguous) read-only into the engine, pre-faulted with
// populate; unmap releases it. Names are relative to dir: plain names (the
// image's own) or ones under parent/ (image.ValidParentPagesName); a file
// that open holds (by name) is taken from there instead of opened in dir.
func mapPagesFrom(dir string, open map[string]*os.File, d image.PagesData, populate bool) (data []byte, unmap func(), err error) {
	if d.Size == 0 || len(d.Files) == 0 || d.PartSize == 0 || uint64(len(d.Files)-1)*d.PartSize >= d.Size {
		return nil, nil, fmt.Errorf("page data of %d bytes in %d files of %d bytes", d.Size, len(d.Files), d.PartSize)
	}
	// Reserve the whole range, then map each part over its place in it. The
	// range starts on a huge page boundary (parts are multiples of it):
	// page cache held in 2 MiB folios (what big sequential writes make) is
	// then mapped with PMD entries, which makes copying out of it twice as
	// fast here (a paravirtual guest with shadow paging pays a hypervisor
	// exit for every 4 KiB page the kernel first touches through a user
	// mapping, but one for a whole 2 MiB one, KERNEL.md).
	whole, err := unix.Mmap(-1, 0, int(d.Size)+hugePageSize, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, fmt.Errorf("reserve %d bytes for the pages: %w", d.Size, err)
	}
	unmap = func() { _ = unix.Munmap(whole) }
	skip := (hugePageSize - int(uintptr(unsafe.Pointer(&whole[0]))%hugePageSize)) % hugePageSize
	res := whole[skip : skip+int(d.Size) : skip+int(d.Size)]
	for k, name := range d.Files {
		if filepath.Base(name) != name && !image.ValidParentPagesName(name) || name == "." || name == ".." {
			unmap()
			return nil, nil, fmt.Errorf("pages file name %q", name)
		}
		n := d.Len(k)
		if n == 0 {
			unmap()
			return nil, nil, fmt.Errorf("pages file %s: no data for it", name)
		}
		if err := mapPart(filepath.Join(dir, name), open[name], &res[uint64(k)*d.PartSize], n, populate); err != nil {
			unmap()
			return nil, nil, err
		}
	}
	return res, unmap, nil
}

// mapPart maps the first n bytes of the file at path (or f, already open)
// at addr (MAP_FIXED, inside a reservation of the caller).
func mapPart(path string, f *os.File, addr *byte, n uint64, populate bool) error {
	if f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			return err
		}
		defer f.Close()
	}
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) < n {
		return fmt.Errorf("pages file %s is shorter than %d bytes", path, n)
	}
	_, _, e := unix.Syscall6(unix.SYS_MMAP, uintptr(unsafe.Pointer(addr)), uintptr(n), unix.PROT_READ,
		uintptr(unix.MAP_PRIVATE|unix.MAP_FIXED), f.Fd(), 0)
	if e != 0 {
		return fmt.Errorf("map %s: %w", path, e)
	}
	if populate {
		// MADV_HUGEPAGE first: what is not in the page cache yet is read
		// in 2 MiB folios, which the populate then maps with PMD entries
		// (mapPages). Both are only hints: the copy faults in the rest.
		mem := unsafe.Slice(addr, n)
		_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
		if err := unix.Madvise(mem, unix.MADV_POPULATE_READ); err != nil {
			_ = unix.Madvise(mem, unix.MADV_WILLNEED)
		}
	}
	return nil
}

// mapPagesChain maps the page data that the runs of mm refer to (files
// open holds are taken from there, the others opened in dir): index 0 is
// the task's own (PagesFile and its parts), i the data of an earlier
// generation, mm.ParentPages[i-1] (each one contiguous, whatever its parts).
// Nil when there are no pages.
func mapPagesChain(dir string, open map[string]*os.File, mm *image.Mm) ([][]byte, func(), error) {
	files := make([][]byte, len(mm.ParentPages)+1)
	var unmaps []func()
	release := func() {
		for _, u := range unmaps {
			u()
		}
	}
	for i := range files {
		d, _ := mm.PagesDataOf(i)
		if d.Size == 0 {
			continue
		}
		b, unmap, err := mapPagesFrom(dir, open, d, true)
		if err != nil {
			release()
			return nil, nil, err
		}
		files[i] = b
		unmaps = append(unmaps, unmap)
	}
	if len(unmaps) == 0 {
		return nil, release, nil
	}
	return files, release, nil
}
