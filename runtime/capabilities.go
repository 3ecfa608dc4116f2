package runtime

import (
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// capNames are the capability names of linux/capability.h, index = number.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// capSet is a 64-bit capability mask.
type capSet uint64

// caps is a process's five capability sets, parsed from the spec.
type caps struct {
	Bounding, Effective, Inheritable, Permitted, Ambient capSet
}

func parseCapList(list []string) (capSet, error) {
	var s capSet
	for _, name := range list {
		n := strings.ToUpper(name)
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		found := false
		for i, c := range capNames {
			if c == n {
				s |= 1 << uint(i)
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown capability %q: %w", name, ErrInvalidConfig)
		}
	}
	return s, nil
}

// parseCaps turns the spec's capability lists into masks. An unknown name is
// an error (the spec requires failing on values that cannot be mapped).
func parseCaps(c *specs.LinuxCapabilities) (caps, error) {
	var out caps
	if c == nil {
		return out, nil
	}
	var err error
	for _, f := range []struct {
		dst  *capSet
		list []string
	}{{&out.Bounding, c.Bounding}, {&out.Effective, c.Effective}, {&out.Inheritable, c.Inheritable},
		{&out.Permitted, c.Permitted}, {&out.Ambient, c.Ambient}} {
		if *f.dst, err = parseCapList(f.list); err != nil {
			return out, err
		}
	}
	return out, nil
}

// names lists the capabilities in s.
func (s capSet) names() []string {
	var out []string
	for i, c := range capNames {
		if s&(1<<uint(i)) != 0 {
			out = append(out, c)
		}
	}
	return out
}
