package engine

// Pre-copy (DumpOptions.PreCopy): most of a tree's memory is copied while
// the tree runs, so that the dump that stops it only copies what was written
// meanwhile. This is the iterative pre-copy of live migration (CRIU's
// pre-dump, done here in one call):
//
//  1. stop the tree a moment (freeze, seize), create a dirty-page tracker
//     in every task (userfaultfd WP_ASYNC, dirty_linux.go) registered on its
//     private anonymous mappings, then let the tree run again;
//  2. write-protect those mappings (the costly part of arming: every page
//     table entry), list the pages present in them (PAGEMAP_SCAN) and copy
//     them from the running tree (process_vm_readv) into the image's
//     PreCopyPagesFile files, hashing them on the way;
//  3. dump as usual: the tree is stopped again and each tracked page that
//     PAGEMAP_SCAN does not report written since step 1 refers to its
//     pre-copied bytes (a generation-0 ParentPages entry of the task's
//     address space), exactly as an incremental dump refers to its parent.
//
// A page written after it was write-protected is WRITTEN at step 3 whether
// the copy read it before or after the write, so it is copied again; a page
// the copy read and nobody wrote since is what the copy holds; a page that
// appeared after the scan is not in the copy and is copied at step 3. The tree is stopped twice, each
// time for the work that cannot be done while it runs, instead of once for
// the whole copy.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
)

// preCopied is what step 2 copied.
type preCopied struct {
	tasks map[int]*preTask // by PID in the tree
	// digests are the sha256 of the files written, by name.
	digests map[string]string
}

// preTask is the pre-copied memory of one task.
type preTask struct {
	hostPid int
	runs    []parentRun // gen 0: pages
	pages   image.ParentPages
	data    image.PagesData
	files   []string
	tracker image.Tracker
}

// preCopy runs steps 1 and 2 for the tree of opts.Pid, with the copy
// buffers of pool; it also returns how long the tree was stopped. On error
// the tree runs on (a tracker may stay armed in some task, as after a dump
// that left it running) and no file is left.
func preCopy(ctx context.Context, opts DumpOptions, pool *pagePool) (_ *preCopied, stopped time.Duration, _ error) {
	start := time.Now()
	o := opts
	o.LeaveRunning = true
	d := &dumper{opts: o, byPid: map[int]*dtask{}, files: newFileTable(), shmems: newShmemTable(opts.ImageDir), pages: pool}
	plans, err := d.preCopyPlan(ctx)
	defer func() {
		for _, p := range plans {
			unix.Close(p.ufd)
		}
	}()
	if ferr := d.finish(err == nil); ferr != nil {
		err = errors.Join(err, ferr)
	}
	stopped = time.Since(start)
	if err != nil {
		return nil, stopped, err
	}
	if preCopyHook != nil {
		preCopyHook("copy")
	}
	pre := &preCopied{tasks: map[int]*preTask{}, digests: map[string]string{}}
	var copied uint64
	for _, p := range plans {
		// Protected first, then read: a page written after it was
		// protected is WRITTEN, whether the copy read it before or after.
		if err := writeProtect(p.ufd, p.tracker.Ranges); err != nil {
			logrus.WithError(err).WithField("pid", p.t.nspid).Warn("pre-copy: the task's pages are copied while it is stopped")
			continue
		}
		var regions []pageRegion
		for _, r := range p.tracker.Ranges {
			rs, err := presentPages(p.t.pid, r[0], r[1])
			if err != nil {
				pre.remove(opts.ImageDir)
				return nil, stopped, fmt.Errorf("pid %d: %w", p.t.nspid, err)
			}
			for _, g := range rs {
				if g.Categories&pageIsPresent != 0 && g.Categories&pageIsPfnzero == 0 {
					regions = append(regions, g)
				}
			}
		}
		pt, n, err := copyRunning(p.t, regions, opts.ImageDir, pool, pre.digests)
		if err != nil {
			pre.remove(opts.ImageDir)
			return nil, stopped, fmt.Errorf("pid %d: %w", p.t.nspid, err)
		}
		if pt != nil {
			pt.tracker = p.tracker
			pre.tasks[p.t.nspid] = pt
		}
		copied += n
	}
	logrus.WithFields(logrus.Fields{"pid": opts.Pid, "stopped": stopped, "copy": time.Since(start) - stopped, "bytes": copied}).Debug("pre-copy")
	if preCopyHook != nil {
		preCopyHook("copied")
	}
	if err := ctx.Err(); err != nil {
		pre.remove(opts.ImageDir)
		return nil, stopped, err
	}
	return pre, stopped, nil
}

// preCopyHook, set by tests, runs while the tree runs between the steps of
// a pre-copy: "copy" before the copy, "copied" after it.
var preCopyHook func(stage string)

