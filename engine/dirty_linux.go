package engine

// Incremental dumps: dirty-page tracking with userfaultfd WP_ASYNC and
// PAGEMAP_SCAN (this kernel has no soft-dirty bits), and page runs that refer
// to the pages files of earlier generations.
//
// Measured on Linux 6.18 (probe programs, see the package documentation):
//   - a userfaultfd's registrations end with its last file reference: once
//     the task's copy and the engine's copy are both closed, smaps loses the
//     "uw" flag and PAGEMAP_SCAN reports every page written. The tracker is
//     therefore kept open in the task itself, at a high fd number, and
//     marked so that any later dump recognises it (O_APPEND set on the file,
//     which no application sets on a userfaultfd, and features WP_ASYNC
//     only): dumps skip it, the next arming closes it.
//   - the kernel turns WP_UNPOPULATED on with WP_ASYNC: every page that was
//     never populated gets a PTE marker when the range is write-protected,
//     and PAGEMAP_SCAN reports markers as PAGE_IS_SWAPPED (not present, not
//     written). /proc/PID/pagemap shows them as swap entries of type 31 and
//     offset 1 (PTE_MARKER_UFFD_WP): dumps drop those, they hold no data.
//   - after MADV_DONTNEED the page is gone from the scan (anonymous zap drops
//     the marker too): it is simply not dumped, and restored as zeros.
//   - each userfaultfd has its own inode: the inode recorded in the parent
//     image tells whether the tracker found in the task is the one armed
//     right after the parent was taken (a tracker re-armed by a later dump,
//     a restarted task, another boot: all differ, and tracking is not used).
//
// A page of a tracked mapping (private anonymous, "uw" in smaps, the
// parent's tracker verified) that PAGEMAP_SCAN does not report written is
// the parent's page: the run refers to the parent's file. Every other page
// that the parent also had is read and compared with the parent's bytes
// (a full read, but only changed pages are written); pages the parent did
// not have are written. A wrong image can only come from a wrong WRITTEN
// bit, never from a missing tracker.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
)

// userfaultfd ABI (linux/userfaultfd.h), absent from x/sys.
const (
	uffdUserModeOnly         = 1
	uffdAPI                  = 0xAA
	uffdioAPI                = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister           = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioWriteprotect       = 0xC018AA06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	uffdRegisterModeWP       = 1 << 1
	uffdWriteprotectModeWP   = 1 << 0
	uffdFeatureWPUnpopulated = 1 << 13
	uffdFeatureWPAsync       = 1 << 15
	uffdFeatureInitialized   = 1 << 31 // internal bit, shown in fdinfo

	pageIsWritten = 1 << 1 // PAGE_IS_WRITTEN

	// trackerMark are the file status flags of the engine's tracker.
	trackerMark = unix.O_APPEND | unix.O_NONBLOCK
	// trackerFdMax bounds the fd number of the tracker in the task.
	trackerFdMax = 1024
)

// dirtyState is the incremental side of one dump.
type dirtyState struct {
	parentDir string
	// parentFiles are parent pages files held open (DumpOptions.ParentFiles).
	parentFiles map[string]*os.File
	parentInv   *image.Inventory
	// parentTrackers are the trackers the parent recorded, by PID in the tree.
	parentTrackers map[int]image.Tracker
	parentBoot     string
	bootID         string
	scanned        bool
	// trackers are the engine's trackers found in each task (host PID -> fds).
	trackers map[int]map[int]uint64
	// foreign is set when some task holds a userfaultfd that is not ours.
	foreign bool
	tasks   map[*dtask]*dirtyTask
	// maps are the parents' page data mapped for comparisons, by name (of
	// the first file, relative to the new image).
	maps   map[string][]byte
	unmaps []func()
	// armed are the trackers armed after this dump.
	armed []image.Tracker
	// pre, after a pre-copy, stands for the parent (precopy_linux.go).
	pre   *preCopied
	stats incrStats
}

// incrStats count what an incremental dump did with its pages.
type incrStats struct {
	Reused, Compared, Written uint64
}

