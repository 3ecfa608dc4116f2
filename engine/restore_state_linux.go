package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/ptrace"
)

const (
	fDupfdCloexec = unix.F_DUPFD_CLOEXEC
	erestartBlock = 516 // ERESTART_RESTARTBLOCK
)

// restoreFds installs the saved fds at their numbers. Objects are created
// (opened inside the task, or pipe2) by the first task that needs them and
// pulled by the others with pidfd_getfd, so that fds sharing an open file
// description share it again.
func (r *restorer) restoreFds(rt *rtask) error {
	rec := rt.rec
	base := rt.base
	fds := append([]image.Fd(nil), rec.Fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].Fd < fds[j].Fd })
	for _, f := range fds {
		if err := r.installFd(rt, f, base); err != nil {
			return fmt.Errorf("fd %d (%s %s): %w", f.Fd, f.Kind, f.Path, err)
		}
	}
	return nil
}

// cleanStubFds parks the stub's own fds 0-2 (its stdio, from the runtime)
// above every restored number, for external fds, and closes whatever else it
// had. It runs before anything else creates fds in the task.
func (r *restorer) cleanStubFds(rt *rtask) error {
	t := rt.lead()
	cur, err := listFds(rt.hostPid)
	if err != nil {
		return err
	}
	for _, fd := range cur {
		if fd <= 2 {
			nfd, err := t.sys("park stdio", unix.SYS_FCNTL, uint64(fd), fDupfdCloexec, uint64(rt.base))
			if err != nil {
				return err
			}
			rt.stdio[fd] = int(nfd)
			rt.temps = append(rt.temps, int(nfd))
		}
		if _, err := t.sys("close", unix.SYS_CLOSE, uint64(fd)); err != nil {
			return err
		}
	}
	return nil
}

// pullStdio gets RestoreOptions.Stdio[i] into rt from the stdio helper.
func (r *restorer) pullStdio(rt *rtask, i int) (uint64, error) {
	if r.stdio == nil {
		h, err := startStdioHelper(r.opts.Pid, r.opts.Stdio)
		if err != nil {
			return 0, err
		}
		r.stdio = h
	}
	t := rt.lead()
	pfd, err := t.sys("pidfd_open stdio helper", unix.SYS_PIDFD_OPEN, uint64(r.stdio.nspid), 0)
	if err != nil {
		return 0, err
	}
	nfd, err := t.sys("pidfd_getfd stdio", unix.SYS_PIDFD_GETFD, pfd, uint64(i), 0)
	if _, cerr := t.sys("close", unix.SYS_CLOSE, pfd); cerr != nil && err == nil {
		err = cerr
	}
	return nfd, err
}