// remove deletes the pre-copied files from dir.
func (p *preCopied) remove(dir string) {
	for _, pt := range p.tasks {
		for _, f := range pt.files {
			_ = os.Remove(filepath.Join(dir, f))
		}
	}
	for name := range p.digests {
		_ = os.Remove(filepath.Join(dir, name))
	}
}

// prePlan is a task whose tracker is registered, and the engine's copy of
// the tracker's fd (ufd).
type prePlan struct {
	t       *dtask
	tracker image.Tracker
	ufd     int
}

// preCopyPlan seizes the tree, closes the trackers earlier dumps left in it,
// and registers new ones (write-protecting is left for when the tree runs
// again: it walks every page table entry). A tree with a userfaultfd that is
// not the engine's cannot be tracked: ErrUnsupported.
func (d *dumper) preCopyPlan(ctx context.Context) (plans []prePlan, err error) {
	defer func() {
		if err != nil {
			for _, p := range plans {
				unix.Close(p.ufd)
			}
			plans = nil
		}
	}()
	if err := d.seize(ctx); err != nil {
		return nil, err
	}
	old, _ := newDirtyState("")
	if err := old.scanTrackers(d.tasks); err != nil {
		return nil, err
	}
	if old.foreign {
		return nil, fmt.Errorf("%w: a process of the tree uses userfaultfd", ErrUnsupported)
	}
	maps := map[*dtask][]procfs.Mapping{}
	for _, t := range d.tasks {
		if t.zombie || len(t.threads) == 0 {
			continue
		}
		lead := t.threads[0]
		// maps, not smaps: smaps walks the page tables, for nothing here.
		m, err := procfs.ReadMaps(t.pid)
		if err != nil {
			return plans, err
		}
		maps[t] = m
		if lead.gadget, err = findGadget(lead, m); err != nil {
			return plans, fmt.Errorf("pid %d: %w", t.nspid, err)
		}
		if len(t.intercepted) > 0 {
			// Signals caught while seizing are queued again by finish,
			// through a scratch page.
			if t.scratch, err = lead.sys("mmap scratch", unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
				unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0); err != nil {
				return plans, fmt.Errorf("pid %d: %w", t.nspid, err)
			}
		}
	}
	for _, t := range d.tasks {
		if maps[t] == nil {
			continue
		}
		lead := t.threads[0]
		var err error
		var ranges [][2]uint64
		for _, m := range maps[t] {
			if trackable(m) {
				ranges = append(ranges, [2]uint64{m.Start, m.End})
			}
		}
		var tr *image.Tracker
		var ufd int
		if len(old.trackers[t.pid]) == 1 {
			// The tracker an earlier dump left: registered on the new
			// mappings too and protected again below, it is as good as
			// a new one, without the walk of every page table entry
			// that closing it costs.
			for fd, ino := range old.trackers[t.pid] {
				tr, ufd, err = reuseTracker(t, fd, ino, ranges)
			}
		} else {
			for fd := range old.trackers[t.pid] {
				if _, err := lead.syscall(unix.SYS_CLOSE, uint64(fd)); err != nil && !errors.Is(err, unix.EBADF) {
					return plans, fmt.Errorf("pid %d: close the previous dirty-page tracker: %w", t.nspid, err)
				}
			}
			var rl unix.Rlimit
			if err := unix.Prlimit(t.pid, unix.RLIMIT_NOFILE, nil, &rl); err != nil {
				return plans, fmt.Errorf("pid %d: RLIMIT_NOFILE: %w", t.nspid, err)
			}
			tr, ufd, err = registerTracker(t, ranges, rl.Cur)
		}
		if err != nil {
			return plans, fmt.Errorf("pid %d: arm dirty-page tracking: %w", t.nspid, err)
		}
		if tr != nil {
			plans = append(plans, prePlan{t: t, tracker: *tr, ufd: ufd})
		}
	}
	return plans, nil
}

// reuseTracker takes the engine's tracker at fd (inode ino) in t and
// registers it on ranges (a range it covers already stays registered); it
// returns the tracker and the engine's copy of its fd.
func reuseTracker(t *dtask, fd int, ino uint64, ranges [][2]uint64) (*image.Tracker, int, error) {
	start, err := startTime(t.pid)
	if err != nil {
		return nil, -1, err
	}
	pidfd, err := unix.PidfdOpen(t.pid, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	ufd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	var armed [][2]uint64
	for _, r := range ranges {
		reg := [4]uint64{r[0], r[1] - r[0], uffdRegisterModeWP, 0}
		if err := uffdIoctl(ufd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"pid": t.nspid, "start": r[0], "end": r[1]}).Debug("register mapping for dirty tracking")
			continue
		}
		armed = append(armed, r)
	}
	if len(armed) == 0 {
		unix.Close(ufd)
		return nil, -1, nil
	}
	return &image.Tracker{Pid: t.nspid, HostPid: t.pid, StartTime: start, Fd: fd, Ino: ino, Ranges: armed}, ufd, nil
}

