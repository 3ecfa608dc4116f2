package cgroups

import (
	"context"
	"fmt"
	"path"
	"strings"
	"syscall"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Manager manages the cgroup of one container in every hierarchy of the host.
type Manager interface {
	// Apply puts the process pid in the cgroup, creating the cgroup if it
	// does not exist.
	Apply(pid int) error
	// Set applies the resources (nil does nothing). Fields left nil or
	// zero are not touched.
	Set(r *specs.LinuxResources) error
	// Freeze freezes every task of the cgroup and returns once the kernel
	// reports the cgroup FROZEN. It satisfies engine.Freezer.
	Freeze() error
	// Thaw thaws the cgroup and returns once the kernel reports it THAWED.
	Thaw() error
	// State reports the freezer state.
	State() (FreezerState, error)
	// Pids lists the thread-group ids of every process in the cgroup and
	// its descendants, sorted.
	Pids() ([]int, error)
	// Stats reads the statistics of the cgroup.
	Stats() (*Stats, error)
	// OOMEvents reports each OOM kill in the cgroup with one value on the
	// returned channel (events that arrive while the reader is busy are
	// coalesced). The channel is closed when ctx is done or the cgroup is
	// removed.
	OOMEvents(ctx context.Context) (<-chan struct{}, error)
	// Kill sends sig to every process of the cgroup. SIGKILL leaves the
	// cgroup thawed so that the processes die; another signal leaves the
	// freezer state as it was.
	Kill(sig syscall.Signal) error
	// Path is the absolute cgroup path, valid for Load.
	Path() string
	// Paths maps each controller ("" for the v2 hierarchy) to the
	// directory of the cgroup in it.
	Paths() map[string]string
	// Mode is the host's cgroup layout.
	Mode() Mode
	// Delete removes the cgroup (and any child cgroup) from every
	// hierarchy, retrying while exiting processes drain. It does not kill:
	// call Kill(SIGKILL) first for a forced delete. Deleting a cgroup that
	// does not exist is not an error.
	Delete() error
}

// FreezerState is the state of the cgroup freezer.
type FreezerState string

// Freezer states, with the strings of the v1 freezer.state file.
const (
	Thawed   FreezerState = "THAWED"
	Freezing FreezerState = "FREEZING"
	Frozen   FreezerState = "FROZEN"
)

// Mode is the cgroup layout of the host.
type Mode int

// Cgroup layouts.
const (
	// Legacy: v1 hierarchies only.
	Legacy Mode = iota + 1
	// Hybrid: v1 controllers plus a cgroup2 hierarchy elsewhere.
	Hybrid
	// Unified: cgroup2 mounted at /sys/fs/cgroup.
	Unified
)

func (m Mode) String() string {
	switch m {
	case Legacy:
		return "legacy"
	case Hybrid:
		return "hybrid"
	case Unified:
		return "unified"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Stats holds the statistics of the cgroup in containerd's types: V1 for the
// v1 controllers (legacy and hybrid), V2 for the v2 hierarchy (unified and
// hybrid; on a hybrid host it has what v2 knows without controllers: cpu
// usage, pressure, and the controllers only v2 has).
type Stats struct {
	V1 *v1stats.Metrics
	V2 *v2stats.Metrics
}

// DefaultPath is the cgroup path of a container whose spec has none.
func DefaultPath(id string) string {
	return "/cryo/" + id
}

// cleanPath validates an OCI cgroupsPath and joins a relative one to base
// (the caller's own cgroup), returning an absolute clean path.
func cleanPath(p, base string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty cgroups path: %w", ErrInvalid)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return "", fmt.Errorf("cgroups path %q has a \"..\" element: %w", p, ErrInvalid)
		}
	}
	if !path.IsAbs(p) {
		p = path.Join("/", base, p)
	}
	p = path.Clean(p)
	if p == "/" {
		return "", fmt.Errorf("cgroups path %q is the root cgroup: %w", p, ErrInvalid)
	}
	return p, nil
}
