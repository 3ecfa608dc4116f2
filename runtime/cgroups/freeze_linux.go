package cgroups

import (
	"fmt"
	"time"
)

func (m *manager) Freeze() error { return m.setFrozen(true) }
func (m *manager) Thaw() error   { return m.setFrozen(false) }

// setFrozen freezes with the v1 freezer when it is mounted (legacy and
// hybrid hosts; never with both v1 and v2, see KERNEL.md), else with v2's
// cgroup.freeze, and waits for the kernel to report the state reached.
func (m *manager) setFrozen(frozen bool) error {
	if d, ok := m.v1["freezer"]; ok {
		return freezeV1(d, frozen)
	}
	if m.v2 != "" {
		return freezeV2(m.v2, frozen)
	}
	return fmt.Errorf("freeze cgroup %s: no freezer: %w", m.path, ErrUnsupported)
}

func (m *manager) State() (FreezerState, error) {
	if d, ok := m.v1["freezer"]; ok {
		s, err := readFile(d, "freezer.state")
		if err != nil {
			return "", err
		}
		return FreezerState(s), nil
	}
	if m.v2 != "" {
		return stateV2(m.v2)
	}
	return "", fmt.Errorf("freezer state of cgroup %s: no freezer: %w", m.path, ErrUnsupported)
}

// poll calls done with a growing pause (100us to 10ms) until it reports
// true or timeout passes; nudge is called every 50ms (v1: rewrite the
// state, which makes the kernel retry tasks that were busy).
func poll(timeout time.Duration, done func() (bool, error), nudge func() error) error {
	deadline := time.Now().Add(timeout)
	lastNudge := time.Now()
	wait := 100 * time.Microsecond
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		now := time.Now()
		if now.After(deadline) {
			return ErrTimeout
		}
		if nudge != nil && now.Sub(lastNudge) > 50*time.Millisecond {
			if err := nudge(); err != nil {
				return err
			}
			lastNudge = now
		}
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Millisecond)
	}
}

func freezeV1(dir string, frozen bool) error {
	want := Thawed
	if frozen {
		want = Frozen
	}
	write := func() error { return writeFile(dir, "freezer.state", string(want)) }
	if err := write(); err != nil {
		return err
	}
	var last string
	err := poll(freezeTimeout, func() (bool, error) {
		s, err := readFile(dir, "freezer.state")
		last = s
		return s == string(want), err
	}, write)
	if err == ErrTimeout {
		if frozen {
			// Leave the tasks running rather than half frozen.
			_ = writeFile(dir, "freezer.state", string(Thawed))
		}
		return fmt.Errorf("set cgroup %s freezer.state to %s: still %s after %v: %w", dir, want, last, freezeTimeout, ErrTimeout)
	}
	return err
}

func freezeV2(dir string, frozen bool) error {
	v := "0"
	if frozen {
		v = "1"
	}
	if err := writeFile(dir, "cgroup.freeze", v); err != nil {
		return err
	}
	var last string
	err := poll(freezeTimeout, func() (bool, error) {
		s, err := readFile(dir, "cgroup.events")
		if err != nil {
			return false, err
		}
		ev := parseKeyed(s)
		last = fmt.Sprintf("frozen %d", ev["frozen"])
		return (ev["frozen"] == 1) == frozen, nil
	}, nil)
	if err == ErrTimeout {
		if frozen {
			_ = writeFile(dir, "cgroup.freeze", "0")
		}
		return fmt.Errorf("write %s to cgroup %s cgroup.freeze: cgroup.events says %q after %v: %w", v, dir, last, freezeTimeout, ErrTimeout)
	}
	return err
}

func stateV2(dir string) (FreezerState, error) {
	want, err := readFile(dir, "cgroup.freeze")
	if err != nil {
		return "", err
	}
	s, err := readFile(dir, "cgroup.events")
	if err != nil {
		return "", err
	}
	return v2State(want, parseKeyed(s)), nil
}

// v2State combines cgroup.freeze (what was asked) and the frozen key of
// cgroup.events (what the kernel reached).
func v2State(freeze string, events map[string]uint64) FreezerState {
	switch {
	case freeze == "1" && events["frozen"] == 1:
		return Frozen
	case freeze == "1":
		return Freezing
	default:
		return Thawed
	}
}
