package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
	"github.com/cryo-run/cryo/engine/internal/ptrace"
)

// gadgetSize is the private page set the restore maps into every task: a
// `syscall; int3` gadget at its start, then scratch memory for arguments.
const gadgetSize = 8 * image.PageSize

// atFdcwd is AT_FDCWD (-100) as a register value.
const atFdcwd = ^uint64(99)

// rtask is one process being restored.
type rtask struct {
	rec     *image.Task
	hostPid int
	parent  *rtask
	threads []*tracee // leader first; created as the restore goes
	// stdio are the stub's inherited fds 0-2, parked above the restored fds
	// (-1 when the stub had none).
	stdio [3]int
	temps []int
	// local maps an open file description (image.Fd.File) to an fd in this task.
	local map[uint64]int
	// sysvAttached are the addresses where System V segments were attached again.
	sysvAttached map[uint64]bool
	// gadgetMapped says the gadget pages are still mapped in the task.
	gadgetMapped bool
	// base is the lowest fd number above every restored fd: temporary fds
	// are parked at or above it.
	base int
}

func (rt *rtask) lead() *tracee { return rt.threads[0] }

type holder struct {
	rt *rtask
	fd int
}

type restorer struct {
	opts    RestoreOptions
	inv     *image.Inventory
	tasks   []*rtask
	byPid   map[int]*rtask // by PID in the namespace
	gadget  uint64
	scratch uint64
	// files maps an open file description to a task and fd that hold it.
	files map[uint64]holder
	// pipeEnds maps (pipe, is-read-end) to a task and fd that hold it.
	pipeEnds map[pipeEnd]holder
	pipes    map[uint64]*image.Pipe
	epolls   []epollReg
	socks    *sockRestore // fd_socket_restore_linux.go
	// shmems are the shared memory objects; shmemHolders say which task
	// holds an fd of each one created so far.
	shmems       map[uint64]*image.Shmem
	shmemHolders map[uint64]holder
	// unixSocks are the unix sockets; sockEnds say which task holds each end.
	unixSocks map[uint64]*image.UnixSocket
	sockEnds  map[uint64]holder
	// sysv are the System V IPC objects of the image (nil if none).
	sysv *image.SysVIPC
	// stdio is the helper holding RestoreOptions.Stdio, started when needed.
	stdio *stdioHelper
	// fills copies the page data into the tasks (fill_linux.go).
	fills fillQueue
}

type pipeEnd struct {
	id   uint64
	read bool
}

