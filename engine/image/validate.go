package image

import (
	"fmt"
	"math"
	"strings"
)

// maxPid bounds PIDs (PID_MAX_LIMIT on 64-bit kernels).
const maxPid = 1 << 22

// userTop is the end of the x86-64 user address space (4-level paging,
// plus the fixed vsyscall page above it).
const userTop = 0xffffffffff601000

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

func validPid(p int) bool { return p > 0 && p < maxPid }

// Validate checks the consistency of an inventory.
func (inv *Inventory) Validate() error {
	if !validPid(inv.RootPid) {
		return bad("root pid %d", inv.RootPid)
	}
	if len(inv.Tasks) == 0 || inv.Tasks[0] != inv.RootPid {
		return bad("task list must start with the root pid")
	}
	seen := make(map[int]bool, len(inv.Tasks))
	for _, p := range inv.Tasks {
		if !validPid(p) || seen[p] {
			return bad("task pid %d invalid or repeated", p)
		}
		seen[p] = true
	}
	pipes := make(map[uint64]bool, len(inv.Pipes))
	for _, p := range inv.Pipes {
		if pipes[p.ID] {
			return bad("pipe %d repeated", p.ID)
		}
		pipes[p.ID] = true
		if p.Size < 0 || p.Size > 1<<30 || len(p.Data) > p.Size {
			return bad("pipe %d: %d bytes buffered in a pipe of size %d", p.ID, len(p.Data), p.Size)
		}
	}
	socks := map[uint64]UnixSocket{}
	for _, u := range inv.UnixSockets {
		if _, dup := socks[u.ID]; dup || u.ID == u.Peer || len(u.Queue) > 1<<30 {
			return bad("unix socket %d repeated, its own peer or with %d queued bytes", u.ID, len(u.Queue))
		}
		socks[u.ID] = u
	}
	for _, u := range inv.UnixSockets {
		if p, ok := socks[u.Peer]; !ok || p.Peer != u.ID || p.Type != u.Type {
			return bad("unix socket %d: peer %d missing or not paired with it", u.ID, u.Peer)
		}
	}
	shm := map[uint64]bool{}
	for _, o := range inv.Shmems {
		if shm[o.ID] || o.Size > 1<<40 || o.Size%PageSize != 0 && o.Memfd == false {
			return bad("shmem %d repeated or of size %d", o.ID, o.Size)
		}
		shm[o.ID] = true
		var next uint64
		for _, r := range o.Runs {
			if r.Len == 0 || r.File != 0 || r.Addr < next || r.Addr+r.Len < r.Addr || r.Addr+r.Len > o.Size+PageSize ||
				r.Off+r.Len < r.Off || r.Off+r.Len > o.PagesSize {
				return bad("shmem %d: run %#x+%#x at %#x", o.ID, r.Addr, r.Len, r.Off)
			}
			next = r.Addr + r.Len
		}
	}
	if inv.XStateSize < 0 || inv.XStateSize > 1<<20 {
		return bad("xstate size %d", inv.XStateSize)
	}
	return nil
}

