package runtime

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/runtime/seccomp"
)

// checkSeccomp compiles the profile at create time so that a bad profile
// fails before anything is created.
func checkSeccomp(s *specs.LinuxSeccomp) error {
	f, err := seccomp.Compile(s)
	if err != nil {
		return fmt.Errorf("seccomp profile: %w", err)
	}
	if f.Listener() {
		return fmt.Errorf("seccomp SCMP_ACT_NOTIFY (listenerPath %q): %w", s.ListenerPath, ErrNotSupported)
	}
	return nil
}

// loadSeccomp installs the container's seccomp filter on the calling thread,
// which then execs the container's process.
func loadSeccomp(s *specs.LinuxSeccomp) error {
	l, err := seccomp.Load(s)
	if err != nil {
		return fmt.Errorf("load seccomp profile: %w", err)
	}
	if l != nil {
		l.Close()
		return fmt.Errorf("seccomp SCMP_ACT_NOTIFY: %w", ErrNotSupported)
	}
	return nil
}