// Restore rebuilds the tree saved in opts.ImageDir from the stub opts.Pid.
func Restore(ctx context.Context, opts RestoreOptions) (*RestoreResult, error) {
	if opts.Pid <= 0 || opts.ImageDir == "" {
		return nil, fmt.Errorf("%w: restore needs a stub pid and an image directory", ErrInvalidOptions)
	}
	inv, err := image.ReadInventory(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	r := &restorer{opts: opts, inv: inv, byPid: map[int]*rtask{}, files: map[uint64]holder{}, pipeEnds: map[pipeEnd]holder{}, pipes: map[uint64]*image.Pipe{},
		shmems: map[uint64]*image.Shmem{}, shmemHolders: map[uint64]holder{}}
	r.unixSocks, r.sockEnds = map[uint64]*image.UnixSocket{}, map[uint64]holder{}
	for i := range inv.UnixSockets {
		r.unixSocks[inv.UnixSockets[i].ID] = &inv.UnixSockets[i]
	}
	for i := range inv.Shmems {
		r.shmems[inv.Shmems[i].ID] = &inv.Shmems[i]
	}
	for i := range inv.Pipes {
		r.pipes[inv.Pipes[i].ID] = &inv.Pipes[i]
	}
	for _, pid := range inv.Tasks {
		rec, err := image.ReadTask(opts.ImageDir, pid)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		rt := &rtask{rec: rec, stdio: [3]int{-1, -1, -1}, local: map[uint64]int{}, base: 3}
		for _, f := range rec.Fds {
			rt.base = max(rt.base, f.Fd+1)
		}
		if len(r.tasks) > 0 {
			if rt.parent = r.byPid[rec.PPid]; rt.parent == nil {
				return nil, fmt.Errorf("restore: task %d: parent %d not restored before it", pid, rec.PPid)
			}
		}
		r.tasks = append(r.tasks, rt)
		r.byPid[pid] = rt
	}
	if inv.RootPid != 1 {
		return nil, fmt.Errorf("restore: %w: the root task had PID %d in its namespace; it must be PID 1 (a container init)", ErrUnsupported, inv.RootPid)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		if r.stdio != nil {
			r.stdio.stop()
		}
	}()
	defer r.fills.stop()
	if err := r.run(ctx); err != nil {
		r.fills.stop()
		r.killAll()
		return nil, fmt.Errorf("restore from %s: %w", opts.ImageDir, err)
	}
	res := &RestoreResult{Pids: map[int]int{}}
	for _, rt := range r.tasks {
		res.Pids[rt.rec.Pid] = rt.hostPid
	}
	return res, nil
}

// killAll kills every task of a failed restore (the stub included: a half
// rebuilt init is of no use) and releases them.
func (r *restorer) killAll() {
	r.dropSockets()
	ours := map[int]bool{}
	for _, rt := range r.tasks {
		if rt.hostPid > 0 {
			if st, err := procfs.ReadStat(rt.hostPid); err == nil && st.PPid == os.Getpid() {
				ours[rt.hostPid] = true
			}
			_ = unix.Kill(rt.hostPid, unix.SIGKILL)
		}
	}
	// Collect the ptrace exit notifications so that the real parents can
	// reap.
	var tids []int
	for _, rt := range r.tasks {
		for _, th := range rt.threads {
			th.close()
			if !ours[th.tid] {
				tids = append(tids, th.tid)
			}
		}
	}
	waitAllGone(tids)
}

func (r *restorer) run(ctx context.Context) error {
	root := r.tasks[0]
	if err := r.seizeStub(root); err != nil {
		return err
	}
	// Create every process while all of them are still copies of the stub.
	for _, rt := range r.tasks {
		if rt != root {
			if err := r.cloneTask(rt); err != nil {
				return fmt.Errorf("create pid %d: %w", rt.rec.Pid, err)
			}
		}
		if rt.rec.Sid == rt.rec.Pid && !rt.rec.Zombie {
			if err := r.setsid(rt); err != nil {
				return err
			}
		}
	}
	if err := r.setPgids(); err != nil {
		return err
	}
	// System V objects before any memory: attachments need the segments.
	if err := r.restoreSysvIPC(); err != nil {
		return err
	}
	for _, rt := range r.tasks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rt.rec.Zombie {
			if err := r.makeZombie(rt); err != nil {
				return fmt.Errorf("pid %d: %w", rt.rec.Pid, err)
			}
			continue
		}
		if err := r.restoreMm(rt); err != nil {
			return fmt.Errorf("pid %d: memory: %w", rt.rec.Pid, err)
		}
	}
	// The page fills (fillQueue) overlap what follows, up to the seals: a
	// sealed memfd takes no more writes, and from there on the kernel
	// writes into the tasks' memory (rseq, clear_child_tid, threads' TLS).
	if err := r.destroySysvShm(); err != nil {
		return err
	}
	if err := r.prepareSockets(); err != nil {
		return err
	}
	for _, rt := range r.tasks {
		if rt.rec.Zombie {
			continue
		}
		if err := r.restoreFds(rt); err != nil {
			return fmt.Errorf("pid %d: files: %w", rt.rec.Pid, err)
		}
	}
	if err := r.finishSockets(); err != nil {
		return err
	}
	if err := r.registerEpolls(); err != nil {
		return err
	}
	if err := r.fills.wait(); err != nil {
		return err
	}
	if err := r.sealShmems(); err != nil {
		return err
	}
	for _, rt := range r.tasks {
		if rt.rec.Zombie {
			continue
		}
		for _, fd := range rt.temps {
			if _, err := rt.lead().sys("close", unix.SYS_CLOSE, uint64(fd)); err != nil {
				return err
			}
		}
		rt.temps = nil
	}
	// Locks once every fd is in place and no temporary fd is left to close
	// (closing any fd of a file drops the process's POSIX locks on it).
	for _, rt := range r.tasks {
		if rt.rec.Zombie {
			continue
		}
		if err := r.restoreLocks(rt); err != nil {
			return fmt.Errorf("pid %d: %w", rt.rec.Pid, err)
		}
	}
	for _, rt := range r.tasks {
		if rt.rec.Zombie {
			continue
		}
		if err := r.restoreTaskState(rt); err != nil {
			return fmt.Errorf("pid %d: %w", rt.rec.Pid, err)
		}
	}
	// Last: unmap the gadget, load the saved registers and let go, children
	// first so that a parent never runs before its children are whole.
	for i := len(r.tasks) - 1; i >= 0; i-- {
		rt := r.tasks[i]
		if rt.rec.Zombie {
			continue
		}
		if err := r.finishTask(rt); err != nil {
			return fmt.Errorf("pid %d: %w", rt.rec.Pid, err)
		}
	}
	if err := r.queueStops(); err != nil {
		return err
	}
	for i := len(r.tasks) - 1; i >= 0; i-- {
		rt := r.tasks[i]
		for _, th := range rt.threads {
			th.close()
			if rt.rec.Zombie {
				continue
			}
			if err := ptrace.Detach(th.tid, 0); err != nil {
				return fmt.Errorf("pid %d: %w", rt.rec.Pid, err)
			}
		}
	}
	return nil
}