// park moves a freshly created fd above the restored numbers, unless it
// already is the wanted number.
func (r *restorer) park(rt *rtask, fd uint64, want, base int) (uint64, error) {
	if int(fd) == want || int(fd) >= base {
		return fd, nil
	}
	t := rt.lead()
	nfd, err := t.sys("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, fDupfdCloexec, uint64(base))
	if err != nil {
		return 0, err
	}
	if _, err := t.sys("close", unix.SYS_CLOSE, fd); err != nil {
		return 0, err
	}
	return nfd, nil
}

// pull gets the fd of holder h into rt with pidfd_open + pidfd_getfd run
// inside rt (both are in the same PID namespace).
func (r *restorer) pull(rt *rtask, h holder, base int) (uint64, error) {
	if h.rt == rt {
		return uint64(h.fd), nil
	}
	t := rt.lead()
	pfd, err := t.sys("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(h.rt.rec.Pid), 0)
	if err != nil {
		return 0, err
	}
	nfd, err := t.sys("pidfd_getfd", unix.SYS_PIDFD_GETFD, pfd, uint64(h.fd), 0)
	if _, cerr := t.sys("close", unix.SYS_CLOSE, pfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return nfd, nil
}

func (r *restorer) installFd(rt *rtask, f image.Fd, base int) error {
	t := rt.lead()
	var src uint64
	var err error
	fresh := false // src is a new fd of this task, to be closed after use
	if h, ok := r.files[f.File]; ok && f.Kind != image.FdExternal {
		if src, err = r.pull(rt, h, base); err != nil {
			return err
		}
		fresh = h.rt != rt
	} else {
		switch f.Kind {
		case image.FdFile, image.FdDevice:
			flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
			if src, err = r.openIn(t, f.Path, flags|unix.O_CLOEXEC); err != nil {
				return err
			}
			fresh = true
			if f.Kind == image.FdFile && f.Pos != 0 && f.Flags&unix.O_PATH == 0 {
				if _, err := t.sys("lseek", unix.SYS_LSEEK, src, uint64(f.Pos), unix.SEEK_SET); err != nil {
					return err
				}
			}
		case image.FdPipe:
			if src, fresh, err = r.pipeEnd(rt, f, base); err != nil {
				return err
			}
		case image.FdSocket:
			if src, fresh, err = r.socketFd(rt, f, base); err != nil {
				return err
			}
		case image.FdDeleted:
			if src, err = r.deletedFd(rt, f, base); err != nil {
				return err
			}
			fresh = true
		case image.FdUnix:
			if src, fresh, err = r.unixEnd(rt, f); err != nil {
				return err
			}
		case image.FdFifo:
			if err := r.fifoKeeper(rt, f); err != nil {
				return err
			}
			flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
			if src, err = r.openIn(t, f.Path, flags|unix.O_CLOEXEC); err != nil {
				return err
			}
			fresh = true
		case image.FdInotify:
			if src, err = r.createInotify(rt, f); err != nil {
				return err
			}
			fresh = true
		case image.FdEventfd, image.FdEpoll, image.FdSignalfd, image.FdTimerfd:
			if src, err = r.createAnon(rt, f); err != nil {
				return err
			}
			fresh = true
		case image.FdMemfd:
			if src, err = r.shmemFd(rt, f.Shmem); err != nil {
				return err
			}
			if f.Pos != 0 {
				if _, err := t.sys("lseek", unix.SYS_LSEEK, src, uint64(f.Pos), unix.SEEK_SET); err != nil {
					return err
				}
			}
		case image.FdExternal:
			if r.opts.Stdio[f.Stdio] != nil {
				if src, err = r.pullStdio(rt, f.Stdio); err != nil {
					return err
				}
				fresh = true
				break
			}
			if rt.stdio[f.Stdio] < 0 {
				return fmt.Errorf("the stub has no fd %d to reconnect external stdio to", f.Stdio)
			}
			src = uint64(rt.stdio[f.Stdio])
		default:
			return fmt.Errorf("%w: fd kind %q", ErrUnsupported, f.Kind)
		}
	}
	flags := uint64(0)
	if f.CloExec {
		flags = unix.O_CLOEXEC
	}
	if int(src) != f.Fd {
		if _, err := t.sys("dup3", unix.SYS_DUP3, src, uint64(f.Fd), flags); err != nil {
			return err
		}
		if fresh {
			if _, err := t.sys("close", unix.SYS_CLOSE, src); err != nil {
				return err
			}
		}
	} else {
		fdFlags := uint64(0)
		if f.CloExec {
			fdFlags = unix.FD_CLOEXEC
		}
		if _, err := t.sys("fcntl(F_SETFD)", unix.SYS_FCNTL, src, unix.F_SETFD, fdFlags); err != nil {
			return err
		}
	}
	if _, ok := r.files[f.File]; !ok && f.Kind != image.FdExternal {
		r.files[f.File] = holder{rt, f.Fd}
		// Status flags (O_NONBLOCK...) of a description made by pipe2 or
		// socketpair, set once, when the description is first installed.
		if st := uint64(f.Flags) &^ unix.O_ACCMODE; st != 0 && (f.Kind == image.FdPipe || f.Kind == image.FdUnix) {
			if _, err := t.sys("fcntl(F_SETFL)", unix.SYS_FCNTL, uint64(f.Fd), unix.F_SETFL, st); err != nil {
				return err
			}
		}
	}
	if f.Kind == image.FdExternal {
		// The saved status flags (O_NONBLOCK, O_APPEND) of the stdio description.
		if _, err := t.sys("fcntl(F_SETFL)", unix.SYS_FCNTL, uint64(f.Fd), unix.F_SETFL, uint64(f.Flags)&^unix.O_ACCMODE); err != nil {
			return err
		}
	}
	return nil
}

// createAnon creates an eventfd, epoll, signalfd or timerfd in the task.
// Epoll targets are registered later (registerEpolls), once every fd exists.
func (r *restorer) createAnon(rt *rtask, f image.Fd) (uint64, error) {
	t := rt.lead()
	le := binary.LittleEndian
	nonblock := uint64(f.Flags) & unix.O_NONBLOCK
	switch f.Kind {
	case image.FdEventfd:
		if f.EventfdCount > 0xffffffff {
			return 0, fmt.Errorf("%w: eventfd count %d above 32 bits", ErrUnsupported, f.EventfdCount)
		}
		flags := nonblock | unix.O_CLOEXEC
		if f.EventfdSemaphore {
			flags |= unix.EFD_SEMAPHORE
		}
		return t.sys("eventfd2", unix.SYS_EVENTFD2, f.EventfdCount, flags)
	case image.FdEpoll:
		fd, err := t.sys("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
		if err == nil && len(f.Epoll) > 0 {
			r.epolls = append(r.epolls, epollReg{rt: rt, fd: f.Fd, targets: f.Epoll})
		}
		return fd, err
	case image.FdSignalfd:
		buf := make([]byte, 8)
		le.PutUint64(buf, f.SignalfdMask)
		if err := t.writeMem(r.scratch, buf); err != nil {
			return 0, err
		}
		return t.sys("signalfd4", unix.SYS_SIGNALFD4, ^uint64(0), r.scratch, 8, nonblock|unix.O_CLOEXEC)
	case image.FdTimerfd:
		tf := f.Timerfd
		fd, err := t.sys("timerfd_create", unix.SYS_TIMERFD_CREATE, uint64(tf.Clock), nonblock|unix.O_CLOEXEC)
		if err != nil {
			return 0, err
		}
		if tf.ValueNs != 0 || tf.IntervalNs != 0 {
			buf := make([]byte, 32)
			for i, v := range []int64{tf.IntervalNs / 1e9, tf.IntervalNs % 1e9, tf.ValueNs / 1e9, tf.ValueNs % 1e9} {
				le.PutUint64(buf[8*i:], uint64(v))
			}
			if tf.ValueNs == 0 { // disarmed one-shot with a period: arm it for the period
				le.PutUint64(buf[24:], 1)
			}
			if err := t.writeMem(r.scratch, buf); err != nil {
				return 0, err
			}
			if _, err := t.sys("timerfd_settime", unix.SYS_TIMERFD_SETTIME, fd, 0, r.scratch, 0); err != nil {
				return 0, err
			}
		}
		if tf.Ticks > 0 {
			buf := make([]byte, 8)
			le.PutUint64(buf, tf.Ticks)
			if err := t.writeMem(r.scratch, buf); err != nil {
				return 0, err
			}
			if _, err := t.sys("ioctl(TFD_IOC_SET_TICKS)", unix.SYS_IOCTL, fd, tfdIocSetTicks, r.scratch); err != nil {
				return 0, err
			}
		}
		return fd, nil
	}
	return 0, fmt.Errorf("%w: fd kind %q", ErrUnsupported, f.Kind)
}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64).
const tfdIocSetTicks = 0x40085400

type epollReg struct {
	rt      *rtask
	fd      int
	targets []image.EpollTarget
}

// registerEpolls adds the saved targets to every restored epoll instance.
func (r *restorer) registerEpolls() error {
	for _, e := range r.epolls {
		t := e.rt.lead()
		buf := make([]byte, 12) // struct epoll_event is packed on x86-64
		for _, tg := range e.targets {
			binary.LittleEndian.PutUint32(buf, tg.Events)
			binary.LittleEndian.PutUint64(buf[4:], tg.Data)
			if err := t.writeMem(r.scratch, buf); err != nil {
				return err
			}
			if _, err := t.sys("epoll_ctl", unix.SYS_EPOLL_CTL, uint64(e.fd), unix.EPOLL_CTL_ADD, uint64(tg.Fd), r.scratch); err != nil {
				return fmt.Errorf("pid %d epoll fd %d target %d: %w", e.rt.rec.Pid, e.fd, tg.Fd, err)
			}
		}
	}
	return nil
}

// fifoKeeper makes sure the FIFO of f is held open read-write by some task
// until the end of the restore (a temporary fd), so that reopening it in
// either direction does not block, and refills it with its saved bytes.
func (r *restorer) fifoKeeper(rt *rtask, f image.Fd) error {
	key := pipeEnd{f.Pipe, true}
	if _, ok := r.pipeEnds[key]; ok {
		return nil
	}
	p := r.pipes[f.Pipe]
	if p == nil {
		return fmt.Errorf("FIFO %d is not in the inventory", f.Pipe)
	}
	t := rt.lead()
	fd, err := r.openIn(t, f.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	if fd, err = r.park(rt, fd, -1, rt.base); err != nil {
		return err
	}
	rt.temps = append(rt.temps, int(fd))
	r.pipeEnds[key] = holder{rt, int(fd)}
	return r.fillPipe(rt, int(fd), p)
}

// fillPipe sets the size of the pipe that fd of rt refers to and writes its
// saved bytes, from the engine through its own copy of the fd.
func (r *restorer) fillPipe(rt *rtask, fd int, p *image.Pipe) error {
	pidfd, err := unix.PidfdOpen(rt.hostPid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	w, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(w)
	if cur, err := unix.FcntlInt(uintptr(w), unix.F_GETPIPE_SZ, 0); err == nil && cur != p.Size && p.Size > 0 {
		if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, p.Size); err != nil {
			return fmt.Errorf("F_SETPIPE_SZ %d: %w", p.Size, err)
		}
	}
	if len(p.Data) > 0 {
		if _, err := unix.Write(w, p.Data); err != nil {
			return fmt.Errorf("refill pipe: %w", err)
		}
	}
	return nil
}

// pipeEnd returns an fd in rt for the pipe end f: the other end's creator
// may already hold it; else the pipe is created here with pipe2, its
// buffered bytes written back, and both ends parked.
func (r *restorer) pipeEnd(rt *rtask, f image.Fd, base int) (uint64, bool, error) {
	read := f.Flags&unix.O_ACCMODE == unix.O_RDONLY
	key := pipeEnd{f.Pipe, read}
	if h, ok := r.pipeEnds[key]; ok {
		fd, err := r.pull(rt, h, base)
		return fd, h.rt != rt, err
	}
	p := r.pipes[f.Pipe]
	if p == nil {
		return 0, false, fmt.Errorf("pipe %d is not in the inventory", f.Pipe)
	}
	t := rt.lead()
	if _, err := t.sys("pipe2", unix.SYS_PIPE2, r.scratch, unix.O_CLOEXEC); err != nil {
		return 0, false, err
	}
	buf := make([]byte, 8)
	if err := t.readMem(r.scratch, buf); err != nil {
		return 0, false, err
	}
	le := binary.LittleEndian
	ends := [2]uint64{uint64(le.Uint32(buf)), uint64(le.Uint32(buf[4:]))}
	for i := range ends {
		fd, err := r.park(rt, ends[i], -1, base)
		if err != nil {
			return 0, false, err
		}
		ends[i] = fd
		rt.temps = append(rt.temps, int(fd))
	}
	r.pipeEnds[pipeEnd{f.Pipe, true}] = holder{rt, int(ends[0])}
	r.pipeEnds[pipeEnd{f.Pipe, false}] = holder{rt, int(ends[1])}
	// Size and contents, from the engine through its own copy of the write end.
	if err := r.fillPipe(rt, int(ends[1]), p); err != nil {
		return 0, false, err
	}
	end := ends[1]
	if read {
		end = ends[0]
	}
	return end, false, nil
}

// restoreTaskState restores threads and the per-process and per-thread
// state that needs the final memory: handlers, timers, rseq, credentials last.
func (r *restorer) restoreTaskState(rt *rtask) error {
	t := rt.lead()
	rec := rt.rec
	le := binary.LittleEndian
	if rec.Personality != 0 {
		if _, err := t.sys("personality", unix.SYS_PERSONALITY, rec.Personality); err != nil {
			return err
		}
	}
	if rec.ChildSubreaper {
		if _, err := t.sys("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return err
		}
	}
	if _, err := t.sys("umask", unix.SYS_UMASK, uint64(rec.Umask)); err != nil {
		return err
	}
	if err := t.writeMem(r.scratch, append([]byte(rec.Cwd), 0)); err != nil {
		return err
	}
	if _, err := t.sys("chdir "+rec.Cwd, unix.SYS_CHDIR, r.scratch); err != nil {
		return err
	}
	lim := make([]byte, 16)
	for _, l := range rec.Rlimits {
		le.PutUint64(lim, l.Cur)
		le.PutUint64(lim[8:], l.Max)
		if err := t.writeMem(r.scratch, lim); err != nil {
			return err
		}
		if _, err := t.sys(fmt.Sprintf("prlimit64 %d to %d/%d", l.Resource, l.Cur, l.Max), unix.SYS_PRLIMIT64, 0, uint64(l.Resource), r.scratch, 0); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%w (raising a hard limit needs CAP_SYS_RESOURCE)", err)
			}
			return err
		}
	}
	buf := make([]byte, 32)
	for _, sa := range rec.Sigactions {
		le.PutUint64(buf, sa.Handler)
		le.PutUint64(buf[8:], sa.Flags)
		le.PutUint64(buf[16:], sa.Restorer)
		le.PutUint64(buf[24:], sa.Mask)
		if err := t.writeMem(r.scratch, buf); err != nil {
			return err
		}
		if _, err := t.sys(fmt.Sprintf("rt_sigaction %d", sa.Signal), unix.SYS_RT_SIGACTION, uint64(sa.Signal), r.scratch, 0, 8); err != nil {
			return err
		}
	}
	for _, it := range rec.Itimers {
		// An ITIMER_REAL that has fired is re-armed only when its SIGALRM is
		// dequeued (the kernel's dequeue_signal), so a dump that finds the
		// signal pending reads a zero value with a non-zero interval.
		// setitimer with a zero value would disarm it for good: arm it one
		// interval away instead, as the pending signal's delivery would have.
		if it.Value == 0 && it.Interval != 0 {
			it.Value = it.Interval
		}
		for i, v := range []int64{it.Interval / 1e6, it.Interval % 1e6, it.Value / 1e6, it.Value % 1e6} {
			le.PutUint64(buf[8*i:], uint64(v))
		}
		if err := t.writeMem(r.scratch, buf); err != nil {
			return err
		}
		if _, err := t.sys("setitimer", unix.SYS_SETITIMER, uint64(it.Which), r.scratch, 0); err != nil {
			return err
		}
	}
	// Threads: clone3 with CLONE_THREAD and the saved TID.
	for i := range rec.Threads[1:] {
		th := &rec.Threads[i+1]
		flags := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM)
		nt, err := r.clone3(t, flags, 0, th.Tid)
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.Tid, err)
		}
		rt.threads = append(rt.threads, nt)
	}
	for i, th := range rt.threads {
		if err := r.restoreThread(rt, th, &rec.Threads[i]); err != nil {
			return fmt.Errorf("thread %d: %w", rec.Threads[i].Tid, err)
		}
	}
	if err := r.restorePosixTimers(rt); err != nil {
		return err
	}
	for _, s := range rec.SharedSigpending {
		if err := queueSignal(t, rt.hostPid, s.Raw, true, r.scratch); err != nil {
			return err
		}
	}
	if rec.Creds.NoNewPrivs {
		if _, err := t.sys("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	if rec.Ctty {
		if err := r.restoreCtty(rt); err != nil {
			return err
		}
	}
	if err := r.restoreSeccomp(rt); err != nil {
		return err
	}
	// Credentials last: the set*id calls act on the calling thread only.
	for _, th := range rt.threads {
		if err := r.restoreCreds(th, &rec.Creds); err != nil {
			return err
		}
	}
	// After the credentials: changing them resets the dumpable flag.
	if rec.Dumpable == 0 || rec.Dumpable == 1 {
		if _, err := t.sys("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(rec.Dumpable)); err != nil {
			return err
		}
	}
	return nil
}