type dirtyTask struct {
	// tracked says WRITTEN can be trusted in the task's "uw" mappings.
	tracked bool
	// runs are the parent's page runs, by address, with the page data they
	// are in (an index in gens).
	runs []parentRun
	// gens are the page data the parent's runs refer to (its own and its
	// parents'), named relative to the new image, and as the parent image
	// names them (pgens, relative to the parent directory).
	gens  []image.ParentPages
	pgens []image.PagesData
	// files are the page data the new image's runs refer to, index by name.
	files []image.ParentPages
	index map[string]int
	buf   []byte
}

type parentRun struct {
	addr, len, off uint64
	gen            int
}

func newDirtyState(parentDir string) (*dirtyState, error) {
	s := &dirtyState{parentDir: parentDir, trackers: map[int]map[int]uint64{}, tasks: map[*dtask]*dirtyTask{}, maps: map[string][]byte{}}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		s.bootID = strings.TrimSpace(string(b))
	}
	if parentDir == "" {
		return s, nil
	}
	inv, err := image.ReadInventory(parentDir)
	if err != nil {
		return nil, fmt.Errorf("parent image %s: %w", parentDir, err)
	}
	s.parentInv = inv
	tr, err := image.ReadTracking(parentDir)
	if err != nil {
		return nil, fmt.Errorf("parent image %s: %w", parentDir, err)
	}
	s.parentTrackers = map[int]image.Tracker{}
	if tr != nil {
		s.parentBoot = tr.BootID
		for _, t := range tr.Tasks {
			s.parentTrackers[t.Pid] = t
		}
	}
	return s, nil
}

// release unmaps the parent files.
func (s *dirtyState) release() {
	for _, u := range s.unmaps {
		u()
	}
	s.unmaps, s.maps = nil, map[string][]byte{}
}

// isTracker says whether fd of the task with host PID pid is an engine tracker.
func (s *dirtyState) isTracker(pid, fd int) bool {
	_, ok := s.trackers[pid][fd]
	return ok
}

// scanTrackers finds the engine's trackers (and foreign userfaultfds) in
// every task of the tree, once.
func (s *dirtyState) scanTrackers(tasks []*dtask) error {
	if s.scanned {
		return nil
	}
	s.scanned = true
	for _, t := range tasks {
		if t.zombie {
			continue
		}
		fds, err := listFds(t.pid)
		if err != nil {
			return err
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", t.pid, fd))
			if err != nil || link != "anon_inode:[userfaultfd]" {
				continue
			}
			fi, err := procfs.ReadFdinfo(t.pid, fd)
			if err != nil {
				return err
			}
			if !isTrackerInfo(fi) {
				s.foreign = true
				continue
			}
			if s.trackers[t.pid] == nil {
				s.trackers[t.pid] = map[int]uint64{}
			}
			s.trackers[t.pid][fd] = fi.Ino
		}
	}
	return nil
}

// isTrackerInfo recognises the engine's tracker by its fdinfo: the mark in
// its flags and features WP_ASYNC (+ the WP_UNPOPULATED the kernel adds).
func isTrackerInfo(fi *procfs.Fdinfo) bool {
	if fi.Flags&trackerMark != trackerMark {
		return false
	}
	// "API:\taa:<features>:<available>"
	f := strings.Split(fi.Extra["API"], ":")
	if len(f) < 2 {
		return false
	}
	feat, err := strconv.ParseUint(strings.TrimSpace(f[1]), 16, 64)
	if err != nil {
		return false
	}
	return feat&^(uffdFeatureWPAsync|uffdFeatureWPUnpopulated|uffdFeatureInitialized) == 0 && feat&uffdFeatureWPAsync != 0
}

// ownsUW says whether a "uw" (userfaultfd write-protect) mapping of the
// tree can be taken as the engine's own registration: a tracker of ours is
// in the tree and no other userfaultfd is.
func (s *dirtyState) ownsUW(m procfs.Mapping) bool {
	return len(s.trackers) > 0 && !s.foreign && m.Inode == 0 && !m.Shared
}