// Validate checks the consistency of a task record.
func (t *Task) Validate() error {
	if !validPid(t.Pid) || t.PPid < 0 || t.PPid >= maxPid || t.Pgid < 0 || t.Pgid >= maxPid || t.Sid < 0 || t.Sid >= maxPid {
		return bad("task ids pid %d ppid %d pgid %d sid %d", t.Pid, t.PPid, t.Pgid, t.Sid)
	}
	if t.Zombie {
		if len(t.Threads) != 0 || t.Mm != nil || len(t.Fds) != 0 {
			return bad("zombie %d with threads, memory or files", t.Pid)
		}
		return nil
	}
	if len(t.Threads) == 0 || t.Threads[0].Tid != t.Pid {
		return bad("task %d: first thread must be the leader", t.Pid)
	}
	tids := map[int]bool{}
	for _, th := range t.Threads {
		if !validPid(th.Tid) || tids[th.Tid] {
			return bad("task %d: thread id %d invalid or repeated", t.Pid, th.Tid)
		}
		tids[th.Tid] = true
		if len(th.Regs) != RegsSize {
			return bad("thread %d: %d bytes of registers, want %d", th.Tid, len(th.Regs), RegsSize)
		}
		if len(th.XState) > 1<<20 {
			return bad("thread %d: xstate of %d bytes", th.Tid, len(th.XState))
		}
		for _, s := range th.Sigpending {
			if len(s.Raw) != SiginfoSize {
				return bad("thread %d: siginfo of %d bytes", th.Tid, len(s.Raw))
			}
		}
	}
	for _, s := range t.SharedSigpending {
		if len(s.Raw) != SiginfoSize {
			return bad("task %d: siginfo of %d bytes", t.Pid, len(s.Raw))
		}
	}
	if t.Mm == nil {
		return bad("task %d without memory", t.Pid)
	}
	if err := t.Mm.Validate(); err != nil {
		return fmt.Errorf("task %d: %w", t.Pid, err)
	}
	fds := map[int]bool{}
	for _, f := range t.Fds {
		if f.Fd < 0 || f.Fd > math.MaxInt32 || fds[f.Fd] {
			return bad("task %d: fd %d invalid or repeated", t.Pid, f.Fd)
		}
		fds[f.Fd] = true
		switch f.Kind {
		case FdFile, FdDevice, FdFifo:
			if f.Path == "" || f.Path[0] != '/' {
				return bad("task %d fd %d: path %q is not absolute", t.Pid, f.Fd, f.Path)
			}
		case FdPipe, FdEventfd, FdSignalfd, FdMemfd, FdUnix:
		case FdTimerfd:
			if f.Timerfd == nil {
				return bad("task %d fd %d: timerfd without state", t.Pid, f.Fd)
			}
		case FdInotify:
			prev := 0
			for _, w := range f.Inotify {
				if w.Wd <= prev || w.Path == "" || w.Path[0] != '/' {
					return bad("task %d fd %d: inotify watch %d on %q", t.Pid, f.Fd, w.Wd, w.Path)
				}
				prev = w.Wd
			}
		case FdEpoll:
		case FdSocket, FdDeleted:
			if err := f.validateKind(); err != nil {
				return fmt.Errorf("task %d fd %d: %w", t.Pid, f.Fd, err)
			}
		case FdExternal:
			if f.Stdio < 0 || f.Stdio > 2 {
				return bad("task %d fd %d: stdio index %d", t.Pid, f.Fd, f.Stdio)
			}
		default:
			return bad("task %d fd %d: kind %q", t.Pid, f.Fd, f.Kind)
		}
	}
	for _, f := range t.Fds {
		for _, tg := range f.Epoll {
			if !fds[tg.Fd] {
				return bad("task %d fd %d: epoll target fd %d is not open", t.Pid, f.Fd, tg.Fd)
			}
		}
	}
	for _, s := range t.Sigactions {
		if s.Signal < 1 || s.Signal > 64 {
			return bad("task %d: signal %d", t.Pid, s.Signal)
		}
	}
	for _, f := range t.Seccomp {
		if len(f.Prog) == 0 || len(f.Prog)%8 != 0 || len(f.Prog) > 8*4096 {
			return bad("task %d: seccomp program of %d bytes", t.Pid, len(f.Prog))
		}
	}
	for _, r := range t.Rlimits {
		if r.Resource < 0 || r.Resource >= 16 {
			return bad("task %d: rlimit %d", t.Pid, r.Resource)
		}
	}
	for _, it := range t.Itimers {
		if it.Which < 0 || it.Which > 2 {
			return bad("task %d: itimer %d", t.Pid, it.Which)
		}
	}
	return nil
}

