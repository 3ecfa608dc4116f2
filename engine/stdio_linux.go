package engine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/internal/procfs"
)

// stdioHelper is a short-lived process that the engine starts inside the
// restored tree's PID namespace holding RestoreOptions.Stdio as its fds 0-2,
// so that restored tasks can pull them with pidfd_open + pidfd_getfd: a
// task in a child PID namespace cannot name the engine itself (KERNEL.md:
// pidfd_open of the engine fails with ESRCH from there).
type stdioHelper struct {
	cmd   *exec.Cmd
	nspid int
}

// startStdioHelper runs a copy of the stub in the PID namespace of pid with
// files as its stdio. The fork happens on an OS thread that joined that
// namespace for its children (setns(CLONE_NEWPID)) and goes back to its own
// right after. A thread that cannot go back is never unlocked, so it exits
// with its goroutine -- which is only the fallback: a thread exiting sends
// the parent-death signal to every process it forked (Pdeathsig), so threads
// must not be thrown away lightly.
func startStdioHelper(pid int, files [3]*os.File) (*stdioHelper, error) {
	type result struct {
		h   *stdioHelper
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// False from the moment the thread joins the tree's namespace
		// until it is back in its own.
		restored := true
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		h, err := func() (*stdioHelper, error) {
			self, err := unix.Open("/proc/thread-self/ns/pid_for_children", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(self)
			ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(ns)
			if err := unix.Setns(ns, unix.CLONE_NEWPID); err != nil {
				return nil, fmt.Errorf("setns: %w", err)
			}
			restored = false
			defer func() { restored = unix.Setns(self, unix.CLONE_NEWPID) == nil }()
			mfd, err := unix.MemfdCreate("cryo-stdio", unix.MFD_CLOEXEC)
			if err != nil {
				return nil, err
			}
			stub := os.NewFile(uintptr(mfd), "cryo-stdio")
			defer stub.Close()
			if _, err := stub.Write(Stub()); err != nil {
				return nil, err
			}
			cmd := &exec.Cmd{Path: "/proc/self/fd/3", Args: []string{"cryo-stdio"}, ExtraFiles: []*os.File{stub}}
			cmd.Stdin, cmd.Stdout, cmd.Stderr = files[0], files[1], files[2]
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return &stdioHelper{cmd: cmd}, nil
		}()
		ch <- result{h, err}
	}()
	res := <-ch
	if res.err != nil {
		return nil, fmt.Errorf("start the stdio helper: %w", res.err)
	}
	h := res.h
	// Its fds 0-2 are in place once it runs the stub.
	deadline := time.Now().Add(5 * time.Second)
	for {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(h.cmd.Process.Pid) + "/exe")
		if err == nil && exe == "/memfd:cryo-stdio (deleted)" {
			break
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, errors.New("the stdio helper did not start")
		}
		time.Sleep(100 * time.Microsecond)
	}
	st, err := procfs.ReadStatus(h.cmd.Process.Pid)
	if err != nil {
		h.stop()
		return nil, err
	}
	h.nspid = st.NSpid[len(st.NSpid)-1]
	return h, nil
}

func (h *stdioHelper) stop() {
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}