// startTime is field 22 of /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// prepareTask loads the parent's record of t and checks its tracker; it
// returns nil when t has no parent record (a new task: dumped in full).
func (s *dirtyState) prepareTask(t *dtask) (*dirtyTask, error) {
	if s.pre != nil {
		return s.preparePreCopied(t), nil
	}
	if s.parentInv == nil {
		return nil, nil
	}
	found := false
	for _, p := range s.parentInv.Tasks {
		found = found || p == t.nspid
	}
	if !found {
		return nil, nil
	}
	prec, err := image.ReadTask(s.parentDir, t.nspid)
	if err != nil {
		return nil, fmt.Errorf("parent image %s: %w", s.parentDir, err)
	}
	if prec.Zombie || prec.Mm == nil {
		return nil, nil
	}
	dt := &dirtyTask{index: map[string]int{}}
	pm := prec.Mm
	// The parent's page data (each generation's files, split or not), named
	// relative to the new image, checked to be there.
	dt.gens = make([]image.ParentPages, len(pm.ParentPages)+1)
	dt.pgens = make([]image.PagesData, len(pm.ParentPages)+1)
	for i := range dt.gens {
		data, _ := pm.PagesDataOf(i)
		if data.Size == 0 {
			continue
		}
		for k, name := range data.Files {
			var fi os.FileInfo
			var err error
			if f, ok := s.parentFiles[name]; ok {
				fi, err = f.Stat()
			} else {
				fi, err = os.Stat(filepath.Join(s.parentDir, name))
			}
			if err != nil {
				return nil, fmt.Errorf("parent image %s: %w", s.parentDir, err)
			}
			if n := data.Len(k); uint64(fi.Size()) < n {
				return nil, fmt.Errorf("parent image %s: %s holds %d bytes, its records say %d", s.parentDir, name, fi.Size(), n)
			}
		}
		dt.gens[i], dt.pgens[i] = data.Parent(), data
	}
	for _, v := range pm.Vmas {
		for _, p := range v.Pages {
			dt.runs = append(dt.runs, parentRun{addr: p.Addr, len: p.Len, off: p.Off, gen: p.File})
		}
	}
	sort.Slice(dt.runs, func(i, j int) bool { return dt.runs[i].addr < dt.runs[j].addr })
	dt.tracked = s.verifyTracker(t)
	return dt, nil
}

// verifyTracker says whether the tracker the parent armed in t is still
// there, the same one, in the same task.
func (s *dirtyState) verifyTracker(t *dtask) bool {
	tr, ok := s.parentTrackers[t.nspid]
	if !ok || s.bootID == "" || s.parentBoot != s.bootID || tr.HostPid != t.pid {
		return false
	}
	if st, err := startTime(t.pid); err != nil || st != tr.StartTime {
		return false
	}
	ino, ok := s.trackers[t.pid][tr.Fd]
	return ok && ino == tr.Ino
}

// pageRegions is presentPages for dumpMm, with the trackers' PTE markers
// removed (they hold no data). It also prepares the task's incremental state.
func (d *dumper) pageRegions(t *dtask, maps []procfs.Mapping, top uint64) ([]pageRegion, error) {
	s := d.dirty
	if err := s.scanTrackers(d.tasks); err != nil {
		return nil, err
	}
	dt, err := s.prepareTask(t)
	if err != nil {
		return nil, err
	}
	if dt != nil {
		s.tasks[t] = dt
	}
	regions, err := presentPages(t.pid, 0, top)
	if err != nil {
		return nil, err
	}
	var uw []procfs.Mapping
	for _, m := range maps {
		if m.HasFlag("uw") && s.ownsUW(m) {
			uw = append(uw, m)
		}
	}
	if len(uw) == 0 {
		return regions, nil
	}
	return dropMarkers(t.pid, regions, uw)
}

