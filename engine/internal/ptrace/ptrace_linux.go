// Package ptrace wraps the ptrace requests the checkpoint engine uses, with
// raw syscalls where golang.org/x/sys has no amd64 wrapper (GETREGSET of
// NT_X86_XSTATE, signal masks, rseq configuration).
//
// Every request must come from the OS thread that attached (KERNEL.md:
// GETREGS from a sibling thread gives ESRCH): callers lock their goroutine
// to its thread (runtime.LockOSThread) for the whole life of a trace.
package ptrace

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Requests and constants missing from x/sys.
const (
	reqGetSigmask     = 0x420a
	reqSetSigmask     = 0x420b
	reqPeekSiginfo    = 0x4209
	reqGetRseqConfig  = 0x420f
	ntPrstatus        = 1
	ntX86XState       = 0x202
	peekSiginfoShared = 1
	EventStop         = unix.PTRACE_EVENT_STOP
	xstateMax         = 64 * 1024
)

// Regs is struct user_regs_struct.
type Regs = unix.PtraceRegs

// RegsSize is sizeof(struct user_regs_struct).
const RegsSize = int(unsafe.Sizeof(Regs{}))

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptracePtr is ptrace with data a pointer to Go memory. It must stay an
// unsafe.Pointer until the system call itself: converted to a uintptr any
// earlier, the object it points to may move with its goroutine's stack (a
// stack grows by being copied) before the kernel reads or writes it, and
// the kernel then uses the old copy (registers read back as zeros).
func ptracePtr(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Seize attaches to pid with PTRACE_SEIZE and the given options (PTRACE_O_*).
func Seize(pid int, opts int) error {
	if err := ptrace(unix.PTRACE_SEIZE, pid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace seize %d: %w", pid, err)
	}
	return nil
}

// Interrupt asks a seized task to stop (PTRACE_INTERRUPT).
func Interrupt(pid int) error {
	if err := ptrace(unix.PTRACE_INTERRUPT, pid, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt %d: %w", pid, err)
	}
	return nil
}

// Detach detaches from pid, delivering sig (0 for none).
func Detach(pid int, sig int) error {
	if err := ptrace(unix.PTRACE_DETACH, pid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace detach %d: %w", pid, err)
	}
	return nil
}

// Cont resumes pid, delivering sig.
func Cont(pid int, sig int) error {
	if err := ptrace(unix.PTRACE_CONT, pid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace cont %d: %w", pid, err)
	}
	return nil
}

// SingleStep resumes pid for one instruction.
func SingleStep(pid int) error {
	if err := ptrace(unix.PTRACE_SINGLESTEP, pid, 0, 0); err != nil {
		return fmt.Errorf("ptrace singlestep %d: %w", pid, err)
	}
	return nil
}

// Wait waits for a state change of the traced task pid (__WALL: threads too).
func Wait(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait for %d: %w", pid, err)
		}
		return ws, nil
	}
}

// Event returns the PTRACE_EVENT_* of a stop status (0 for a plain signal stop).
func Event(ws unix.WaitStatus) int { return int(ws>>16) & 0xff }

func getRegset(pid int, nt uintptr, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptracePtr(unix.PTRACE_GETREGSET, pid, nt, unsafe.Pointer(&iov)); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

func setRegset(pid int, nt uintptr, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	return ptracePtr(unix.PTRACE_SETREGSET, pid, nt, unsafe.Pointer(&iov))
}

// GetRegs reads the general registers (GETREGSET NT_PRSTATUS).
func GetRegs(pid int) (Regs, error) {
	var r Regs
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&r)), RegsSize)
	n, err := getRegset(pid, ntPrstatus, buf)
	if err == nil && n != RegsSize {
		err = fmt.Errorf("got %d bytes, want %d", n, RegsSize)
	}
	if err != nil {
		return r, fmt.Errorf("get registers of %d: %w", pid, err)
	}
	return r, nil
}

// SetRegs writes the general registers (SETREGSET NT_PRSTATUS).
func SetRegs(pid int, r *Regs) error {
	buf := unsafe.Slice((*byte)(unsafe.Pointer(r)), RegsSize)
	if err := setRegset(pid, ntPrstatus, buf); err != nil {
		return fmt.Errorf("set registers of %d: %w", pid, err)
	}
	return nil
}

// RegsBytes returns the raw bytes of r.
func RegsBytes(r *Regs) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(r)), RegsSize)...)
}

// RegsFromBytes decodes raw NT_PRSTATUS bytes.
func RegsFromBytes(b []byte) (Regs, error) {
	var r Regs
	if len(b) != RegsSize {
		return r, fmt.Errorf("registers of %d bytes, want %d", len(b), RegsSize)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), RegsSize), b)
	return r, nil
}

// GetXState reads the extended FPU state (NT_X86_XSTATE).
func GetXState(pid int) ([]byte, error) {
	buf := make([]byte, xstateMax)
	n, err := getRegset(pid, ntX86XState, buf)
	if err != nil {
		return nil, fmt.Errorf("get xstate of %d: %w", pid, err)
	}
	return buf[:n], nil
}