// Validate checks that the mappings are ordered, page aligned, and that every
// page run lies inside its mapping and inside the pages file.
func (mm *Mm) Validate() error {
	if err := mm.validateParentPages(); err != nil {
		return err
	}
	var prevEnd uint64
	for i, v := range mm.Vmas {
		if v.Start%PageSize != 0 || v.End%PageSize != 0 || v.Start >= v.End || v.End > userTop {
			return bad("vma %d: range %#x-%#x", i, v.Start, v.End)
		}
		if v.Start < prevEnd {
			return bad("vma %d: %#x-%#x overlaps or is out of order", i, v.Start, v.End)
		}
		prevEnd = v.End
		for _, a := range v.Advice {
			switch a {
			case MadvDontfork, MadvWipeonfork, MadvDontdump, MadvHugepage, MadvNohugepage, MadvMergeable:
			default:
				return bad("vma %#x: advice %q", v.Start, a)
			}
		}
		if v.Prot&^(ProtRead|ProtWrite|ProtExec) != 0 {
			return bad("vma %#x: prot %#x", v.Start, v.Prot)
		}
		switch v.Kind {
		case VmaAnon, VmaVdso, VmaVvar, VmaVvarVclock, VmaVsyscall:
		case VmaShmem:
			if v.ShmemID == 0 || v.Offset%PageSize != 0 {
				return bad("vma %#x: shared memory object %d at %#x", v.Start, v.ShmemID, v.Offset)
			}
		case VmaSysvShm:
			if v.Offset%PageSize != 0 {
				return bad("vma %#x: System V segment %d at %#x", v.Start, v.ShmemID, v.Offset)
			}
		case VmaFile:
			if v.Path == "" || v.Path[0] != '/' || v.Offset%PageSize != 0 {
				return bad("vma %#x: file %q offset %#x", v.Start, v.Path, v.Offset)
			}
		default:
			return bad("vma %#x: kind %q", v.Start, v.Kind)
		}
		next := v.Start
		for _, p := range v.Pages {
			if p.Addr%PageSize != 0 || p.Len%PageSize != 0 || p.Len == 0 || p.Addr < next ||
				p.Addr+p.Len < p.Addr || p.Addr+p.Len > v.End {
				return bad("vma %#x-%#x: page run %#x+%#x", v.Start, v.End, p.Addr, p.Len)
			}
			data, ok := mm.PagesDataOf(p.File)
			if !ok {
				return bad("vma %#x: page run in pages file %d of %d", v.Start, p.File, len(mm.ParentPages))
			}
			if p.Off%PageSize != 0 || p.Off+p.Len < p.Off || p.Off+p.Len > data.Size {
				return bad("vma %#x: page run at offset %#x+%#x beyond the page data %s (%d bytes)", v.Start, p.Off, p.Len, data.Files[0], data.Size)
			}
			next = p.Addr + p.Len
		}
	}
	if len(mm.Auxv) > 1024 {
		return bad("auxv of %d words", len(mm.Auxv))
	}
	if mm.PagesFile != "" && !plainName(mm.PagesFile) || mm.PagesFile == "" && mm.PagesSize != 0 {
		return bad("pages file name %q", mm.PagesFile)
	}
	if len(mm.PagesParts) > 0 {
		if mm.PagesFile == "" || len(mm.PagesParts) > 1<<16 || !validParts(mm.PagesSize, mm.PagesPartSize, len(mm.PagesParts)) {
			return bad("pages file of %d bytes in %d parts of %d bytes", mm.PagesSize, len(mm.PagesParts)+1, mm.PagesPartSize)
		}
		for _, name := range mm.PagesParts {
			if !plainName(name) {
				return bad("pages part name %q", name)
			}
		}
	} else if mm.PagesPartSize != 0 {
		return bad("pages part size without parts")
	}
	return nil
}

// plainName says whether name is a file name without a directory.
func plainName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "/\\") && name != "." && name != ".."
}

// RegsSize is the size of struct user_regs_struct on x86-64.
const RegsSize = 27 * 8

// SiginfoSize is the size of siginfo_t.
const SiginfoSize = 128
