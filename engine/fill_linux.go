package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
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

// fillQueue runs the page fills of a restore one after the other, on a
// goroutine of their own, while the ptrace thread goes on with the next
// tasks (their mappings, then everyone's files). Nothing before
// wait touches the tasks' restored memory: the injected calls pass their
// arguments in the gadget's scratch pages, which no fill writes.
type fillQueue struct {
	jobs chan fillJob
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

type fillJob struct {
	run     func() error
	release func()
}

// add queues a fill; release runs after it (or instead, after a failure).
func (q *fillQueue) add(run func() error, release func()) {
	if q.jobs == nil {
		q.jobs = make(chan fillJob, 64)
		go q.loop(q.jobs)
	}
	q.wg.Add(1)
	q.jobs <- fillJob{run, release}
}

func (q *fillQueue) loop(jobs <-chan fillJob) {
	for j := range jobs {
		if q.failed() == nil {
			if err := j.run(); err != nil {
				q.mu.Lock()
				q.err = err
				q.mu.Unlock()
			}
		}
		j.release()
		q.wg.Done()
	}
}

func (q *fillQueue) failed() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// wait waits for every queued fill and returns the first error.
func (q *fillQueue) wait() error {
	q.wg.Wait()
	return q.failed()
}

// stop waits for the fills and ends the goroutine.
func (q *fillQueue) stop() {
	q.wg.Wait()
	if q.jobs != nil {
		close(q.jobs)
		q.jobs = nil
	}
}

// writePages queues the copy of the page data of rt into it (r.fills): the
// pages files are mapped into the engine (mapPagesChain) here, and copied
// by a pageFill on the fill goroutine.
func (r *restorer) writePages(rt *rtask) error {
	mm := rt.rec.Mm
	// The task's own page data and, for an incremental image, the parents'
	// (every generation's parts mapped contiguously, pages_linux.go).
	files, release, err := mapPagesChain(r.opts.ImageDir, r.opts.PagesFiles, mm)
	if err != nil {
		return err
	}
	if files == nil {
		release()
		return nil
	}
	t := rt.lead()
	if err := t.openMem(); err != nil {
		release()
		return err
	}
	f := &pageFill{pid: rt.hostPid, mem: t.mem}
	for _, v := range mm.Vmas {
		writable := v.Prot&image.ProtWrite != 0
		for _, p := range v.Pages {
			f.add(files[p.File][p.Off:p.Off+p.Len], p.Addr, writable)
		}
	}
	r.fills.add(func() error {
		if err := f.run(); err != nil {
			return fmt.Errorf("pid %d: memory: %w", rt.rec.Pid, err)
		}
		return nil
	}, release)
	return nil
}

// openImageFile opens a file of the image by its name relative to
// ImageDir: from RestoreOptions.PagesFiles when it is there (a new open
// file description of the very file, with its own offset), else in ImageDir.
func (r *restorer) openImageFile(name string) (*os.File, error) {
	if f, ok := r.opts.PagesFiles[name]; ok {
		return os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	}
	return os.Open(filepath.Join(r.opts.ImageDir, name))
}
