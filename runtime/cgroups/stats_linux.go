package cgroups

import (
	"fmt"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Stats reads the statistics with containerd/cgroups' readers: cgroup1 for
// the v1 controllers, cgroup2 for the v2 hierarchy. The v2 part leaves out
// memory when v2 has no memory controller (hybrid hosts).
func (m *manager) Stats() (*Stats, error) {
	var st Stats
	if len(m.v1) > 0 {
		cg, err := cgroup1.Load(cgroup1.StaticPath(m.path))
		if err != nil {
			return nil, fmt.Errorf("stats of cgroup %s: %w", m.path, err)
		}
		if st.V1, err = cg.Stat(cgroup1.IgnoreNotExist); err != nil {
			return nil, fmt.Errorf("stats of cgroup %s: %w", m.path, err)
		}
	}
	if m.v2 != "" {
		cg, err := cgroup2.Load(m.path, cgroup2.WithMountpoint(m.v2root))
		if err != nil {
			return nil, fmt.Errorf("stats of cgroup %s: %w", m.v2, err)
		}
		mask := cgroup2.StatAll
		if !m.v2Has("memory") {
			mask &^= cgroup2.StatMemory | cgroup2.StatMemoryEvents
		}
		if st.V2, err = cg.StatFiltered(mask); err != nil {
			return nil, fmt.Errorf("stats of cgroup %s: %w", m.v2, err)
		}
	}
	return &st, nil
}