// seizeStub attaches to the stub, checks it, and maps the gadget pages.
func (r *restorer) seizeStub(rt *rtask) error {
	pid := r.opts.Pid
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("stub: %w", err)
	}
	if ns := st.NSpid[len(st.NSpid)-1]; ns != 1 || len(st.NSpid) < 2 {
		return fmt.Errorf("stub pid %d is pid %d in its namespace, want 1 in a new PID namespace", pid, ns)
	}
	if st.Threads != 1 {
		return fmt.Errorf("stub pid %d has %d threads", pid, st.Threads)
	}
	// EXITKILL: if the engine dies mid-restore, the half-built tree dies too.
	// SUSPEND_SECCOMP: the filters restored into a task must not stop the
	// calls the engine still injects after them (options are inherited by
	// the tasks cloned from the stub).
	opts := unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_SUSPEND_SECCOMP
	if err := ptrace.Seize(pid, opts); err != nil {
		return fmt.Errorf("stub: %w", err)
	}
	rt.hostPid = pid
	th := &tracee{tid: pid}
	rt.threads = []*tracee{th}
	if err := ptrace.Interrupt(pid); err != nil {
		return err
	}
	for {
		ws, err := ptrace.Wait(pid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("stub %s", describeStatus(ws))
		}
		if ptrace.Event(ws) == ptrace.EventStop {
			break
		}
		// A signal sent to the stub before we got it: drop it.
		if err := ptrace.Cont(pid, 0); err != nil {
			return err
		}
	}
	if th.regs, err = ptrace.GetRegs(pid); err != nil {
		return err
	}
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return err
	}
	if th.gadget, err = findGadget(th, maps); err != nil {
		return fmt.Errorf("stub: %w", err)
	}
	// Our own gadget pages, at an address that neither the stub nor any saved
	// mapping of any task uses, so that they survive until the very end.
	var used [][2]uint64
	for _, m := range maps {
		used = append(used, [2]uint64{m.Start, m.End})
	}
	for _, t := range r.tasks {
		if t.rec.Mm != nil {
			for _, v := range t.rec.Mm.Vmas {
				used = append(used, [2]uint64{v.Start, v.End})
			}
		}
	}
	addr, ok := findHole(used, gadgetSize)
	if !ok {
		return errors.New("no free address range for the restore gadget")
	}
	got, err := th.sys("mmap gadget", unix.SYS_MMAP, addr, gadgetSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return err
	}
	if got != addr {
		return fmt.Errorf("gadget mapped at %#x, want %#x", got, addr)
	}
	if err := th.writeMem(addr, []byte{0x0f, 0x05, 0xcc}); err != nil {
		return err
	}
	r.gadget, r.scratch = addr, addr+image.PageSize
	th.gadget = addr
	rt.gadgetMapped = true
	return nil
}