// SetXState writes the extended FPU state (NT_X86_XSTATE).
func SetXState(pid int, x []byte) error {
	if len(x) == 0 {
		return nil
	}
	if err := setRegset(pid, ntX86XState, x); err != nil {
		return fmt.Errorf("set xstate of %d: %w", pid, err)
	}
	return nil
}

// GetSigmask reads the blocked-signal mask of pid.
func GetSigmask(pid int) (uint64, error) {
	var m uint64
	if err := ptracePtr(reqGetSigmask, pid, 8, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("get sigmask of %d: %w", pid, err)
	}
	return m, nil
}

// SetSigmask sets the blocked-signal mask of pid.
func SetSigmask(pid int, m uint64) error {
	if err := ptracePtr(reqSetSigmask, pid, 8, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("set sigmask of %d: %w", pid, err)
	}
	return nil
}

// GetEventMsg returns PTRACE_GETEVENTMSG (the new TID after a clone event).
func GetEventMsg(pid int) (uint64, error) {
	var m uint64
	if err := ptracePtr(unix.PTRACE_GETEVENTMSG, pid, 0, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("get event message of %d: %w", pid, err)
	}
	return m, nil
}

// RseqConfig is struct ptrace_rseq_configuration.
type RseqConfig struct {
	Addr      uint64
	Size      uint32
	Signature uint32
	Flags     uint32
	Pad       uint32
}

// GetRseq returns the rseq registration of pid (Addr 0 when none).
func GetRseq(pid int) (RseqConfig, error) {
	var c RseqConfig
	if err := ptracePtr(reqGetRseqConfig, pid, unsafe.Sizeof(c), unsafe.Pointer(&c)); err != nil {
		return c, fmt.Errorf("get rseq configuration of %d: %w", pid, err)
	}
	return c, nil
}

// PeekSiginfo returns the queued signals of pid without dequeuing them: the
// per-thread queue, or the shared (process) queue when shared is set. Each
// entry is a raw 128-byte siginfo_t.
func PeekSiginfo(pid int, shared bool) ([][]byte, error) {
	type args struct {
		Off   uint64
		Flags uint32
		Nr    int32
	}
	var out [][]byte
	buf := make([]byte, 128*32)
	a := args{Nr: 32}
	if shared {
		a.Flags = peekSiginfoShared
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PTRACE, reqPeekSiginfo, uintptr(pid), uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e != 0 {
			return nil, fmt.Errorf("peek siginfo of %d: %w", pid, e)
		}
		for i := 0; i < int(n); i++ {
			out = append(out, append([]byte(nil), buf[i*128:(i+1)*128]...))
		}
		if int(n) < int(a.Nr) {
			return out, nil
		}
		a.Off += uint64(n)
	}
}

// GetSiginfo returns the raw siginfo_t of the signal that caused the current
// signal-delivery stop.
func GetSiginfo(pid int) ([]byte, error) {
	buf := make([]byte, 128)
	if err := ptracePtr(unix.PTRACE_GETSIGINFO, pid, 0, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("get siginfo of %d: %w", pid, err)
	}
	return buf, nil
}

// SeccompFilters returns the seccomp filters of pid, oldest first, with the
// flags each was installed with (PTRACE_SECCOMP_GET_FILTER/_GET_METADATA).
func SeccompFilters(pid int) (progs [][]byte, flags []uint64, err error) {
	const getFilter, getMetadata = 0x420c, 0x420d
	for i := 0; ; i++ {
		n, _, e := unix.RawSyscall6(unix.SYS_PTRACE, getFilter, uintptr(pid), uintptr(i), 0, 0, 0)
		if e == unix.ENOENT {
			break
		}
		if e != 0 {
			return nil, nil, fmt.Errorf("get seccomp filter %d of %d: %w", i, pid, e)
		}
		buf := make([]byte, 8*n)
		if _, _, e := unix.RawSyscall6(unix.SYS_PTRACE, getFilter, uintptr(pid), uintptr(i), uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
			return nil, nil, fmt.Errorf("get seccomp filter %d of %d: %w", i, pid, e)
		}
		md := struct{ FilterOff, Flags uint64 }{FilterOff: uint64(i)}
		if _, _, e := unix.RawSyscall6(unix.SYS_PTRACE, getMetadata, uintptr(pid), unsafe.Sizeof(md), uintptr(unsafe.Pointer(&md)), 0, 0); e != 0 {
			return nil, nil, fmt.Errorf("get seccomp metadata %d of %d: %w", i, pid, e)
		}
		// Index 0 is the most recent filter: prepend to get the oldest first.
		progs = append([][]byte{buf}, progs...)
		flags = append([]uint64{md.Flags}, flags...)
	}
	return progs, flags, nil
}

// SetOptions sets the ptrace options of pid.
func SetOptions(pid int, opts int) error {
	if err := ptrace(unix.PTRACE_SETOPTIONS, pid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace setoptions %d: %w", pid, err)
	}
	return nil
}