// dropMarkers removes the pages of the write-protected mappings uw that are
// uffd-wp PTE markers: swap entries of type 31, offset 1 in pagemap.
func dropMarkers(pid int, regions []pageRegion, uw []procfs.Mapping) ([]pageRegion, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const present, swapped = 1 << 63, 1 << 62
	const marker = swapped | 31 | 1<<5 // type 31, offset 1 (PTE_MARKER_UFFD_WP)
	var out []pageRegion
	buf := make([]byte, 8*4096)
	mi := 0
	for _, r := range regions {
		if r.Categories&(pageIsSwapped|pageIsPresent) != pageIsSwapped || r.Categories&pageIsWritten != 0 {
			out = append(out, r)
			continue
		}
		for mi < len(uw) && uw[mi].End <= r.Start {
			mi++
		}
		if mi == len(uw) || uw[mi].Start >= r.End {
			out = append(out, r)
			continue
		}
		// Not present, not written: markers, or pages really swapped out.
		for a := r.Start; a < r.End; {
			n := min((r.End-a)/image.PageSize, uint64(len(buf)/8))
			k, err := f.ReadAt(buf[:8*n], int64(a/image.PageSize*8))
			if k < int(8*n) {
				return nil, fmt.Errorf("read pagemap of pid %d at %#x: %v", pid, a, err)
			}
			for i := uint64(0); i < n; i++ {
				e := *(*uint64)(unsafe.Pointer(&buf[8*i]))
				pa := a + i*image.PageSize
				inUW := false
				for _, m := range uw[mi:] {
					if m.Start > pa {
						break
					}
					inUW = inUW || pa < m.End
				}
				if inUW && e&(present|swapped|(1<<55-1)) == marker {
					continue
				}
				if l := len(out); l > 0 && out[l-1].End == pa && out[l-1].Categories == r.Categories {
					out[l-1].End += image.PageSize
				} else {
					out = append(out, pageRegion{pa, pa + image.PageSize, r.Categories})
				}
			}
			a += n * image.PageSize
		}
	}
	return out, nil
}

// incremental says whether t's pages go through emit.
func (d *dumper) incremental(t *dtask) bool { return d.dirty.tasks[t] != nil }

// emit records the pages [a, e) of mapping v (smaps entry m, PAGEMAP_SCAN
// categories cat) of an incremental task: the parent's where they are
// proven or found unchanged, written to the task's pages file otherwise.
func (d *dumper) emit(t *dtask, pw *pageWriter, v *image.Vma, m procfs.Mapping, a, e, cat uint64) error {
	dt := d.dirty.tasks[t]
	// In a tracked mapping WRITTEN says it all: written pages are written,
	// the others are the parent's. Elsewhere the parent's bytes are compared.
	tracked := dt.tracked && v.Kind == image.VmaAnon && m.HasFlag("uw")
	if tracked && cat&pageIsWritten != 0 {
		return d.writeOwn(dt, pw, v, a, e)
	}
	i := sort.Search(len(dt.runs), func(i int) bool { return dt.runs[i].addr+dt.runs[i].len > a })
	for a < e {
		var pr *parentRun
		if i < len(dt.runs) && dt.runs[i].addr < e {
			pr = &dt.runs[i]
		}
		if pr == nil || pr.addr > a {
			// Pages the parent did not have.
			end := e
			if pr != nil {
				end = pr.addr
			}
			if err := d.writeOwn(dt, pw, v, a, end); err != nil {
				return err
			}
			a = end
			continue
		}
		end := min(e, pr.addr+pr.len)
		off := pr.off + (a - pr.addr)
		if tracked {
			dt.ref(v, pr.gen, a, end-a, off)
			d.dirty.stats.Reused += end - a
		} else if err := d.compare(t, dt, pw, v, pr.gen, a, end, off); err != nil {
			return err
		}
		a = end
		if a == pr.addr+pr.len {
			i++
		}
	}
	return nil
}

func (d *dumper) writeOwn(dt *dirtyTask, pw *pageWriter, v *image.Vma, a, e uint64) error {
	off, err := pw.add(a, e-a)
	if err != nil {
		return err
	}
	dt.appendRun(v, image.PageRun{Addr: a, Len: e - a, Off: off})
	d.dirty.stats.Written += e - a
	return nil
}