// findHole returns a page-aligned range of size bytes below the 47-bit user
// limit that overlaps none of used.
func findHole(used [][2]uint64, size uint64) (uint64, bool) {
	sort.Slice(used, func(i, j int) bool { return used[i][0] < used[j][0] })
	for cand := uint64(1 << 32); cand+size < 1<<47; cand += 1 << 30 {
		free := true
		for _, u := range used {
			if u[0] < cand+size && cand < u[1] {
				free = false
				break
			}
		}
		if free {
			return cand, true
		}
	}
	return 0, false
}

// cloneArgs is struct clone_args (CLONE_ARGS_SIZE_VER2).
type cloneArgs struct {
	Flags, Pidfd, ChildTid, ParentTid, ExitSignal, Stack, StackSize, TLS, SetTid, SetTidSize, Cgroup uint64
}

// clone3 runs clone3 in t asking for the given TID/PID (set_tid, an array of
// 32-bit pid_t, KERNEL.md) and returns the tracee of the new task, seized
// automatically (PTRACE_O_TRACECLONE/FORK) and stopped.
func (r *restorer) clone3(t *tracee, flags uint64, exitSignal uint64, want int) (*tracee, error) {
	args := cloneArgs{Flags: flags, ExitSignal: exitSignal, SetTid: r.scratch + 128, SetTidSize: 1}
	if flags&unix.CLONE_VM != 0 {
		args.Stack, args.StackSize = r.scratch+2*image.PageSize, image.PageSize
	}
	buf := make([]byte, 132)
	le := binary.LittleEndian
	for i, v := range []uint64{args.Flags, args.Pidfd, args.ChildTid, args.ParentTid, args.ExitSignal, args.Stack, args.StackSize, args.TLS, args.SetTid, args.SetTidSize, args.Cgroup} {
		le.PutUint64(buf[8*i:], v)
	}
	le.PutUint32(buf[128:], uint32(want))
	if err := t.writeMem(r.scratch, buf); err != nil {
		return nil, err
	}
	if err := t.blockSignals(); err != nil {
		return nil, err
	}
	regs := t.regs
	regs.Rip, regs.Rax, regs.Orig_rax = t.gadget, unix.SYS_CLONE3, ^uint64(0)
	regs.Rdi, regs.Rsi = r.scratch, 88
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return nil, err
	}
	if err := ptrace.SingleStep(t.tid); err != nil {
		return nil, err
	}
	ws, err := ptrace.Wait(t.tid)
	if err != nil {
		return nil, err
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("clone3: parent %s", describeStatus(ws))
	}
	if ev := ptrace.Event(ws); ev != unix.PTRACE_EVENT_CLONE && ev != unix.PTRACE_EVENT_FORK && ev != unix.PTRACE_EVENT_VFORK {
		// No event: clone3 failed; the single step finished with its error.
		out, gerr := ptrace.GetRegs(t.tid)
		if gerr != nil {
			return nil, gerr
		}
		if err := errnoOf(out.Rax); err != nil {
			return nil, fmt.Errorf("clone3 with set_tid %d: %w", want, err)
		}
		return nil, fmt.Errorf("clone3: unexpected stop %s", describeStatus(ws))
	}
	msg, err := ptrace.GetEventMsg(t.tid)
	if err != nil {
		return nil, err
	}
	child := &tracee{tid: int(msg), gadget: t.gadget, regs: t.regs, blocked: true}
	if err := ptrace.SingleStep(t.tid); err != nil {
		return nil, err
	}
	if err := t.waitTrap(); err != nil {
		return nil, fmt.Errorf("clone3: %w", err)
	}
	out, err := ptrace.GetRegs(t.tid)
	if err != nil {
		return nil, err
	}
	if err := errnoOf(out.Rax); err != nil {
		return nil, fmt.Errorf("clone3: %w", err)
	}
	if int(out.Rax) != want {
		return nil, fmt.Errorf("clone3 created %d, want %d", out.Rax, want)
	}
	// The new task starts with a PTRACE_EVENT_STOP (it was auto-attached by a seizing tracer).
	for {
		ws, err := ptrace.Wait(child.tid)
		if err != nil {
			return nil, err
		}
		if !ws.Stopped() {
			return nil, fmt.Errorf("new task %d %s", child.tid, describeStatus(ws))
		}
		if ptrace.Event(ws) == ptrace.EventStop {
			break
		}
		if err := ptrace.Cont(child.tid, 0); err != nil {
			return nil, err
		}
	}
	return child, nil
}

