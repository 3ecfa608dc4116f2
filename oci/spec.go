package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ConfigFile is the name of the runtime configuration inside a bundle.
const ConfigFile = "config.json"

// ErrInvalidBundle is returned (wrapped) when a bundle's config.json does not
// follow the OCI runtime specification.
var ErrInvalidBundle = errors.New("invalid bundle config")

// LoadSpec reads and validates <bundle>/config.json. A relative root.path is
// resolved against the bundle directory, so callers always get an absolute
// rootfs path back.
func LoadSpec(bundle string) (*specs.Spec, error) {
	abs, err := filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", bundle, err)
	}
	data, err := os.ReadFile(filepath.Join(abs, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	s, err := ParseSpec(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", abs, err)
	}
	if !filepath.IsAbs(s.Root.Path) {
		s.Root.Path = filepath.Join(abs, s.Root.Path)
	}
	return s, nil
}

// ParseSpec decodes and validates a config.json document. It is pure (no file
// system access) so it can be fuzzed.
func ParseSpec(data []byte) (*specs.Spec, error) {
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrInvalidBundle, err)
	}
	if err := ValidateSpec(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

var knownNamespaces = map[specs.LinuxNamespaceType]bool{
	specs.PIDNamespace: true, specs.NetworkNamespace: true, specs.MountNamespace: true,
	specs.IPCNamespace: true, specs.UTSNamespace: true, specs.UserNamespace: true,
	specs.CgroupNamespace: true, specs.TimeNamespace: true,
}

// ValidateSpec checks the parts of a spec that the runtime relies on, with the
// rules of the OCI runtime specification v1.2 (stricter than runc where runc
// tolerates invalid input, e.g. relative mount destinations).
func ValidateSpec(s *specs.Spec) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidBundle, fmt.Sprintf(format, args...))
	}
	if s.Version == "" {
		return bad("ociVersion is empty")
	}
	if !strings.HasPrefix(s.Version, "1.") {
		return bad("ociVersion %q is not 1.x", s.Version)
	}
	if s.Root == nil || s.Root.Path == "" {
		return bad("root.path is required")
	}
	if p := s.Process; p != nil {
		if p.Cwd == "" || !filepath.IsAbs(p.Cwd) {
			return bad("process.cwd %q must be an absolute path", p.Cwd)
		}
		seen := map[string]bool{}
		for _, rl := range p.Rlimits {
			if !strings.HasPrefix(rl.Type, "RLIMIT_") {
				return bad("rlimit type %q is not RLIMIT_*", rl.Type)
			}
			if seen[rl.Type] {
				return bad("rlimit %s given twice", rl.Type)
			}
			if rl.Soft > rl.Hard {
				return bad("rlimit %s: soft %d above hard %d", rl.Type, rl.Soft, rl.Hard)
			}
			seen[rl.Type] = true
		}
		for _, e := range p.Env {
			if !strings.Contains(e, "=") {
				return bad("process.env entry %q has no '='", e)
			}
		}
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return bad("mount destination %q must be an absolute path", m.Destination)
		}
	}
	if s.Hooks != nil {
		for _, list := range [][]specs.Hook{s.Hooks.Prestart, s.Hooks.CreateRuntime, //nolint:staticcheck // prestart is the legacy alias we still honour
			s.Hooks.CreateContainer, s.Hooks.StartContainer, s.Hooks.Poststart, s.Hooks.Poststop} {
			for _, h := range list {
				if !filepath.IsAbs(h.Path) {
					return bad("hook path %q must be absolute", h.Path)
				}
				if h.Timeout != nil && *h.Timeout <= 0 {
					return bad("hook %s: timeout must be positive", h.Path)
				}
			}
		}
	}
	if l := s.Linux; l != nil {
		seen := map[specs.LinuxNamespaceType]bool{}
		userns := false
		for _, ns := range l.Namespaces {
			if !knownNamespaces[ns.Type] {
				return bad("unknown namespace type %q", ns.Type)
			}
			if seen[ns.Type] {
				return bad("namespace %s given twice", ns.Type)
			}
			seen[ns.Type] = true
			if ns.Path != "" && !filepath.IsAbs(ns.Path) {
				return bad("namespace %s path %q must be absolute", ns.Type, ns.Path)
			}
			if ns.Type == specs.UserNamespace {
				userns = true
			}
		}
		if !userns && (len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0) {
			return bad("uidMappings/gidMappings given without a user namespace")
		}
		if len(l.TimeOffsets) > 0 && !seen[specs.TimeNamespace] {
			return bad("timeOffsets given without a time namespace")
		}
		for clock := range l.TimeOffsets {
			if clock != "monotonic" && clock != "boottime" {
				return bad("timeOffsets: unknown clock %q", clock)
			}
		}
		if s.Hostname != "" && !seen[specs.UTSNamespace] {
			return bad("hostname requires a uts namespace")
		}
		if s.Domainname != "" && !seen[specs.UTSNamespace] {
			return bad("domainname requires a uts namespace")
		}
		switch l.RootfsPropagation {
		case "", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable":
		default:
			return bad("rootfsPropagation %q is not a propagation mode", l.RootfsPropagation)
		}
		for _, d := range l.Devices {
			if !filepath.IsAbs(d.Path) {
				return bad("device path %q must be absolute", d.Path)
			}
			switch d.Type {
			case "c", "u", "b", "p":
			default:
				return bad("device %s: type %q is not c, u, b or p", d.Path, d.Type)
			}
		}
	}
	return nil
}
