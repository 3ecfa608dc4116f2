package seccomp

import (
	"fmt"
	"os"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Load compiles the profile and loads it for the calling thread (see the
// package doc). The caller must have set no_new_privs or hold CAP_SYS_ADMIN.
// When the profile uses SCMP_ACT_NOTIFY the returned file is the listener of
// the filter (the runtime sends it to listenerPath); otherwise it is nil.
func Load(p *specs.LinuxSeccomp) (*os.File, error) {
	f, err := Compile(p)
	if err != nil {
		return nil, err
	}
	return f.Load()
}

// Load loads a compiled filter (see the package Load).
func (f *Filter) Load() (*os.File, error) {
	if len(f.Program) == 0 {
		return nil, fmt.Errorf("empty seccomp program: %w", ErrInvalid)
	}
	prog := unix.SockFprog{
		Len:    uint16(len(f.Program)),
		Filter: (*unix.SockFilter)(unsafe.Pointer(&f.Program[0])),
	}
	flags := f.Flags
	if flags&FlagNewListener != 0 && flags&FlagTsync != 0 {
		// TSYNC returns a thread id on failure, which would be mistaken
		// for the listener fd without TSYNC_ESRCH.
		flags |= FlagTsyncESRCH
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return nil, fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER, flags %#x, %d instructions): %w", flags, len(f.Program), errno)
	}
	if flags&FlagNewListener == 0 {
		if flags&FlagTsync != 0 && r != 0 {
			return nil, fmt.Errorf("seccomp TSYNC: thread %d cannot be synchronised: %w", r, unix.ESRCH)
		}
		return nil, nil
	}
	return os.NewFile(r, "seccomp-listener"), nil
}

// Instruction must have the layout of struct sock_filter.
var _ = [1]struct{}{}[unsafe.Sizeof(Instruction{})-unsafe.Sizeof(unix.SockFilter{})]
