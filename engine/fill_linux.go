package engine

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
)

// The page fill of a restore. Each run of saved pages is copied from the
// engine's read-only mapping of the pages files into the task with
// process_vm_writev: the kernel writes the task's fresh pages through its
// own direct map (faulting them in kernel-side, no exit per page in a
// guest with shadow paging) and reads the source through the engine's
// mapping (PMD-mapped when the page cache holds 2 MiB folios, mapPages).
// Big fills are cut into pieces that fillWorkers goroutines copy in
// parallel: the copy needs no ptrace, only the task's mm, so any thread
// may issue it while the ptrace thread goes on. Runs into read-only
// mappings go through /proc/PID/mem (FOLL_FORCE).

const (
	fillPiece   = 8 << 20  // bytes per process_vm_writev of a worker
	fillIovecs  = 1024     // iovecs per call (IOV_MAX)
	fillInline  = 16 << 20 // below this, one goroutine fills (no handoff)
	fillWorkers = 4        // at most; also bounded by GOMAXPROCS
)

// fillBatch is one process_vm_writev: local and remote iovecs of the same
// total length, or, with viaMem, one run written through /proc/PID/mem.
type fillBatch struct {
	local  []unix.Iovec
	remote []unix.RemoteIovec
	bytes  int
	viaMem bool
}

// pageFill copies page runs into one task.
type pageFill struct {
	pid     int
	mem     *os.File // the task's /proc/PID/mem, opened read-write
	batches []fillBatch
	total   int
}

// add queues len(src) bytes for addr; writable says the mapping is writable
// (else /proc/PID/mem is used).
func (f *pageFill) add(src []byte, addr uint64, writable bool) {
	if len(src) == 0 {
		return
	}
	f.total += len(src)
	if !writable {
		f.batches = append(f.batches, fillBatch{local: []unix.Iovec{iovec(src)}, remote: []unix.RemoteIovec{{Base: uintptr(addr), Len: len(src)}}, bytes: len(src), viaMem: true})
		return
	}
	for len(src) > 0 {
		var b *fillBatch
		if n := len(f.batches); n > 0 && !f.batches[n-1].viaMem && f.batches[n-1].bytes < fillPiece && len(f.batches[n-1].local) < fillIovecs {
			b = &f.batches[n-1]
		} else {
			f.batches = append(f.batches, fillBatch{})
			b = &f.batches[len(f.batches)-1]
		}
		k := min(len(src), fillPiece-b.bytes)
		b.local = append(b.local, iovec(src[:k]))
		b.remote = append(b.remote, unix.RemoteIovec{Base: uintptr(addr), Len: k})
		b.bytes += k
		src, addr = src[k:], addr+uint64(k)
	}
}

func iovec(b []byte) unix.Iovec {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	return iov
}

// run copies every batch, in parallel when there is enough to copy.
func (f *pageFill) run() error {
	workers := min(fillWorkers, runtime.GOMAXPROCS(0), len(f.batches))
	if f.total < fillInline || workers < 2 {
		for i := range f.batches {
			if err := f.write(&f.batches[i]); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next atomic.Int64
		stop atomic.Bool
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(f.batches) {
					return
				}
				if err := f.write(&f.batches[i]); err != nil {
					stop.Store(true)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// write copies one batch: process_vm_writev, then /proc/PID/mem for
// whatever it could not write (a mapping it refuses).
func (f *pageFill) write(b *fillBatch) error {
	n := 0
	if !b.viaMem {
		var err error
		n, err = unix.ProcessVMWritev(f.pid, b.local, b.remote, 0)
		if err == nil && n == b.bytes {
			return nil
		}
		n = max(n, 0)
	}
	pos := 0
	for i, rv := range b.remote {
		end := pos + rv.Len
		if end > n {
			from := max(pos, n)
			src := unsafe.Slice(b.local[i].Base, b.local[i].Len)[from-pos:]
			if _, err := f.mem.WriteAt(src, int64(rv.Base)+int64(from-pos)); err != nil {
				return fmt.Errorf("write %d bytes at %#x of pid %d: %w", len(src), uint64(rv.Base)+uint64(from-pos), f.pid, err)
			}
		}
		pos = end
	}
	return nil
}

// writePages copies the page data of rt into it: the pages files are
// mapped into the engine (mapPagesChain) and copied by a pageFill.
func (r *restorer) writePages(rt *rtask) error {
	mm := rt.rec.Mm
	// The task's own page data and, for an incremental image, the parents'
	// (every generation's parts mapped contiguously, pages_linux.go).
	files, release, err := mapPagesChain(r.opts.ImageDir, r.opts.PagesFiles, mm)
	if err != nil {
		return err
	}
	defer release()
	if files == nil {
		return nil
	}
	t := rt.lead()
	if err := t.openMem(); err != nil {
		return err
	}
	f := &pageFill{pid: rt.hostPid, mem: t.mem}
	for _, v := range mm.Vmas {
		writable := v.Prot&image.ProtWrite != 0
		for _, p := range v.Pages {
			f.add(files[p.File][p.Off:p.Off+p.Len], p.Addr, writable)
		}
	}
	return f.run()
}
