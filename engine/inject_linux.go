package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/internal/procfs"
	"github.com/cryo-run/cryo/engine/internal/ptrace"
)

// tracee is one seized thread and the means to run system calls inside it.
// Every method must run on the OS thread that seized it.
type tracee struct {
	tid int // host TID
	// regs are the registers at seize time: the template of every injected
	// call, and what the thread gets back when it is detached after a dump.
	regs ptrace.Regs
	// haveRegs says regs were read from the thread (not just zero).
	haveRegs bool
	sigmask  uint64
	// gadget is the address of a `syscall` instruction in the task.
	gadget uint64
	// mem is /proc/TID/mem opened read-write (nil until needed).
	mem *os.File
	// blocked says the sigmask was replaced by "all blocked" for injection.
	blocked bool
}

// errnoOf converts a raw syscall return value.
func errnoOf(ret uint64) error {
	if int64(ret) < 0 && int64(ret) >= -4095 {
		return unix.Errno(-int64(ret))
	}
	return nil
}

// blockSignals saves the signal mask and blocks every signal, so that
// nothing is delivered while system calls run inside the task (KERNEL.md).
func (t *tracee) blockSignals() error {
	if t.blocked {
		return nil
	}
	if err := ptrace.SetSigmask(t.tid, ^uint64(0)); err != nil {
		return err
	}
	t.blocked = true
	return nil
}

// syscall runs system call nr with args inside the stopped thread and
// returns its result (KERNEL.md "Running syscalls inside a stopped task"):
// rip = gadget, orig_rax = -1 (so that no syscall-restart logic fires on the
// way out of the stop), single step, read rax.
func (t *tracee) syscall(nr int, args ...uint64) (uint64, error) {
	if err := t.blockSignals(); err != nil {
		return 0, err
	}
	r := t.regs
	r.Rip = t.gadget
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0)
	var a [6]uint64
	copy(a[:], args)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := ptrace.SetRegs(t.tid, &r); err != nil {
		return 0, err
	}
	if err := ptrace.SingleStep(t.tid); err != nil {
		return 0, err
	}
	if err := t.waitTrap(); err != nil {
		return 0, fmt.Errorf("syscall %d: %w", nr, err)
	}
	out, err := ptrace.GetRegs(t.tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != t.gadget+2 {
		// The call may or may not have run: the thread gets its saved
		// registers back, the caller decides.
		_ = ptrace.SetRegs(t.tid, &t.regs)
		return 0, fmt.Errorf("syscall %d in %d: stopped at %#x, want %#x (rax %#x, rcx %#x, eflags %#x)", nr, t.tid, out.Rip, t.gadget+2, out.Rax, out.Rcx, out.Eflags)
	}
	if err := errnoOf(out.Rax); err != nil {
		return out.Rax, err
	}
	return out.Rax, nil
}

// waitTrap waits for the SIGTRAP of a single step. A PTRACE_EVENT_STOP
// that comes first is a trap that was still pending when the step was
// asked (a task seized in a group stop reports one stop for the seize and
// one for PTRACE_INTERRUPT): it stops before any instruction runs, so the
// step is asked again.
func (t *tracee) waitTrap() error {
	for tries := 0; ; tries++ {
		ws, err := ptrace.Wait(t.tid)
		if err != nil {
			return err
		}
		if ws.Stopped() && ptrace.Event(ws) == ptrace.EventStop && tries < 4 {
			if err := ptrace.SingleStep(t.tid); err != nil {
				return err
			}
			continue
		}
		if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP || ptrace.Event(ws) != 0 {
			return fmt.Errorf("task %d: unexpected stop %s", t.tid, describeStatus(ws))
		}
		return nil
	}
}

func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	case ws.Stopped():
		return fmt.Sprintf("stopped by %v (event %d)", ws.StopSignal(), ptrace.Event(ws))
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}

// sys is syscall with a description added to the error.
func (t *tracee) sys(what string, nr int, args ...uint64) (uint64, error) {
	r, err := t.syscall(nr, args...)
	if err != nil {
		return r, fmt.Errorf("%s in pid %d: %w", what, t.tid, err)
	}
	return r, nil
}

func (t *tracee) openMem() error {
	if t.mem != nil {
		return nil
	}
	f, err := os.OpenFile("/proc/"+strconv.Itoa(t.tid)+"/mem", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	t.mem = f
	return nil
}

// readMem reads the task's memory through /proc/PID/mem.
func (t *tracee) readMem(addr uint64, b []byte) error {
	if err := t.openMem(); err != nil {
		return err
	}
	if _, err := t.mem.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read %d bytes at %#x of pid %d: %w", len(b), addr, t.tid, err)
	}
	return nil
}

// writeMem writes the task's memory through /proc/PID/mem, which writes
// through read-only and text mappings too (FOLL_FORCE).
func (t *tracee) writeMem(addr uint64, b []byte) error {
	if err := t.openMem(); err != nil {
		return err
	}
	if _, err := t.mem.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write %d bytes at %#x of pid %d: %w", len(b), addr, t.tid, err)
	}
	return nil
}

func (t *tracee) close() {
	if t.mem != nil {
		t.mem.Close()
		t.mem = nil
	}
}

// findGadget returns the address of a `syscall` (0f 05) instruction: in
// [vdso] first (every task has one), else in any executable mapping.
func findGadget(t *tracee, maps []procfs.Mapping) (uint64, error) {
	try := func(m procfs.Mapping) (uint64, bool) {
		n := m.End - m.Start
		if n > 1<<20 {
			n = 1 << 20
		}
		buf := make([]byte, n)
		if t.readMem(m.Start, buf) != nil {
			return 0, false
		}
		if i := bytes.Index(buf, []byte{0x0f, 0x05}); i >= 0 {
			return m.Start + uint64(i), true
		}
		return 0, false
	}
	for _, m := range maps {
		if m.Path == "[vdso]" {
			if a, ok := try(m); ok {
				return a, nil
			}
		}
	}
	for _, m := range maps {
		if m.Exec && m.Path != "[vsyscall]" && m.Path != "[vdso]" {
			if a, ok := try(m); ok {
				return a, nil
			}
		}
	}
	return 0, errors.New("no syscall instruction found in any executable mapping")
}