func (r *restorer) cloneTask(rt *rtask) error {
	parent := rt.parent.lead()
	flags := uint64(0)
	if rt.rec.FilesFrom != 0 {
		if rt.rec.FilesFrom != rt.parent.rec.Pid {
			return fmt.Errorf("%w: fd table shared with pid %d, not with the parent", ErrUnsupported, rt.rec.FilesFrom)
		}
		// One fd table for both: temporary fds of the child must stay
		// clear of the numbers the parent restores.
		flags, rt.base = unix.CLONE_FILES, rt.parent.base
	}
	child, err := r.clone3(parent, flags, uint64(unix.SIGCHLD), rt.rec.Pid)
	if err != nil {
		return err
	}
	rt.hostPid = child.tid
	rt.threads = []*tracee{child}
	rt.gadgetMapped = true
	return nil
}

func (r *restorer) setsid(rt *rtask) error {
	t := rt.lead()
	sid, err := t.sys("getsid", unix.SYS_GETSID, 0)
	if err != nil {
		return err
	}
	if int(sid) == rt.rec.Pid {
		return nil
	}
	_, err = t.sys("setsid", unix.SYS_SETSID)
	return err
}

// setPgids puts every task in its process group: group leaders first, then
// the members (setpgid needs the group to exist in the caller's session).
func (r *restorer) setPgids() error {
	for pass := 0; pass < 2; pass++ {
		for _, rt := range r.tasks {
			rec := rt.rec
			if rec.Zombie || rec.Pgid == 0 || (pass == 0) != (rec.Pgid == rec.Pid) {
				continue
			}
			if rec.Sid == rec.Pid {
				continue // a session leader leads its group already
			}
			t := rt.lead()
			cur, err := t.sys("getpgid", unix.SYS_GETPGID, 0)
			if err != nil {
				return err
			}
			if int(cur) == rec.Pgid {
				continue
			}
			if _, err := t.sys("setpgid", unix.SYS_SETPGID, 0, uint64(rec.Pgid)); err != nil {
				return fmt.Errorf("pid %d: process group %d: %w", rec.Pid, rec.Pgid, err)
			}
		}
	}
	for _, rt := range r.tasks {
		if rt.rec.Zombie || rt.rec.Sid == 0 {
			continue
		}
		sid, err := rt.lead().sys("getsid", unix.SYS_GETSID, 0)
		if err != nil {
			return err
		}
		if int(sid) != rt.rec.Sid {
			return fmt.Errorf("pid %d: %w: session %d cannot be rebuilt (its leader is not an ancestor that created it before this task)", rt.rec.Pid, ErrUnsupported, rt.rec.Sid)
		}
	}
	return nil
}