// ref records that [a, a+n) is at off in the parent's page data gen.
func (dt *dirtyTask) ref(v *image.Vma, gen int, a, n, off uint64) {
	g := dt.gens[gen]
	idx, ok := dt.index[g.Name]
	if !ok {
		dt.files = append(dt.files, g)
		idx = len(dt.files)
		dt.index[g.Name] = idx
	}
	dt.appendRun(v, image.PageRun{Addr: a, Len: n, Off: off, File: idx})
}

func (dt *dirtyTask) appendRun(v *image.Vma, r image.PageRun) {
	if n := len(v.Pages); n > 0 {
		p := &v.Pages[n-1]
		if p.File == r.File && p.Addr+p.Len == r.Addr && p.Off+p.Len == r.Off {
			p.Len += r.Len
			return
		}
	}
	v.Pages = append(v.Pages, r)
}

// compare reads [a, e) from the task and keeps the parent's bytes (at off in
// its page data gen) for every page that is still the same.
func (d *dumper) compare(t *dtask, dt *dirtyTask, pw *pageWriter, v *image.Vma, gen int, a, e, off uint64) error {
	pdata, err := d.dirty.mapParent(dt.gens[gen].Name, dt.pgens[gen])
	if err != nil {
		return err
	}
	if off+(e-a) > uint64(len(pdata)) {
		return fmt.Errorf("parent image: %s is shorter than its records say", dt.gens[gen].Name)
	}
	const chunk = 4 << 20
	if dt.buf == nil {
		dt.buf = make([]byte, chunk)
	}
	for a < e {
		n := min(e-a, chunk)
		b := dt.buf[:n]
		if err := readTask(t.pid, pw.mem, a, b); err != nil {
			return err
		}
		d.dirty.stats.Compared += n
		for p := uint64(0); p < n; {
			same := bytes.Equal(b[p:p+image.PageSize], pdata[off+p:off+p+image.PageSize])
			q := p + image.PageSize
			for q < n && bytes.Equal(b[q:q+image.PageSize], pdata[off+q:off+q+image.PageSize]) == same {
				q += image.PageSize
			}
			if same {
				dt.ref(v, gen, a+p, q-p, off+p)
				d.dirty.stats.Reused += q - p
			} else {
				o, err := pw.addBytes(b[p:q])
				if err != nil {
					return err
				}
				dt.appendRun(v, image.PageRun{Addr: a + p, Len: q - p, Off: o})
				d.dirty.stats.Written += q - p
			}
			p = q
		}
		a += n
		off += n
	}
	return nil
}

