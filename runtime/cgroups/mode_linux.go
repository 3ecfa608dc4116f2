package cgroups

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// v1Controllers are the v1 controllers a container gets a directory in.
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true,
	"freezer": true, "net_cls": true, "net_prio": true, "blkio": true,
	"perf_event": true, "hugetlb": true, "pids": true, "rdma": true, "misc": true,
}

// hierarchies are the cgroup mounts of the host.
type hierarchies struct {
	mode Mode
	v1   map[string]string // controller -> mount point
	v2   string            // cgroup2 mount point, "" when there is none
}

// unifiedMountpoint is where cgroup2 sits on a pure v2 host.
const unifiedMountpoint = "/sys/fs/cgroup"

// detectHierarchies reads /proc/self/mountinfo.
func detectHierarchies() (*hierarchies, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup mounts: %w", err)
	}
	return hierarchiesFromMounts(mounts)
}

func hierarchiesFromMounts(mounts []*mountinfo.Info) (*hierarchies, error) {
	h := &hierarchies{v1: map[string]string{}}
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			if h.v2 == "" || m.Mountpoint == unifiedMountpoint {
				h.v2 = m.Mountpoint
			}
		case "cgroup":
			for _, opt := range strings.Split(m.VFSOptions, ",") {
				if v1Controllers[opt] {
					if _, ok := h.v1[opt]; !ok {
						h.v1[opt] = m.Mountpoint
					}
				}
			}
		}
	}
	switch {
	case h.v2 == unifiedMountpoint:
		h.mode = Unified
		h.v1 = map[string]string{}
	case len(h.v1) > 0 && h.v2 != "":
		h.mode = Hybrid
	case len(h.v1) > 0:
		h.mode = Legacy
	case h.v2 != "":
		// cgroup2 alone at an unusual place.
		h.mode = Unified
	default:
		return nil, fmt.Errorf("no cgroup hierarchy is mounted: %w", ErrUnsupported)
	}
	return h, nil
}

// DetectMode reports the cgroup layout of the host.
func DetectMode() (Mode, error) {
	h, err := detectHierarchies()
	if err != nil {
		return 0, err
	}
	return h.mode, nil
}

// ownCgroup returns the cgroup of the calling process in the v2 hierarchy
// (controller "") or in the v1 hierarchy of controller.
func ownCgroup(controller string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseProcCgroup(bufio.NewScanner(f), controller)
}

func parseProcCgroup(s *bufio.Scanner, controller string) (string, error) {
	for s.Scan() {
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if controller == "" {
			if parts[0] == "0" && parts[1] == "" {
				return parts[2], nil
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2], nil
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no %q entry in /proc/self/cgroup: %w", controller, ErrUnsupported)
}
