package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
	"github.com/cryo-run/cryo/engine/internal/ptrace"
)

// errVfork says a process of the tree is waiting for a vfork child to exec.
var errVfork = errors.New("a process is between vfork and exec")

const kcmpVM = 1 // KCMP_VM

// dtask is one process of the tree being dumped.
type dtask struct {
	pid     int // host PID
	nspid   int
	status  *procfs.Status
	stat    *procfs.Stat
	zombie  bool
	threads []*tracee // leader first
	parent  *dtask
	// scratch is a private anonymous page mapped into the task for the
	// results of injected calls (0 when not mapped).
	scratch uint64
	rec     *image.Task
	info    ProcessInfo
	root    string // the task root as seen by the engine
	// intercepted are signals caught in a signal-delivery stop while seizing,
	// per TID, as raw siginfo.
	intercepted map[int][][]byte
}

type dumper struct {
	opts   DumpOptions
	tasks  []*dtask
	byPid  map[int]*dtask
	frozen bool
	inv    image.Inventory
	files  *fileTable
	shmems *shmemTable
	result DumpResult
	dirty  *dirtyState // dirty_linux.go: trackers and the parent image
	pages  *pagePool   // copy buffers (pages_linux.go)
	// ownIPC says the tree has an IPC namespace of its own (sysvipc_linux.go).
	ownIPC bool
}

const scratchSize = 4 * image.PageSize

// Dump checkpoints the process tree rooted at opts.Pid into opts.ImageDir.
//
// On success the tree is killed, or left running with LeaveRunning. On
// failure it is left running, thawed and untraced.
func Dump(ctx context.Context, opts DumpOptions) (*DumpResult, error) {
	if opts.Pid <= 0 || opts.ImageDir == "" {
		return nil, fmt.Errorf("%w: dump needs a pid and an image directory", ErrInvalidOptions)
	}
	if opts.PreCopy && opts.Parent != "" {
		return nil, fmt.Errorf("%w: a pre-copy dump cannot have a parent", ErrInvalidOptions)
	}
	if err := os.MkdirAll(opts.ImageDir, 0o700); err != nil {
		return nil, fmt.Errorf("create image directory: %w", err)
	}
	if err := os.Chmod(opts.ImageDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(opts.ImageDir, image.InventoryFile)); err == nil {
		return nil, fmt.Errorf("%w: %s already holds an image", ErrInvalidOptions, opts.ImageDir)
	}
	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	dirty, err := newDirtyState(opts.Parent)
	if err != nil {
		return nil, fmt.Errorf("dump of pid %d: %w", opts.Pid, err)
	}
	dirty.parentFiles = opts.ParentFiles
	defer dirty.release()
	var d *dumper
	// The copy buffers, shared by every task and every attempt.
	pages := newPagePool()
	defer pages.release()
	var pre *preCopied
	var preStopped time.Duration
	var stopStart time.Time
	if opts.PreCopy {
		if pre, preStopped, err = preCopy(ctx, opts, pages); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("dump of pid %d: pre-copy: %w", opts.Pid, err)
			}
			logrus.WithError(err).WithField("pid", opts.Pid).Warn("pre-copy failed: the tree stays stopped for the whole dump")
		} else {
			dirty.usePreCopy(opts.ImageDir, pre)
		}
	}
	// A process caught between vfork and exec cannot stop until its child
	// execs: let the tree run a moment and start again.
	for attempt := 0; ; attempt++ {
		d = &dumper{opts: opts, byPid: map[int]*dtask{}, files: newFileTable(), shmems: newShmemTable(opts.ImageDir), pages: pages, dirty: dirty}
		d.files.shmems = d.shmems
		d.files.fileLocks = opts.FileLocks
		d.files.stdioIDs = opts.Stdio
		d.files.skip = dirty.isTracker
		stopStart = time.Now()
		err = d.run(ctx)
		if !errors.Is(err, errVfork) || attempt == 100 {
			break
		}
		if ferr := d.finish(false); ferr != nil {
			err = errors.Join(err, ferr)
			break
		}
		time.Sleep(time.Millisecond)
	}
	d.result.Stopped = preStopped
	if pre == nil {
		d.result.ParentBytes, d.result.ComparedBytes = dirty.stats.Reused, dirty.stats.Compared
	} else if err == nil {
		d.finishPreCopy()
	}
	if err == nil && opts.LeaveRunning {
		// Still stopped, pages read: from here on every write is tracked.
		d.armTrackers()
	}
	if err == nil && opts.Commit != nil {
		if err = opts.Commit(&d.result); err != nil {
			err = fmt.Errorf("commit image: %w", err)
		}
	}
	if ferr := d.finish(err == nil); ferr != nil {
		if err == nil {
			err = ferr
		} else {
			logrus.WithError(ferr).WithField("pid", opts.Pid).Warn("release the tree after a failed dump")
		}
	}
	d.result.Stopped += time.Since(stopStart)
	if err != nil {
		if pre != nil {
			pre.remove(opts.ImageDir)
		}
		return nil, fmt.Errorf("dump of pid %d: %w", opts.Pid, err)
	}
	return &d.result, nil
}

func (d *dumper) run(ctx context.Context) error {
	if err := d.seize(ctx); err != nil {
		return err
	}
	return d.dumpTree(ctx)
}