// readTask reads the task's memory at addr (process_vm_readv, then
// /proc/PID/mem for what it could not read).
func readTask(pid int, mem *os.File, addr uint64, b []byte) error {
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	n, err := unix.ProcessVMReadv(pid, local, []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err == nil && n == len(b) {
		return nil
	}
	n = max(n, 0)
	if _, err := mem.ReadAt(b[n:], int64(addr)+int64(n)); err != nil {
		return fmt.Errorf("read memory of pid %d at %#x: %w", pid, addr+uint64(n), err)
	}
	return nil
}

// mapParent maps the parent's page data (the concatenation of its files,
// named relative to the parent directory), once per dump; key is its name
// relative to the new image.
func (s *dirtyState) mapParent(key string, data image.PagesData) ([]byte, error) {
	if b, ok := s.maps[key]; ok {
		return b, nil
	}
	b, unmap, err := mapPagesFrom(s.parentDir, s.parentFiles, data, false)
	if err != nil {
		return nil, fmt.Errorf("parent image: %w", err)
	}
	s.maps[key] = b
	s.unmaps = append(s.unmaps, unmap)
	return b, nil
}

// finishMm records the parents' page data that t's runs refer to.
func (d *dumper) finishMm(t *dtask, mm *image.Mm) error {
	dt := d.dirty.tasks[t]
	if dt == nil {
		return nil
	}
	mm.ParentPages = dt.files
	return nil
}

// armTrackers arms a fresh tracker in every task of a tree that is left
// running, after its pages were read and while it is still stopped, and
// records them in the image. The trackers found at dump time are closed
// first (their registrations end with them). A task where arming fails is
// left without tracking: the next incremental dump compares its pages.
func (d *dumper) armTrackers() {
	s := d.dirty
	// After a pre-copy, the tracker armed before the copy stays: what it
	// reports unwritten is still what this image holds (its pre-copied
	// pages), and keeping it spares the tree two walks of its page tables
	// (unregistering, protecting) while it is stopped. The next dump copies
	// the pages written since the pre-copy, a few more than since this dump.
	kept := map[*dtask]bool{}
	for _, t := range d.tasks {
		if dt := s.tasks[t]; s.pre != nil && dt != nil && dt.tracked {
			kept[t] = true
			s.armed = append(s.armed, s.parentTrackers[t.nspid])
		}
	}
	for _, t := range d.tasks {
		if t.zombie || len(t.threads) == 0 || t.threads[0].gadget == 0 || kept[t] {
			continue
		}
		for fd := range s.trackers[t.pid] {
			if _, err := t.threads[0].syscall(unix.SYS_CLOSE, uint64(fd)); err != nil && !errors.Is(err, unix.EBADF) {
				logrus.WithError(err).WithFields(logrus.Fields{"pid": t.nspid, "fd": fd}).Warn("close the previous dirty-page tracker")
			}
		}
	}
	for _, t := range d.tasks {
		if t.zombie || len(t.threads) == 0 || t.threads[0].gadget == 0 || t.rec == nil || t.rec.Mm == nil || kept[t] {
			continue
		}
		tr, err := armTask(t)
		if err != nil {
			logrus.WithError(err).WithField("pid", t.nspid).Warn("arm dirty-page tracking (the next incremental dump compares this task's pages)")
			continue
		}
		if tr != nil {
			s.armed = append(s.armed, *tr)
		}
	}
	if len(s.armed) == 0 {
		return
	}
	rec := image.Tracking{Header: image.NewHeader(), BootID: s.bootID, Tasks: s.armed}
	if err := image.WriteFile(d.opts.ImageDir, image.TrackingFile, &rec); err != nil {
		logrus.WithError(err).Warn("record dirty-page trackers")
		return
	}
	d.result.RecordFiles = append(d.result.RecordFiles, image.TrackingFile)
}

// armTask creates a userfaultfd inside t, registers its private anonymous
// mappings in WP_ASYNC mode from the engine, write-protects them, and moves
// the task's fd to a high number. It returns nil when there is nothing to track.
func armTask(t *dtask) (*image.Tracker, error) {
	var ranges [][2]uint64
	for _, v := range t.rec.Mm.Vmas {
		if v.Kind == image.VmaAnon && !v.Shared {
			ranges = append(ranges, [2]uint64{v.Start, v.End})
		}
	}
	nofile := uint64(trackerFdMax)
	for _, r := range t.rec.Rlimits {
		if r.Resource == unix.RLIMIT_NOFILE {
			nofile = r.Cur
		}
	}
	return armTracker(t, ranges, nofile)
}

// armTracker arms a tracker on ranges in t (stopped, its leader's gadget
// found), at the highest free fd below nofile (the task's RLIMIT_NOFILE).
func armTracker(t *dtask, ranges [][2]uint64, nofile uint64) (*image.Tracker, error) {
	tr, ufd, err := registerTracker(t, ranges, nofile)
	if err != nil || tr == nil {
		return nil, err
	}
	defer unix.Close(ufd)
	if err := writeProtect(ufd, tr.Ranges); err != nil {
		_, _ = t.threads[0].syscall(unix.SYS_CLOSE, uint64(tr.Fd))
		return nil, err
	}
	return tr, nil
}

// writeProtect write-protects ranges through the engine's copy of a
// tracker: from here on a write to them is WRITTEN in PAGEMAP_SCAN. It
// walks the page tables (the costly part of arming) and does not need the
// task stopped.
func writeProtect(ufd int, ranges [][2]uint64) error {
	for _, r := range ranges {
		wp := [3]uint64{r[0], r[1] - r[0], uffdWriteprotectModeWP}
		if err := uffdIoctl(ufd, uffdioWriteprotect, unsafe.Pointer(&wp)); err != nil {
			return fmt.Errorf("UFFDIO_WRITEPROTECT %#x-%#x: %w", r[0], r[1], err)
		}
	}
	return nil
}

// registerTracker creates a tracker in t (stopped, its leader's gadget
// found) registered on ranges, at the highest free fd below nofile, and
// returns it with the engine's copy of its fd (the caller closes it); the
// ranges are not write-protected yet. It returns a nil tracker when there
// is nothing to track.
func registerTracker(t *dtask, ranges [][2]uint64, nofile uint64) (*image.Tracker, int, error) {
	if len(ranges) == 0 {
		return nil, -1, nil
	}
	lead := t.threads[0]
	start, err := startTime(t.pid)
	if err != nil {
		return nil, -1, err
	}
	// The highest free fd below the task's RLIMIT_NOFILE (and trackerFdMax).
	limit := min(uint64(trackerFdMax), nofile)
	fds, err := listFds(t.pid)
	if err != nil {
		return nil, -1, err
	}
	used := map[int]bool{}
	for _, fd := range fds {
		used[fd] = true
	}
	high := int(limit) - 1
	for high > 2 && used[high] {
		high--
	}
	if high <= 2 {
		return nil, -1, errors.New("no free fd for the tracker")
	}
	closeInTask := func(fd uint64) { _, _ = lead.syscall(unix.SYS_CLOSE, fd) }
	tfd, err := lead.sys("userfaultfd", unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly)
	if err != nil {
		return nil, -1, err
	}
	pidfd, err := unix.PidfdOpen(t.pid, 0)
	if err != nil {
		closeInTask(tfd)
		return nil, -1, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	ufd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
	if err != nil {
		closeInTask(tfd)
		return nil, -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	fail := func(err error) (*image.Tracker, int, error) {
		closeInTask(tfd)
		unix.Close(ufd)
		return nil, -1, err
	}
	api := [3]uint64{uffdAPI, uffdFeatureWPAsync, 0}
	if err := uffdIoctl(ufd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return fail(fmt.Errorf("UFFDIO_API: %w", err))
	}
	if _, err := unix.FcntlInt(uintptr(ufd), unix.F_SETFL, trackerMark); err != nil {
		return fail(fmt.Errorf("mark the tracker: %w", err))
	}
	armed := registerRanges(t, ufd, ranges)
	if len(armed) == 0 {
		return fail(errors.New("no mapping could be registered"))
	}
	if _, err := lead.sys("dup3 tracker", unix.SYS_DUP3, tfd, uint64(high), unix.O_CLOEXEC); err != nil {
		return fail(err)
	}
	closeInTask(tfd)
	var st unix.Stat_t
	if err := unix.Fstat(ufd, &st); err != nil {
		closeInTask(uint64(high))
		unix.Close(ufd)
		return nil, -1, err
	}
	return &image.Tracker{Pid: t.nspid, HostPid: t.pid, StartTime: start, Fd: high, Ino: st.Ino, Ranges: armed}, ufd, nil
}

// registerRanges registers ranges of t with the tracker ufd in
// write-protect mode and returns those it could register (a range the
// kernel refuses, a VM_PFNMAP one say, is left out).
func registerRanges(t *dtask, ufd int, ranges [][2]uint64) [][2]uint64 {
	var armed [][2]uint64
	for _, r := range ranges {
		reg := [4]uint64{r[0], r[1] - r[0], uffdRegisterModeWP, 0}
		if err := uffdIoctl(ufd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"pid": t.nspid, "start": r[0], "end": r[1]}).Debug("register mapping for dirty tracking")
			continue
		}
		armed = append(armed, r)
	}
	return armed
}

func uffdIoctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}