// restorePosixTimers recreates the POSIX timers with their IDs
// (PR_TIMER_CREATE_RESTORE_IDS makes timer_create take the ID from its
// timer_id argument, KERNEL.md) and arms them with the time they had left.
// Threads exist by now, for SIGEV_THREAD_ID targets.
func (r *restorer) restorePosixTimers(rt *rtask) error {
	if len(rt.rec.PosixTimers) == 0 {
		return nil
	}
	const prTimerCreateRestoreIDs = 77
	t := rt.lead()
	le := binary.LittleEndian
	if _, err := t.sys("prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, 1, 0, 0, 0); err != nil {
		return err
	}
	for _, pt := range rt.rec.PosixTimers {
		ev := make([]byte, 64) // struct sigevent
		le.PutUint64(ev, pt.Value)
		le.PutUint32(ev[8:], uint32(pt.Signo))
		le.PutUint32(ev[12:], uint32(pt.Notify))
		le.PutUint32(ev[16:], uint32(pt.Tid))
		id := make([]byte, 4)
		le.PutUint32(id, uint32(pt.ID))
		if err := t.writeMem(r.scratch, ev); err != nil {
			return err
		}
		if err := t.writeMem(r.scratch+64, id); err != nil {
			return err
		}
		if _, err := t.sys(fmt.Sprintf("timer_create %d", pt.ID), unix.SYS_TIMER_CREATE, uint64(pt.Clock), r.scratch, r.scratch+64); err != nil {
			return err
		}
		if err := t.readMem(r.scratch+64, id); err != nil {
			return err
		}
		if got := int(le.Uint32(id)); got != pt.ID {
			return fmt.Errorf("timer_create made timer %d, want %d", got, pt.ID)
		}
		if pt.ValueNs == 0 {
			if pt.IntervalNs == 0 {
				continue // disarmed
			}
			pt.ValueNs = pt.IntervalNs // caught as it expired: a zero value would disarm it
		}
		its := make([]byte, 32)
		for i, v := range []int64{pt.IntervalNs / 1e9, pt.IntervalNs % 1e9, pt.ValueNs / 1e9, pt.ValueNs % 1e9} {
			le.PutUint64(its[8*i:], uint64(v))
		}
		if err := t.writeMem(r.scratch, its); err != nil {
			return err
		}
		if _, err := t.sys("timer_settime", unix.SYS_TIMER_SETTIME, uint64(pt.ID), 0, r.scratch, 0); err != nil {
			return err
		}
	}
	_, err := t.sys("prctl(PR_TIMER_CREATE_RESTORE_IDS, off)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, 0, 0, 0, 0)
	return err
}

// restoreCtty makes the terminal fd the controlling terminal of the session
// (TIOCSCTTY) and sets its foreground process group (TIOCSPGRP).
func (r *restorer) restoreCtty(rt *rtask) error {
	t := rt.lead()
	for _, f := range rt.rec.Fds {
		if !f.Tty {
			continue
		}
		if _, err := t.sys("ioctl(TIOCSCTTY)", unix.SYS_IOCTL, uint64(f.Fd), unix.TIOCSCTTY, 1); err != nil {
			return err
		}
		if rt.rec.Tpgid != 0 {
			buf := make([]byte, 4)
			binary.LittleEndian.PutUint32(buf, uint32(rt.rec.Tpgid))
			if err := t.writeMem(r.scratch, buf); err != nil {
				return err
			}
			if _, err := t.sys("ioctl(TIOCSPGRP)", unix.SYS_IOCTL, uint64(f.Fd), unix.TIOCSPGRP, r.scratch); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("no terminal fd for the controlling terminal")
}

// restoreSeccomp installs the filters, oldest first, on every thread (TSYNC).
func (r *restorer) restoreSeccomp(rt *rtask) error {
	t := rt.lead()
	const tsync = 1 // SECCOMP_FILTER_FLAG_TSYNC
	for i, f := range rt.rec.Seccomp {
		prog := r.scratch + 2*image.PageSize
		if uint64(len(f.Prog)) > gadgetSize-3*image.PageSize {
			return fmt.Errorf("%w: seccomp filter %d of %d instructions", ErrUnsupported, i, len(f.Prog)/8)
		}
		if err := t.writeMem(prog, f.Prog); err != nil {
			return err
		}
		hdr := make([]byte, 16) // struct sock_fprog
		binary.LittleEndian.PutUint16(hdr, uint16(len(f.Prog)/8))
		binary.LittleEndian.PutUint64(hdr[8:], prog)
		if err := t.writeMem(r.scratch, hdr); err != nil {
			return err
		}
		if _, err := t.sys(fmt.Sprintf("seccomp filter %d", i), unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, f.Flags|tsync, r.scratch); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreThread(rt *rtask, t *tracee, th *image.Thread) error {
	le := binary.LittleEndian
	if th.Comm != "" {
		if err := t.writeMem(r.scratch, append([]byte(th.Comm), 0)); err != nil {
			return err
		}
		if _, err := t.sys("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, r.scratch); err != nil {
			return err
		}
	}
	if th.RobustList != 0 {
		if _, err := t.sys("set_robust_list", unix.SYS_SET_ROBUST_LIST, th.RobustList, th.RobustListLen); err != nil {
			return err
		}
	}
	if _, err := t.sys("set_tid_address", unix.SYS_SET_TID_ADDRESS, th.TidAddress); err != nil {
		return err
	}
	if th.Pdeathsig != 0 {
		if _, err := t.sys("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(th.Pdeathsig)); err != nil {
			return err
		}
	}
	if th.Altstack != nil {
		buf := make([]byte, 24)
		le.PutUint64(buf, th.Altstack.SP)
		le.PutUint32(buf[8:], uint32(th.Altstack.Flags&^1)) // SS_ONSTACK cannot be set
		le.PutUint64(buf[16:], th.Altstack.Size)
		if err := t.writeMem(r.scratch, buf); err != nil {
			return err
		}
		if _, err := t.sys("sigaltstack", unix.SYS_SIGALTSTACK, r.scratch, 0); err != nil {
			return err
		}
	}
	if th.Rseq != nil {
		if _, err := t.sys("rseq", unix.SYS_RSEQ, th.Rseq.Addr, uint64(th.Rseq.Size), 0, uint64(th.Rseq.Signature)); err != nil {
			return err
		}
	}
	for _, s := range th.Sigpending {
		if err := queueSignal(t, rt.hostPid, s.Raw, false, r.scratch); err != nil {
			return err
		}
	}
	return nil
}

// restoreCreds sets the credentials of one thread (they are per thread):
// bounding set, then ids with PR_SET_KEEPCAPS so that the permitted set
// survives leaving uid 0, then the capability sets, then ambient ones.
func (r *restorer) restoreCreds(t *tracee, c *image.Creds) error {
	const lastCap = 63
	capLast := uint64(lastCap)
	if data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		fmt.Sscan(string(data), &capLast)
	}
	for cp := uint64(0); cp <= capLast; cp++ {
		if c.CapBnd&(1<<cp) == 0 {
			if _, err := t.sys(fmt.Sprintf("drop capability %d from the bounding set", cp), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, cp); err != nil {
				return err
			}
		}
	}
	if bits, err := t.sys("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS); err != nil {
		return err
	} else if uint32(bits) != c.Securebits {
		if _, err := t.sys("prctl(PR_SET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(c.Securebits)); err != nil {
			return err
		}
	}
	const secureKeepCaps, secureKeepCapsLocked = 4, 5
	keepLocked := c.Securebits&(1<<secureKeepCapsLocked) != 0
	if !keepLocked {
		if _, err := t.sys("prctl(PR_SET_KEEPCAPS)", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1); err != nil {
			return err
		}
	}
	buf := make([]byte, 4*len(c.Groups)+4)
	for i, g := range c.Groups {
		binary.LittleEndian.PutUint32(buf[4*i:], g)
	}
	if err := t.writeMem(r.scratch, buf); err != nil {
		return err
	}
	if _, err := t.sys("setgroups", unix.SYS_SETGROUPS, uint64(len(c.Groups)), r.scratch); err != nil {
		return err
	}
	if _, err := t.sys("setresgid", unix.SYS_SETRESGID, uint64(c.Gid[0]), uint64(c.Gid[1]), uint64(c.Gid[2])); err != nil {
		return err
	}
	if _, err := t.sys("setfsgid", unix.SYS_SETFSGID, uint64(c.Gid[3])); err != nil {
		return err
	}
	if _, err := t.sys("setresuid", unix.SYS_SETRESUID, uint64(c.Uid[0]), uint64(c.Uid[1]), uint64(c.Uid[2])); err != nil {
		return err
	}
	if _, err := t.sys("setfsuid", unix.SYS_SETFSUID, uint64(c.Uid[3])); err != nil {
		return err
	}
	// capset, _LINUX_CAPABILITY_VERSION_3: a header and two 32-bit halves.
	hdr := make([]byte, 8+24)
	le := binary.LittleEndian
	le.PutUint32(hdr, 0x20080522)
	for half := 0; half < 2; half++ {
		sh := uint(32 * half)
		le.PutUint32(hdr[8+12*half:], uint32(c.CapEff>>sh))
		le.PutUint32(hdr[8+12*half+4:], uint32(c.CapPrm>>sh))
		le.PutUint32(hdr[8+12*half+8:], uint32(c.CapInh>>sh))
	}
	if err := t.writeMem(r.scratch, hdr); err != nil {
		return err
	}
	if _, err := t.sys("capset", unix.SYS_CAPSET, r.scratch, r.scratch+8); err != nil {
		return err
	}
	for cp := uint64(0); cp <= capLast; cp++ {
		if c.CapAmb&(1<<cp) != 0 {
			if _, err := t.sys("raise ambient capability", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, cp, 0, 0); err != nil {
				return err
			}
		}
	}
	if keepLocked {
		return nil
	}
	keep := uint64(0)
	if c.Securebits&(1<<secureKeepCaps) != 0 {
		keep = 1
	}
	_, err := t.sys("prctl(PR_SET_KEEPCAPS)", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, keep)
	return err
}

// finishTask unmaps the gadget (the last injected call) and loads the saved
// registers, xstate and signal mask of every thread.
func (r *restorer) finishTask(rt *rtask) error {
	t := rt.lead()
	if rt.gadgetMapped {
		if _, err := t.sys("munmap gadget", unix.SYS_MUNMAP, r.gadget, gadgetSize); err != nil {
			return err
		}
		rt.gadgetMapped = false
	}
	for i, th := range rt.threads {
		saved := &rt.rec.Threads[i]
		regs, err := ptrace.RegsFromBytes(saved.Regs)
		if err != nil {
			return err
		}
		// Stopped inside a syscall: -ERESTARTSYS/NOINTR/NOHAND restart by
		// themselves when the saved registers are loaded (the stop is in
		// get_signal, KERNEL.md item 5); -ERESTART_RESTARTBLOCK needs the
		// restart_block of the old task, so a new one returns -EINTR.
		if int64(regs.Orig_rax) >= 0 && int64(regs.Rax) == -erestartBlock {
			regs.Rax = ^uint64(unix.EINTR) + 1
		}
		if err := ptrace.SetXState(th.tid, saved.XState); err != nil {
			if errors.Is(err, unix.EINVAL) && len(saved.XState) > 520 && binary.LittleEndian.Uint64(saved.XState[512:])&(3<<17) != 0 {
				return fmt.Errorf("%w: thread %d used AMX tiles: %v", ErrUnsupported, saved.Tid, err)
			}
			return err
		}
		if err := ptrace.SetRegs(th.tid, &regs); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(th.tid, saved.Sigmask); err != nil {
			return err
		}
	}
	return nil
}
