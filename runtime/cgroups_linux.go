package runtime

import (
	"github.com/cryo-run/cryo/runtime/cgroups"
)

func cgroupFrozen(m cgroups.Manager) (bool, error) {
	st, err := m.State()
	return st == cgroups.Frozen, err
}