// makeZombie turns a freshly cloned task into a zombie with the saved exit
// status, and takes the SIGCHLD this sends to its parent back out of the queue.
func (r *restorer) makeZombie(rt *rtask) error {
	t := rt.lead()
	status := rt.rec.ExitCode
	if sig := status & 0x7f; sig != 0 {
		if _, err := t.sys("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), r.scratch+256, 0, 8); err != nil {
			return err
		}
		if _, err := t.sys("kill", unix.SYS_KILL, uint64(rt.rec.Pid), uint64(sig)); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(t.tid, 0); err != nil {
			return err
		}
		if err := ptrace.Cont(t.tid, 0); err != nil {
			return err
		}
		for {
			ws, err := ptrace.Wait(t.tid)
			if err != nil {
				return err
			}
			if ws.Signaled() || ws.Exited() {
				break
			}
			if err := ptrace.Cont(t.tid, int(ws.StopSignal())); err != nil {
				return err
			}
		}
	} else {
		regs := t.regs
		regs.Rip, regs.Rax, regs.Orig_rax, regs.Rdi = t.gadget, unix.SYS_EXIT_GROUP, ^uint64(0), uint64(status>>8)
		if err := ptrace.SetRegs(t.tid, &regs); err != nil {
			return err
		}
		if err := ptrace.Cont(t.tid, 0); err != nil {
			return err
		}
		for {
			ws, err := ptrace.Wait(t.tid)
			if err != nil {
				return err
			}
			if ws.Exited() || ws.Signaled() {
				break
			}
			if err := ptrace.Cont(t.tid, 0); err != nil {
				return err
			}
		}
	}
	rt.threads = nil
	// Drop the SIGCHLD queued to the parent (its signals are blocked).
	p := rt.parent.lead()
	zero := make([]byte, 24)
	le := binary.LittleEndian
	le.PutUint64(zero, 1<<(unix.SIGCHLD-1))
	if err := p.writeMem(r.scratch+512, zero); err != nil {
		return err
	}
	_, err := p.syscall(unix.SYS_RT_SIGTIMEDWAIT, r.scratch+512, 0, r.scratch+512+8, 8)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("dequeue SIGCHLD in parent: %w", err)
	}
	return nil
}