// seize stops every thread of the tree in a ptrace stop, its registers read.
func (d *dumper) seize(ctx context.Context) error {
	if d.opts.Freezer != nil {
		if err := d.opts.Freezer.Freeze(); err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		d.frozen = true
	}
	if err := d.seizeTree(); err != nil {
		return err
	}
	// Thaw with every thread seized and interrupted: v1-frozen tasks only
	// report their stop once thawed, and stop before running any user
	// instruction (KERNEL.md).
	if d.frozen {
		if err := d.opts.Freezer.Thaw(); err != nil {
			return fmt.Errorf("thaw: %w", err)
		}
		d.frozen = false
	}
	for _, t := range d.tasks {
		for _, th := range t.threads {
			if err := d.waitSeized(t, th); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// dumpTree records the seized tree into the image.
func (d *dumper) dumpTree(ctx context.Context) error {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	d.inv = image.Inventory{Header: image.NewHeader(), Kernel: unix.ByteSliceToString(uts.Release[:])}
	// The tree is stopped: its clocks stop here.
	d.inv.Monotonic, d.inv.Boottime = treeClocks(d.tasks[0].pid)
	d.result.StoppedAt, d.result.Monotonic, d.result.Boottime = time.Now().UTC(), d.inv.Monotonic, d.inv.Boottime
	d.result.Kernel = d.inv.Kernel
	var err error
	if d.ownIPC, err = ownIPCNamespace(d.tasks[0].pid); err != nil {
		return err
	}
	for _, t := range d.tasks {
		if err := d.dumpTask(ctx, t); err != nil {
			return fmt.Errorf("pid %d: %w", t.nspid, err)
		}
	}
	if err := d.files.dumpPipes(&d.inv); err != nil {
		return err
	}
	if err := d.dumpFdObjects(); err != nil {
		return err
	}
	if err := d.files.unix.finish(&d.inv); err != nil {
		return err
	}
	if err := d.dumpSysvIPC(); err != nil {
		return err
	}
	d.shmems.inventory(&d.inv)
	d.result.PageBytes += d.shmems.bytes
	d.result.PageFiles = append(d.result.PageFiles, d.shmems.files...)
	for _, t := range d.tasks {
		d.inv.Tasks = append(d.inv.Tasks, t.nspid)
		name := image.TaskFile(t.nspid)
		if err := image.WriteFile(d.opts.ImageDir, name, t.rec); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		d.result.RecordFiles = append(d.result.RecordFiles, name)
		d.result.Processes = append(d.result.Processes, t.info)
	}
	d.inv.RootPid = d.tasks[0].nspid
	if err := d.inv.Validate(); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	if err := image.WriteFile(d.opts.ImageDir, image.InventoryFile, &d.inv); err != nil {
		return fmt.Errorf("write inventory: %w", err)
	}
	d.result.RecordFiles = append(d.result.RecordFiles, image.InventoryFile)
	return nil
}

func listTids(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

func listChildren(pid int, tids []int) ([]int, error) {
	var out []int
	for _, tid := range tids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		if err != nil {
			return nil, fmt.Errorf("list children of %d: %w", pid, err)
		}
		for _, f := range strings.Fields(string(data)) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("children of %d: %q", pid, f)
			}
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// seizeTree walks the tree from the root, seizing and interrupting every
// thread of every process (parents before children).
func (d *dumper) seizeTree() error {
	queue := []int{d.opts.Pid}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if d.byPid[pid] != nil {
			continue
		}
		stat, err := procfs.ReadStat(pid)
		if err != nil {
			return err
		}
		status, err := procfs.ReadStatus(pid)
		if err != nil {
			return err
		}
		t := &dtask{pid: pid, stat: stat, status: status, nspid: status.NSpid[len(status.NSpid)-1], intercepted: map[int][][]byte{}}
		if len(status.NSpid) == 0 {
			return fmt.Errorf("pid %d: no NSpid", pid)
		}
		if p := d.byPid[stat.PPid]; p != nil && pid != d.opts.Pid {
			t.parent = p
		}
		d.tasks = append(d.tasks, t)
		d.byPid[pid] = t
		if stat.State == 'Z' || stat.State == 'X' {
			t.zombie = true
			continue
		}
		// A process in vfork waits, uninterruptibly, for its child to exec
		// or exit; interrupted, it would never report its stop.
		if tids0, err := listTids(pid); err == nil {
			if kids, err := listChildren(pid, tids0); err == nil {
				for _, k := range kids {
					if same, err := kcmp(pid, k, kcmpVM, 0, 0); err == nil && same == 0 {
						return fmt.Errorf("pid %d (child %d): %w", pid, k, errVfork)
					}
				}
			}
		}
		// Seize threads until the list is stable (a thread may be cloned
		// while we attach when the tree is not frozen).
		seized := map[int]bool{}
		for {
			tids, err := listTids(pid)
			if err != nil {
				return err
			}
			added := false
			for _, tid := range tids {
				if seized[tid] {
					continue
				}
				// No PTRACE_O_EXITKILL: if the engine dies, the tree must keep
				// running. SUSPEND_SECCOMP lets injected calls past the task's filters.
				opts := 0
				if status.Seccomp != 0 {
					opts = unix.PTRACE_O_SUSPEND_SECCOMP
				}
				if err := ptrace.Seize(tid, opts); err != nil {
					return fmt.Errorf("pid %d: %w", t.nspid, err)
				}
				th := &tracee{tid: tid}
				if tid == pid {
					t.threads = append([]*tracee{th}, t.threads...)
				} else {
					t.threads = append(t.threads, th)
				}
				seized[tid] = true
				added = true
				if err := ptrace.Interrupt(tid); err != nil {
					return fmt.Errorf("pid %d: %w", t.nspid, err)
				}
			}
			if !added {
				break
			}
		}
		if len(t.threads) == 0 || t.threads[0].tid != pid {
			return fmt.Errorf("pid %d: thread-group leader not seized (exited?)", t.nspid)
		}
		tids := make([]int, 0, len(t.threads))
		for _, th := range t.threads {
			tids = append(tids, th.tid)
		}
		kids, err := listChildren(pid, tids)
		if err != nil {
			return err
		}
		queue = append(queue, kids...)
	}
	return nil
}

// waitSeized waits for the PTRACE_EVENT_STOP of a seized thread. A signal
// that arrives first (signal-delivery stop) is taken out of the way,
// remembered, and queued again before the task is released or restored.
func (d *dumper) waitSeized(t *dtask, th *tracee) error {
	for {
		ws, err := ptrace.Wait(th.tid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("pid %d tid %d %s while being seized", t.nspid, th.tid, describeStatus(ws))
		}
		if ptrace.Event(ws) == ptrace.EventStop {
			break
		}
		if ptrace.Event(ws) != 0 {
			if err := ptrace.Cont(th.tid, 0); err != nil {
				return err
			}
			continue
		}
		info, err := ptrace.GetSiginfo(th.tid)
		if err != nil {
			return err
		}
		t.intercepted[th.tid] = append(t.intercepted[th.tid], info)
		if err := ptrace.Cont(th.tid, 0); err != nil {
			return err
		}
	}
	regs, err := ptrace.GetRegs(th.tid)
	if err != nil {
		return err
	}
	th.regs, th.haveRegs = regs, true
	if th.sigmask, err = ptrace.GetSigmask(th.tid); err != nil {
		return err
	}
	return nil
}

// finish releases the tree: on success it is killed (or left running), on
// failure it is left running with everything the engine changed undone.
func (d *dumper) finish(ok bool) error {
	kill := ok && !d.opts.LeaveRunning
	var errs []error
	var late []*tracee
	var traced []int // still traced after a failed detach, killed: collected below
	if err := d.files.releaseSockets(kill); err != nil {
		errs = append(errs, err)
	}
	// Undo what injection changed: the scratch mapping, registers, signal mask,
	// and queue back the signals intercepted while seizing.
	for _, t := range d.tasks {
		if t.zombie || len(t.threads) == 0 {
			continue
		}
		lead := t.threads[0]
		if lead.gadget != 0 && !kill {
			if t.scratch != 0 {
				if _, err := lead.sys("munmap scratch", unix.SYS_MUNMAP, t.scratch, scratchSize); err != nil {
					errs = append(errs, err)
				}
			}
			for _, th := range t.threads {
				for _, info := range t.intercepted[th.tid] {
					if th.gadget == 0 {
						th.gadget = lead.gadget
					}
					if err := queueSignal(th, t.pid, info, false, t.scratch); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		for _, th := range t.threads {
			// Registers are put back only if they were read: a thread
			// interrupted but never waited for has nothing to put back.
			if !kill && th.haveRegs {
				if err := ptrace.SetRegs(th.tid, &th.regs); err != nil {
					errs = append(errs, err)
				}
				if th.blocked {
					if err := ptrace.SetSigmask(th.tid, th.sigmask); err != nil {
						errs = append(errs, err)
					}
				}
			}
			th.close()
		}
	}
	// Detach with the tree frozen, so that it resumes (or dies) at once.
	if d.opts.Freezer != nil && !d.frozen {
		if err := d.opts.Freezer.Freeze(); err != nil {
			errs = append(errs, fmt.Errorf("freeze: %w", err))
		} else {
			d.frozen = true
		}
	}
	if kill && !d.frozen {
		// Without a freezer: kill while traced, then collect the ptrace exit
		// notifications so that the real parent can reap.
		for _, t := range d.tasks {
			_ = unix.Kill(t.pid, unix.SIGKILL)
		}
		var tids []int
		for _, t := range d.tasks {
			for j, th := range t.threads {
				if j == 0 && t.stat.PPid == os.Getpid() {
					continue // our own child: its owner reaps it
				}
				tids = append(tids, th.tid)
			}
		}
		waitAllGone(tids)
	} else {
		for _, t := range d.tasks {
			for i, th := range t.threads {
				err := ptrace.Detach(th.tid, 0)
				if errors.Is(err, unix.ESRCH) && kill && !(i == 0 && t.stat.PPid == os.Getpid()) {
					// Not in a ptrace-stop, so still ours: once killed its
					// exit is reported to us first, and until we collect it
					// a dying PID-namespace init waits for it forever.
					traced = append(traced, th.tid)
					continue
				}
				if errors.Is(err, unix.ESRCH) && !kill && !th.haveRegs {
					// Interrupted but not stopped yet (a v1-frozen task
					// stops only once thawed): detached below.
					late = append(late, th)
					continue
				}
				if err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, err)
				}
			}
		}
		if kill {
			for _, t := range d.tasks {
				if err := unix.Kill(t.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("kill %d: %w", t.pid, err))
				}
			}
		}
	}
	if d.frozen {
		if err := d.opts.Freezer.Thaw(); err != nil {
			errs = append(errs, fmt.Errorf("thaw: %w", err))
		}
		d.frozen = false
	}
	waitAllGone(traced)
	for _, th := range late {
		if err := waitStopAndDetach(th.tid, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	d.files.close()
	return errors.Join(errs...)
}

// waitStopAndDetach waits (polling, up to timeout) for the pending stop of
// an interrupted thread that was never waited for, and detaches it.
func waitStopAndDetach(tid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		n, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("wait for %d: %w", tid, err)
		case n == tid && (ws.Exited() || ws.Signaled()):
			return nil
		case n == tid && ws.Stopped():
			sig := 0
			if ptrace.Event(ws) == 0 {
				sig = int(ws.StopSignal()) // a signal-delivery stop: deliver it
			}
			if err := ptrace.Detach(tid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("thread %d did not stop within %v: it stays traced until the engine exits", tid, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// waitAllGone collects the ptrace notifications of killed tracees until
// each one is gone, so that their real parents can reap them. They are
// polled together, not one after the other: a thread of a dying PID
// namespace init waits in the kernel for every other task of the namespace
// to be reaped, its own zombie threads included, which wait for their
// tracer, so no fixed order is safe.
func waitAllGone(tids []int) {
	left := append([]int(nil), tids...)
	deadline := time.Now().Add(30 * time.Second)
	for len(left) > 0 {
		progress := false
		for i := 0; i < len(left); i++ {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(left[i], &ws, unix.WALL|unix.WNOHANG, nil)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil || pid == left[i] && (ws.Exited() || ws.Signaled()):
				left = append(left[:i], left[i+1:]...)
				i--
				progress = true
			case pid == left[i]:
				// A stop reported before the SIGKILL took effect: let it die.
				_ = ptrace.Cont(left[i], 0)
				progress = true
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			logrus.WithField("tids", left).Warn("killed tracees did not go away")
			return
		}
		if !progress {
			time.Sleep(time.Millisecond)
		}
	}
}

// queueSignal queues a raw siginfo to the thread (or its process, shared) by
// running rt_tgsigqueueinfo / rt_sigqueueinfo inside the task itself: a task
// may queue any si_code to itself, which another process may not.
func queueSignal(th *tracee, tgid int, info []byte, shared bool, scratch uint64) error {
	if scratch == 0 {
		return errors.New("no scratch memory to queue a signal")
	}
	if err := th.writeMem(scratch, info); err != nil {
		return err
	}
	sig := uint64(binary.LittleEndian.Uint32(info))
	// The ids are those of the task's own PID namespace: getpid/gettid inside.
	pid, err := th.sys("getpid", unix.SYS_GETPID)
	if err != nil {
		return err
	}
	if shared {
		_, err = th.sys("rt_sigqueueinfo", unix.SYS_RT_SIGQUEUEINFO, pid, sig, scratch)
		return err
	}
	tid, err := th.sys("gettid", unix.SYS_GETTID)
	if err != nil {
		return err
	}
	_, err = th.sys("rt_tgsigqueueinfo", unix.SYS_RT_TGSIGQUEUEINFO, pid, tid, sig, scratch)
	return err
}

func readlinkProc(pid int, name string) (string, error) {
	s, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		return "", fmt.Errorf("readlink /proc/%d/%s: %w", pid, name, err)
	}
	return s, nil
}

// inRoot turns a path seen by the engine into the path seen from the task's root.
func inRoot(root, p string) (string, error) {
	if root == "/" {
		return p, nil
	}
	if p == root {
		return "/", nil
	}
	if rest, ok := strings.CutPrefix(p, root+"/"); ok {
		return "/" + rest, nil
	}
	return "", fmt.Errorf("%s is outside the task root %s", p, root)
}

func (d *dumper) dumpTask(ctx context.Context, t *dtask) error {
	s := t.status
	rec := &image.Task{
		Header: image.NewHeader(),
		Pid:    t.nspid,
		Comm:   s.Name,
		Umask:  s.Umask,
	}
	t.rec = rec
	if t.parent != nil {
		rec.PPid = t.parent.nspid
	}
	nsLast := func(v []int) int {
		if len(v) == 0 {
			return 0
		}
		return v[len(v)-1]
	}
	rec.Pgid, rec.Sid = nsLast(s.NSpgid), nsLast(s.NSsid)
	t.info = ProcessInfo{Pid: t.nspid, PPid: rec.PPid, Comm: s.Name, Uid: s.Uid[0], Gid: s.Gid[0], Zombie: t.zombie}
	if t.zombie {
		rec.Zombie = true
		rec.ExitCode = int(t.stat.ExitCode)
		return nil
	}
	if len(s.NSpid) != len(d.tasks[0].status.NSpid) {
		return fmt.Errorf("%w: process is in another PID namespace than the root task", ErrUnsupported)
	}
	if s.Seccomp == 1 {
		return fmt.Errorf("%w: strict seccomp mode is not supported", ErrUnsupported)
	}
	switch s.State {
	case 'T':
		// A group stop: seizing turned it into a PTRACE_EVENT_STOP, and
		// detaching puts it back into the group stop (the kernel sets
		// JOBCTL_STOP_PENDING again on unlink while the stop is in effect).
		rec.Stopped = true
	case 't':
		return fmt.Errorf("%w: process is stopped by another tracer (state t)", ErrUnsupported)
	}
	var err error
	if t.root, err = readlinkProc(t.pid, "root"); err != nil {
		return err
	}
	if t != d.tasks[0] && t.root != d.tasks[0].root {
		return fmt.Errorf("%w: its root %s differs from the root task's (%s)", ErrUnsupported, t.root, d.tasks[0].root)
	}
	if err := d.checkNamespaces(t); err != nil {
		return err
	}

	cwd, err := readlinkProc(t.pid, "cwd")
	if err != nil {
		return err
	}
	if rec.Cwd, err = inRoot(t.root, cwd); err != nil {
		return fmt.Errorf("cwd: %w", err)
	}
	rec.Root = "/"
	t.info.Cwd = rec.Cwd
	rec.Creds = image.Creds{Uid: s.Uid, Gid: s.Gid, Groups: s.Groups, NoNewPrivs: s.NoNewPrivs,
		CapInh: s.CapInh, CapPrm: s.CapPrm, CapEff: s.CapEff, CapBnd: s.CapBnd, CapAmb: s.CapAmb}
	if s.Seccomp == 2 {
		if err := d.dumpSeccomp(t); err != nil {
			return err
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/personality", t.pid)); err == nil {
		rec.Personality, _ = strconv.ParseUint(strings.TrimSpace(string(data)), 16, 64)
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", t.pid)); err == nil {
		for _, a := range strings.Split(strings.TrimRight(string(data), "\x00"), "\x00") {
			t.info.Args = append(t.info.Args, a)
		}
	}
	// Read the mappings before the scratch page exists, so that it is not dumped.
	maps, err := procfs.ReadSmaps(t.pid)
	if err != nil {
		return err
	}
	lead := t.threads[0]
	if lead.gadget, err = findGadget(lead, maps); err != nil {
		return err
	}
	for _, th := range t.threads[1:] {
		th.gadget = lead.gadget
	}
	addr, err := lead.sys("mmap scratch", unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return err
	}
	t.scratch = addr
	bits, err := lead.sys("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return err
	}
	rec.Creds.Securebits = uint32(bits)
	dumpable, err := lead.sys("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return err
	}
	rec.Dumpable = int(dumpable)
	if _, err := lead.sys("prctl(PR_GET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, t.scratch); err != nil {
		return err
	}
	sub := make([]byte, 4)
	if err := lead.readMem(t.scratch, sub); err != nil {
		return err
	}
	rec.ChildSubreaper = binary.LittleEndian.Uint32(sub) != 0
	// Resource limits are asked inside the task: prlimit on another process
	// with other credentials needs CAP_SYS_RESOURCE, which we may not have.
	lim := make([]byte, 16)
	for r := 0; r < 16; r++ {
		if _, err := lead.sys("prlimit64", unix.SYS_PRLIMIT64, 0, uint64(r), 0, t.scratch); err != nil {
			return err
		}
		if err := lead.readMem(t.scratch, lim); err != nil {
			return err
		}
		rec.Rlimits = append(rec.Rlimits, image.Rlimit{Resource: r, Cur: binary.LittleEndian.Uint64(lim), Max: binary.LittleEndian.Uint64(lim[8:])})
	}
	if err := d.dumpSignals(t); err != nil {
		return err
	}
	for _, th := range t.threads {
		thr, err := d.dumpThread(t, th)
		if err != nil {
			return fmt.Errorf("tid %d: %w", th.tid, err)
		}
		rec.Threads = append(rec.Threads, *thr)
	}
	t.info.Threads = len(rec.Threads)
	if err := d.dumpItimers(t); err != nil {
		return err
	}
	if err := d.dumpPosixTimers(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if rec.Mm, err = d.dumpMm(t, maps); err != nil {
		return err
	}
	// A process created with CLONE_FILES shares its parent's fd table: the
	// parent's record holds the fds, the child is cloned sharing it again.
	const kcmpFiles = 2
	if p := t.parent; p != nil && !p.zombie {
		if same, err := kcmp(t.pid, p.pid, kcmpFiles, 0, 0); err == nil && same == 0 {
			rec.FilesFrom = p.nspid
		}
	}
	if rec.FilesFrom == 0 {
		for _, e := range d.tasks {
			if e == t || e.zombie || e.rec == nil {
				continue
			}
			if same, err := kcmp(t.pid, e.pid, kcmpFiles, 0, 0); err == nil && same == 0 {
				return fmt.Errorf("%w: it shares its fd table with pid %d, which is not its parent", ErrUnsupported, e.nspid)
			}
		}
		if rec.Fds, err = d.files.dumpFds(t); err != nil {
			return err
		}
	}
	for _, f := range rec.Fds {
		if f.Path != "" {
			t.info.Files = append(t.info.Files, f.Path)
		}
	}
	// A session leader with a controlling terminal: it gets it back at
	// restore through the fd that refers to it.
	if t.stat.TtyNr != 0 && rec.Sid == rec.Pid {
		for _, f := range rec.Fds {
			rec.Ctty = rec.Ctty || f.Tty
		}
		if !rec.Ctty {
			maj, min := procfs.TtyDev(t.stat.TtyNr)
			return fmt.Errorf("%w: its controlling terminal %d:%d is not one of its open external fds", ErrUnsupported, maj, min)
		}
		if fg := d.byPid[t.stat.Tpgid]; fg != nil {
			rec.Tpgid = fg.nspid
		}
	}
	return nil
}

// namespaceKinds are the namespaces a task must share with the root task:
// the restore rebuilds every task inside the namespaces of the stub.
var namespaceKinds = []string{"mnt", "net", "uts", "ipc", "user", "cgroup", "time", "pid_for_children"}

func (d *dumper) checkNamespaces(t *dtask) error {
	root := d.tasks[0]
	if t == root {
		return nil
	}
	for _, ns := range namespaceKinds {
		a, err1 := readlinkProc(t.pid, "ns/"+ns)
		b, err2 := readlinkProc(root.pid, "ns/"+ns)
		if err1 != nil || err2 != nil {
			continue // a kernel without this namespace kind
		}
		if a != b {
			return fmt.Errorf("%w: it is in another %s namespace (%s) than the root task (%s)", ErrUnsupported, ns, a, b)
		}
	}
	return nil
}

// dumpSeccomp records the filter chain; every thread must have the same.
func (d *dumper) dumpSeccomp(t *dtask) error {
	var first [][]byte
	for i, th := range t.threads {
		progs, flags, err := ptrace.SeccompFilters(th.tid)
		if err != nil {
			return err
		}
		if i == 0 {
			first = progs
			for j := range progs {
				t.rec.Seccomp = append(t.rec.Seccomp, image.SeccompFilter{Flags: flags[j], Prog: progs[j]})
			}
			continue
		}
		same := len(progs) == len(first)
		for j := 0; same && j < len(progs); j++ {
			same = string(progs[j]) == string(first[j])
		}
		if !same {
			return fmt.Errorf("%w: thread %d has other seccomp filters than the main thread", ErrUnsupported, th.tid)
		}
	}
	return nil
}

func (d *dumper) dumpSignals(t *dtask) error {
	lead := t.threads[0]
	buf := make([]byte, 32)
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := lead.syscall(unix.SYS_RT_SIGACTION, uint64(sig), 0, t.scratch, 8); err != nil {
			if errors.Is(err, unix.EINVAL) {
				continue
			}
			return fmt.Errorf("rt_sigaction %d: %w", sig, err)
		}
		if err := lead.readMem(t.scratch, buf); err != nil {
			return err
		}
		le := binary.LittleEndian
		sa := image.Sigaction{Signal: sig, Handler: le.Uint64(buf), Flags: le.Uint64(buf[8:]), Restorer: le.Uint64(buf[16:]), Mask: le.Uint64(buf[24:])}
		if sa.Handler != 0 || sa.Flags != 0 || sa.Mask != 0 {
			t.rec.Sigactions = append(t.rec.Sigactions, sa)
		}
	}
	shared, err := ptrace.PeekSiginfo(lead.tid, true)
	if err != nil {
		return err
	}
	for _, s := range shared {
		t.rec.SharedSigpending = append(t.rec.SharedSigpending, image.Siginfo{Raw: s})
	}
	return nil
}

func (d *dumper) dumpItimers(t *dtask) error {
	lead := t.threads[0]
	buf := make([]byte, 32)
	for which := 0; which < 3; which++ {
		if _, err := lead.sys("getitimer", unix.SYS_GETITIMER, uint64(which), t.scratch); err != nil {
			return err
		}
		if err := lead.readMem(t.scratch, buf); err != nil {
			return err
		}
		le := binary.LittleEndian
		iv := int64(le.Uint64(buf))*1e6 + int64(le.Uint64(buf[8:]))
		v := int64(le.Uint64(buf[16:]))*1e6 + int64(le.Uint64(buf[24:]))
		if iv != 0 || v != 0 {
			t.rec.Itimers = append(t.rec.Itimers, image.Itimer{Which: which, Interval: iv, Value: v})
		}
	}
	return nil
}

// dumpPosixTimers records the timers listed in /proc/PID/timers, with the
// time left asked inside the task (timer_gettime).
func (d *dumper) dumpPosixTimers(t *dtask) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", t.pid))
	if err != nil {
		return err
	}
	timers, err := procfs.ParseTimers(data)
	if err != nil {
		return err
	}
	lead := t.threads[0]
	buf := make([]byte, 32)
	le := binary.LittleEndian
	for _, pt := range timers {
		rt := image.PosixTimer{ID: pt.ID, Clock: pt.Clock, Signo: pt.Signo, Value: pt.Value}
		switch pt.Notify {
		case "signal":
			rt.Notify = 0
		case "none":
			rt.Notify = 1
		case "thread":
			rt.Notify = 4 // SIGEV_THREAD_ID
			st, err := procfs.ReadStatus(pt.Pid)
			if err != nil || st.Tgid != t.pid {
				return fmt.Errorf("%w: POSIX timer %d signals thread %d of another process", ErrUnsupported, pt.ID, pt.Pid)
			}
			rt.Tid = st.NSpid[len(st.NSpid)-1]
		default:
			return fmt.Errorf("%w: POSIX timer %d with notification %q", ErrUnsupported, pt.ID, pt.Notify)
		}
		if _, err := lead.sys("timer_gettime", unix.SYS_TIMER_GETTIME, uint64(pt.ID), t.scratch); err != nil {
			return err
		}
		if err := lead.readMem(t.scratch, buf); err != nil {
			return err
		}
		rt.IntervalNs = int64(le.Uint64(buf))*1e9 + int64(le.Uint64(buf[8:]))
		rt.ValueNs = int64(le.Uint64(buf[16:]))*1e9 + int64(le.Uint64(buf[24:]))
		t.rec.PosixTimers = append(t.rec.PosixTimers, rt)
	}
	return nil
}

func (d *dumper) dumpThread(t *dtask, th *tracee) (*image.Thread, error) {
	out := &image.Thread{Tid: th.tid, Regs: ptrace.RegsBytes(&th.regs), Sigmask: th.sigmask}
	st, err := procfs.ReadStatus(th.tid)
	if err != nil {
		return nil, err
	}
	out.Tid = st.NSpid[len(st.NSpid)-1]
	out.Comm = st.Name
	if out.XState, err = ptrace.GetXState(th.tid); err != nil {
		return nil, err
	}
	if d.inv.XStateSize == 0 {
		d.inv.XStateSize = len(out.XState)
	}
	rs, err := ptrace.GetRseq(th.tid)
	if err != nil {
		return nil, err
	}
	if rs.Addr != 0 {
		out.Rseq = &image.Rseq{Addr: rs.Addr, Size: rs.Size, Signature: rs.Signature}
	}
	var head, hlen uint64
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(th.tid), uintptr(unsafePtr(&head)), uintptr(unsafePtr(&hlen))); e != 0 {
		return nil, fmt.Errorf("get_robust_list: %w", e)
	}
	out.RobustList, out.RobustListLen = head, hlen
	buf := make([]byte, 24)
	if _, err := th.sys("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, t.scratch); err != nil {
		return nil, err
	}
	if err := th.readMem(t.scratch, buf[:8]); err != nil {
		return nil, err
	}
	out.TidAddress = binary.LittleEndian.Uint64(buf)
	if _, err := th.sys("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, t.scratch); err != nil {
		return nil, err
	}
	if err := th.readMem(t.scratch, buf[:4]); err != nil {
		return nil, err
	}
	out.Pdeathsig = int(binary.LittleEndian.Uint32(buf))
	if _, err := th.sys("sigaltstack", unix.SYS_SIGALTSTACK, 0, t.scratch); err != nil {
		return nil, err
	}
	if err := th.readMem(t.scratch, buf); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if as := (image.Altstack{SP: le.Uint64(buf), Flags: int32(le.Uint32(buf[8:])), Size: le.Uint64(buf[16:])}); as.Flags&ssDisable == 0 {
		out.Altstack = &as
	}
	pend, err := ptrace.PeekSiginfo(th.tid, false)
	if err != nil {
		return nil, err
	}
	for _, p := range append(t.intercepted[th.tid], pend...) {
		out.Sigpending = append(out.Sigpending, image.Siginfo{Raw: p})
	}
	return out, nil
}

// dumpMm records the address space of t and copies its pages.
func (d *dumper) dumpMm(t *dtask, maps []procfs.Mapping) (*image.Mm, error) {
	lead := t.threads[0]
	st := t.stat
	mm := &image.Mm{
		StartCode: st.StartCode, EndCode: st.EndCode, StartData: st.StartData, EndData: st.EndData,
		StartBrk: st.StartBrk, StartStack: st.StartStack,
		ArgStart: st.ArgStart, ArgEnd: st.ArgEnd, EnvStart: st.EnvStart, EnvEnd: st.EnvEnd,
	}
	brk, err := lead.sys("brk", unix.SYS_BRK, 0)
	if err != nil {
		return nil, err
	}
	mm.Brk = brk
	auxv, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", t.pid))
	if err != nil {
		return nil, err
	}
	for i := 0; i+8 <= len(auxv); i += 8 {
		mm.Auxv = append(mm.Auxv, binary.LittleEndian.Uint64(auxv[i:]))
	}
	if exe, err := readlinkProc(t.pid, "exe"); err == nil {
		exe = strings.TrimSuffix(exe, " (deleted)")
		if mm.Exe, err = inRoot(t.root, exe); err != nil {
			return nil, fmt.Errorf("exe: %w", err)
		}
	}
	var top uint64
	for _, m := range maps {
		if m.Path != "[vsyscall]" && m.End > top {
			top = m.End
		}
	}
	regions, err := d.pageRegions(t, maps, top)
	if err != nil {
		return nil, err
	}
	if err := lead.openMem(); err != nil {
		return nil, err
	}
	name := image.PagesFile(t.nspid)
	pw, err := newPageWriter(t.pid, lead.mem, d.pages, d.opts.HashPages, func(k int) (*os.File, error) {
		n := name
		if k > 0 {
			n = image.PagesPartFile(t.nspid, k)
		}
		return os.OpenFile(filepath.Join(d.opts.ImageDir, n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	if err != nil {
		return nil, err
	}
	defer pw.release()
	ri := 0
	for _, m := range maps {
		v, dumpPages, err := d.vmaOf(t, m)
		if err != nil {
			return nil, fmt.Errorf("mapping %#x-%#x %s: %w", m.Start, m.End, m.Path, err)
		}
		if v == nil {
			continue
		}
		for ri < len(regions) && regions[ri].End <= m.Start {
			ri++
		}
		for j := ri; dumpPages && j < len(regions) && regions[j].Start < m.End; j++ {
			r := regions[j]
			if r.Categories&pageIsPfnzero != 0 {
				continue // the shared zero page: restored as untouched memory
			}
			if (v.Kind == image.VmaFile || v.Kind == image.VmaShmem) && r.Categories&pageIsFile != 0 && r.Categories&pageIsSwapped == 0 {
				continue // still the file's page cache: the file has it
			}
			a, e := max(r.Start, m.Start), min(r.End, m.End)
			if d.incremental(t) {
				if err := d.emit(t, pw, v, m, a, e, r.Categories); err != nil {
					return nil, err
				}
				continue
			}
			off, err := pw.add(a, e-a)
			if err != nil {
				return nil, err
			}
			if n := len(v.Pages); n > 0 && v.Pages[n-1].Addr+v.Pages[n-1].Len == a && v.Pages[n-1].Off+v.Pages[n-1].Len == off {
				v.Pages[n-1].Len += e - a
			} else {
				v.Pages = append(v.Pages, image.PageRun{Addr: a, Len: e - a, Off: off})
			}
		}
		mm.Vmas = append(mm.Vmas, *v)
	}
	parts, digests, err := pw.finish()
	if err != nil {
		return nil, err
	}
	files := []string{name}
	for k := 1; k < parts; k++ {
		files = append(files, image.PagesPartFile(t.nspid, k))
	}
	if parts > 1 {
		mm.PagesParts, mm.PagesPartSize = files[1:], pw.partSize
	}
	for k, dg := range digests {
		if d.result.PageDigests == nil {
			d.result.PageDigests = map[string]string{}
		}
		d.result.PageDigests[files[k]] = dg
	}
	mm.PagesFile, mm.PagesSize = name, pw.off
	if err := d.finishMm(t, mm); err != nil {
		return nil, err
	}
	t.info.MemBytes = pw.off
	d.result.PageBytes += pw.off
	d.result.PageFiles = append(d.result.PageFiles, files...)
	if err := mm.Validate(); err != nil {
		return nil, err
	}
	return mm, nil
}

// vmaOf translates one mapping; it returns nil for mappings that are not
// restored (the scratch page, [vsyscall]) and whether its pages are dumped.
func (d *dumper) vmaOf(t *dtask, m procfs.Mapping) (*image.Vma, bool, error) {
	if m.Start == t.scratch {
		return nil, false, nil
	}
	v := &image.Vma{Start: m.Start, End: m.End, Shared: m.Shared, GrowsDown: m.HasFlag("gd")}
	if m.Read {
		v.Prot |= image.ProtRead
	}
	if m.Write {
		v.Prot |= image.ProtWrite
	}
	if m.Exec {
		v.Prot |= image.ProtExec
	}
	for flag, what := range map[string]string{
		"ht": "hugetlb mappings", "ss": "shadow stacks", "pf": "PFN mappings (device memory)", "io": "I/O mappings",
		"uw": "userfaultfd-registered mappings", "um": "userfaultfd-registered mappings", "ui": "userfaultfd-registered mappings",
		"lo": "locked (mlock) mappings",
	} {
		special := m.Path == "[vdso]" || m.Path == "[vvar]" || m.Path == "[vvar_vclock]" || m.Path == "[vsyscall]"
		if flag == "uw" && d.dirty.ownsUW(m) {
			continue // the engine's own dirty-page tracker (dirty_linux.go)
		}
		if m.HasFlag(flag) && !special {
			return nil, false, fmt.Errorf("%w: %s are not supported yet", ErrUnsupported, what)
		}
	}
	for _, a := range []string{image.MadvDontfork, image.MadvWipeonfork, image.MadvDontdump, image.MadvHugepage, image.MadvNohugepage, image.MadvMergeable} {
		if m.HasFlag(a) {
			v.Advice = append(v.Advice, a)
		}
	}
	switch {
	case m.Path == "[vsyscall]":
		return nil, false, nil
	case m.Path == "[vdso]":
		v.Kind = image.VmaVdso
		return v, false, nil
	case m.Path == "[vvar]":
		v.Kind = image.VmaVvar
		return v, false, nil
	case m.Path == "[vvar_vclock]":
		v.Kind = image.VmaVvarVclock
		return v, false, nil
	case m.Inode == 0:
		// Private anonymous memory, [heap], [stack], [anon:name].
		if m.Shared {
			return nil, false, fmt.Errorf("%w: shared anonymous memory is not supported yet", ErrUnsupported)
		}
		v.Kind, v.Name = image.VmaAnon, m.Path
		return v, true, nil
	case strings.HasPrefix(m.Path, "/SYSV"):
		// The inode of a System V segment's mapping is its shmid.
		if !d.ownIPC {
			return nil, false, fmt.Errorf("%w: System V shared memory segment %d of the engine's IPC namespace (the tree has no IPC namespace of its own)", ErrUnsupported, m.Inode)
		}
		v.Kind, v.ShmemID, v.Offset = image.VmaSysvShm, m.Inode, m.Offset
		return v, false, nil
	case m.Deleted && (m.Path == "/dev/zero" && m.Shared || strings.HasPrefix(m.Path, "/memfd:")):
		// Shared anonymous memory or a memfd: a shmem object of its own.
		memfd := strings.HasPrefix(m.Path, "/memfd:")
		name := strings.TrimPrefix(m.Path, "/memfd:")
		if err := d.shmems.add(m.Inode, fmt.Sprintf("/proc/%d/map_files/%x-%x", t.pid, m.Start, m.End), memfd, name); err != nil {
			return nil, false, err
		}
		v.Kind, v.ShmemID, v.Offset = image.VmaShmem, m.Inode, m.Offset
		return v, !m.Shared, nil
	case m.Deleted:
		return nil, false, fmt.Errorf("%w: mapping of the deleted file %s", ErrUnsupported, m.Path)
	case strings.HasPrefix(m.Path, "/"):
		p, err := inRoot(t.root, m.Path)
		if err != nil {
			return nil, false, err
		}
		v.Kind, v.Path, v.Offset = image.VmaFile, p, m.Offset
		v.FileWrite = m.Shared && m.HasFlag("mw") && m.Write
		if m.Shared {
			if m.HasFlag("mw") {
				v.FileWrite = true
			}
			// MAP_SHARED: the data lives in the file.
			return v, false, nil
		}
		return v, true, nil
	}
	return nil, false, fmt.Errorf("%w: unknown mapping %q", ErrUnsupported, m.Path)
}

const ssDisable = 2 // SS_DISABLE