// trackable says whether a mapping (from /proc/PID/maps) is private
// anonymous memory, what vmaOf dumps as VmaAnon. A range that cannot be
// registered is skipped by registerTracker; the dump itself refuses the
// mappings it cannot save.
func trackable(m procfs.Mapping) bool {
	return m.Inode == 0 && !m.Shared && m.Path != "[vdso]" && m.Path != "[vvar]" && m.Path != "[vvar_vclock]" && m.Path != "[vsyscall]"
}

// copyRunning copies the planned regions of a running task into its
// pre-copy files (hashed, digests added to digests); it returns the copy
// and the bytes copied.
func copyRunning(t *dtask, regions []pageRegion, dir string, pool *pagePool, digests map[string]string) (*preTask, uint64, error) {
	if len(regions) == 0 {
		return nil, 0, nil
	}
	mem, err := os.Open("/proc/" + strconv.Itoa(t.pid) + "/mem")
	if err != nil {
		return nil, 0, err
	}
	defer mem.Close()
	pt := &preTask{hostPid: t.pid}
	pw, err := newPageWriter(t.pid, mem, pool, true, func(k int) (*os.File, error) {
		n := image.PreCopyPagesFile(t.nspid)
		if k > 0 {
			n = image.PreCopyPagesPartFile(t.nspid, k)
		}
		pt.files = append(pt.files, n)
		return os.OpenFile(filepath.Join(dir, n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	if err != nil {
		return nil, 0, err
	}
	defer pw.release()
	removeFiles := func() {
		for _, f := range pt.files {
			_ = os.Remove(filepath.Join(dir, f))
		}
	}
	for _, r := range regions {
		off, err := pw.add(r.Start, r.End-r.Start)
		if err != nil {
			pw.release()
			removeFiles()
			return nil, 0, err
		}
		if n := len(pt.runs); n > 0 && pt.runs[n-1].addr+pt.runs[n-1].len == r.Start && pt.runs[n-1].off+pt.runs[n-1].len == off {
			pt.runs[n-1].len += r.End - r.Start
		} else {
			pt.runs = append(pt.runs, parentRun{addr: r.Start, len: r.End - r.Start, off: off})
		}
	}
	parts, sums, err := pw.finish()
	if err != nil {
		removeFiles()
		return nil, 0, err
	}
	files := pt.files[:parts]
	pt.data = image.PagesData{Files: files, PartSize: pw.partSize, Size: pw.off}
	pt.pages = image.ParentPages{Name: files[0], Size: pw.off}
	if parts > 1 {
		pt.pages.Parts, pt.pages.PartSize = files[1:], pw.partSize
	} else {
		pt.data.PartSize = pw.off
	}
	for k, sum := range sums {
		digests[files[k]] = sum
	}
	sort.Slice(pt.runs, func(i, j int) bool { return pt.runs[i].addr < pt.runs[j].addr })
	return pt, pw.off, nil
}

// preparePreCopied is prepareTask for a dump after a pre-copy: the runs of
// the task's pre-copied pages, tracked by the tracker armed before the copy.
func (s *dirtyState) preparePreCopied(t *dtask) *dirtyTask {
	pt := s.pre.tasks[t.nspid]
	if pt == nil || pt.hostPid != t.pid {
		return nil
	}
	dt := &dirtyTask{index: map[string]int{}, gens: []image.ParentPages{pt.pages}, pgens: []image.PagesData{pt.data}, runs: pt.runs}
	dt.tracked = s.verifyTracker(t)
	return dt
}

// usePreCopy makes the dump refer to the pre-copied pages in dir.
func (s *dirtyState) usePreCopy(dir string, pre *preCopied) {
	s.pre = pre
	s.parentDir = dir
	s.parentBoot = s.bootID
	s.parentTrackers = map[int]image.Tracker{}
	for pid, pt := range pre.tasks {
		s.parentTrackers[pid] = pt.tracker
	}
}

// finishPreCopy accounts for the pre-copied files the image refers to and
// removes the others (a task that exited or exec'd since the copy).
func (d *dumper) finishPreCopy() {
	pre := d.dirty.pre
	if pre == nil {
		return
	}
	used := map[string]bool{}
	for _, dt := range d.dirty.tasks {
		for _, f := range dt.files {
			used[f.Name] = true
		}
	}
	for _, pt := range pre.tasks {
		if !used[pt.pages.Name] {
			for _, f := range pt.files {
				_ = os.Remove(filepath.Join(d.opts.ImageDir, f))
			}
			continue
		}
		d.result.PageFiles = append(d.result.PageFiles, pt.data.Files...)
		d.result.PageBytes += pt.data.Size
		d.result.PreCopiedBytes += pt.data.Size
		for _, f := range pt.data.Files {
			if sum, ok := pre.digests[f]; ok {
				if d.result.PageDigests == nil {
					d.result.PageDigests = map[string]string{}
				}
				d.result.PageDigests[f] = sum
			}
		}
	}
}