// restoreMm replaces the stub's address space by the saved one.
func (r *restorer) restoreMm(rt *rtask) error {
	t := rt.lead()
	mm := rt.rec.Mm
	if rt.rec.FilesFrom == 0 { // a shared table was cleaned by its parent
		if err := r.cleanStubFds(rt); err != nil {
			return err
		}
	}
	maps, err := procfs.ReadMaps(rt.hostPid)
	if err != nil {
		return err
	}
	// Unmap everything of the stub but the gadget and the kernel's special mappings.
	special := map[string]procfs.Mapping{}
	for _, m := range maps {
		switch m.Path {
		case "[vdso]", "[vvar]", "[vvar_vclock]":
			special[m.Path] = m
			continue
		case "[vsyscall]":
			continue
		}
		if m.Start >= r.gadget && m.End <= r.gadget+gadgetSize {
			continue
		}
		if _, err := t.sys("munmap", unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
			return err
		}
	}
	if err := r.moveSpecial(t, special, mm); err != nil {
		return err
	}
	// Map every saved mapping.
	opened := map[string]uint64{}
	defer func() {
		for _, fd := range opened {
			_, _ = t.syscall(unix.SYS_CLOSE, fd)
		}
	}()
	for i := range mm.Vmas {
		v := &mm.Vmas[i]
		prot := uint64(0)
		if v.Prot&image.ProtRead != 0 {
			prot |= unix.PROT_READ
		}
		if v.Prot&image.ProtWrite != 0 {
			prot |= unix.PROT_WRITE
		}
		if v.Prot&image.ProtExec != 0 {
			prot |= unix.PROT_EXEC
		}
		switch v.Kind {
		case image.VmaVdso, image.VmaVvar, image.VmaVvarVclock, image.VmaVsyscall:
			continue
		case image.VmaAnon:
			flags := uint64(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED)
			if v.GrowsDown {
				flags |= unix.MAP_GROWSDOWN
			}
			if _, err := t.sys("mmap anon", unix.SYS_MMAP, v.Start, v.End-v.Start, prot, flags, ^uint64(0), 0); err != nil {
				return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
			}
		case image.VmaFile:
			key := v.Path
			mode := uint64(unix.O_RDONLY)
			if v.FileWrite {
				key, mode = "w:"+v.Path, unix.O_RDWR
			}
			fd, ok := opened[key]
			if !ok {
				if fd, err = r.openIn(t, v.Path, mode|unix.O_CLOEXEC); err != nil {
					return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
				}
				opened[key] = fd
			}
			flags := uint64(unix.MAP_PRIVATE | unix.MAP_FIXED)
			if v.Shared {
				flags = unix.MAP_SHARED | unix.MAP_FIXED
			}
			if _, err := t.sys("mmap file", unix.SYS_MMAP, v.Start, v.End-v.Start, prot, flags, fd, v.Offset); err != nil {
				return fmt.Errorf("mapping %#x-%#x of %s: %w", v.Start, v.End, v.Path, err)
			}
		case image.VmaShmem:
			fd, err := r.shmemFd(rt, v.ShmemID)
			if err != nil {
				return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
			}
			flags := uint64(unix.MAP_PRIVATE | unix.MAP_FIXED)
			if v.Shared {
				flags = unix.MAP_SHARED | unix.MAP_FIXED
			}
			if _, err := t.sys("mmap shmem", unix.SYS_MMAP, v.Start, v.End-v.Start, prot, flags, fd, v.Offset); err != nil {
				return fmt.Errorf("mapping %#x-%#x of shared memory %d: %w", v.Start, v.End, v.ShmemID, err)
			}
		case image.VmaSysvShm:
			if err := r.attachSysvShm(rt, v, prot); err != nil {
				return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
			}
		default:
			return fmt.Errorf("%w: mapping kind %q", ErrUnsupported, v.Kind)
		}
	}
	for _, v := range mm.Vmas {
		for _, a := range v.Advice {
			adv, ok := madvice[a]
			if !ok {
				continue
			}
			if _, err := t.sys("madvise "+a, unix.SYS_MADVISE, v.Start, v.End-v.Start, adv); err != nil {
				return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
			}
		}
	}
	if err := r.writePages(rt); err != nil {
		return err
	}
	return r.setMmFields(rt, opened)
}

var madvice = map[string]uint64{
	image.MadvDontfork: unix.MADV_DONTFORK, image.MadvWipeonfork: unix.MADV_WIPEONFORK,
	image.MadvDontdump: unix.MADV_DONTDUMP, image.MadvHugepage: unix.MADV_HUGEPAGE,
	image.MadvNohugepage: unix.MADV_NOHUGEPAGE, image.MadvMergeable: unix.MADV_MERGEABLE,
}

// moveSpecial moves [vvar], [vvar_vclock] and [vdso] to their saved place,
// all by the same delta so that the vdso still finds its data (KERNEL.md).
func (r *restorer) moveSpecial(t *tracee, cur map[string]procfs.Mapping, mm *image.Mm) error {
	saved := map[string]image.Vma{}
	for _, v := range mm.Vmas {
		switch v.Kind {
		case image.VmaVdso:
			saved["[vdso]"] = v
		case image.VmaVvar:
			saved["[vvar]"] = v
		case image.VmaVvarVclock:
			saved["[vvar_vclock]"] = v
		}
	}
	sv, ok := saved["[vdso]"]
	if !ok {
		for _, m := range cur {
			if _, err := t.sys("munmap special", unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
				return err
			}
		}
		return nil
	}
	cv, ok := cur["[vdso]"]
	if !ok {
		return errors.New("the stub has no [vdso]")
	}
	delta := sv.Start - cv.Start
	for name, m := range cur {
		s, ok := saved[name]
		if !ok || s.Start != m.Start+delta || s.End-s.Start != m.End-m.Start {
			return fmt.Errorf("%w: %s layout differs from the dumping kernel's (saved %#x-%#x, here %#x-%#x shifted by %#x)",
				ErrUnsupported, name, s.Start, s.End, m.Start, m.End, delta)
		}
	}
	if delta == 0 {
		return nil
	}
	// mremap cannot move a range onto itself: when a destination overlaps a
	// current special mapping, go through a free spot first.
	overlap := false
	for _, a := range cur {
		for _, b := range cur {
			if b.Start+delta < a.End && a.Start < b.End+delta {
				overlap = true
			}
		}
	}
	move := func(from, to, n uint64) error {
		_, err := t.sys("mremap special", unix.SYS_MREMAP, from, n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to)
		return err
	}
	lo, hi := ^uint64(0), uint64(0)
	for _, m := range cur {
		lo, hi = min(lo, m.Start), max(hi, m.End)
	}
	if overlap {
		var used [][2]uint64
		used = append(used, [2]uint64{lo, hi}, [2]uint64{lo + delta, hi + delta}, [2]uint64{r.gadget, r.gadget + gadgetSize})
		for _, v := range mm.Vmas {
			used = append(used, [2]uint64{v.Start, v.End})
		}
		tmp, ok := findHole(used, hi-lo)
		if !ok {
			return errors.New("no room to move the vdso")
		}
		for name, m := range cur {
			if err := move(m.Start, tmp+(m.Start-lo), m.End-m.Start); err != nil {
				return err
			}
			m.Start, m.End = tmp+(m.Start-lo), tmp+(m.End-lo)
			cur[name] = m
		}
		delta = sv.Start - cur["[vdso]"].Start
	}
	for _, m := range cur {
		if err := move(m.Start, m.Start+delta, m.End-m.Start); err != nil {
			return err
		}
	}
	return nil
}

// openIn opens path inside the task (so it resolves in the task's mount
// namespace and root) and returns the fd.
func (r *restorer) openIn(t *tracee, path string, flags uint64) (uint64, error) {
	if len(path) >= image.PageSize {
		return 0, fmt.Errorf("path too long: %d bytes", len(path))
	}
	if err := t.writeMem(r.scratch, append([]byte(path), 0)); err != nil {
		return 0, err
	}
	fd, err := t.syscall(unix.SYS_OPENAT, atFdcwd, r.scratch, flags, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s in pid %d: %w", path, t.tid, err)
	}
	return fd, nil
}

// setMmFields sets the mm_struct boundaries, auxv and exe link with
// PR_SET_MM_MAP (works without CAP_SYS_RESOURCE, KERNEL.md).
func (r *restorer) setMmFields(rt *rtask, opened map[string]uint64) error {
	t := rt.lead()
	mm := rt.rec.Mm
	exeFd := uint64(0xffffffff)
	if mm.Exe != "" {
		fd, ok := opened[mm.Exe]
		if !ok {
			var err error
			if fd, err = r.openIn(t, mm.Exe, unix.O_RDONLY|unix.O_CLOEXEC); err != nil {
				return fmt.Errorf("exe: %w", err)
			}
			opened[mm.Exe] = fd
		}
		exeFd = fd
	}
	le := binary.LittleEndian
	buf := make([]byte, 104)
	for i, v := range []uint64{mm.StartCode, mm.EndCode, mm.StartData, mm.EndData, mm.StartBrk, mm.Brk,
		mm.StartStack, mm.ArgStart, mm.ArgEnd, mm.EnvStart, mm.EnvEnd} {
		le.PutUint64(buf[8*i:], v)
	}
	auxvAddr := r.scratch + 1024
	auxv := make([]byte, 8*len(mm.Auxv))
	for i, v := range mm.Auxv {
		le.PutUint64(auxv[8*i:], v)
	}
	if len(auxv) > 0 {
		le.PutUint64(buf[88:], auxvAddr)
		le.PutUint32(buf[96:], uint32(len(auxv)))
		if err := t.writeMem(auxvAddr, auxv); err != nil {
			return err
		}
	}
	le.PutUint32(buf[100:], uint32(exeFd))
	if err := t.writeMem(r.scratch+512, buf); err != nil {
		return err
	}
	_, err := t.sys("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, r.scratch+512, 104, 0)
	return err
}
