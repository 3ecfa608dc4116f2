// Package cgplaceholder is a minimal cgroup manager used by the runtime until
// runtime/cgroups lands; it is deleted then. It creates the container's cgroup
// in every mounted hierarchy (v1 controllers and the v2 tree), moves pids in,
// freezes with the v1 freezer (or cgroup.freeze on pure v2), lists pids and
// removes the cgroup.
package cgplaceholder

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Manager is a container cgroup across hierarchies.
type Manager struct {
	path    string
	dirs    []string // one per hierarchy
	freezer string   // dir holding freezer.state (v1) or cgroup.freeze (v2)
	v2      bool     // freezer is cgroup v2
}

func hierarchies() (mounts []string, v2only bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return nil, false, fmt.Errorf("statfs /sys/fs/cgroup: %w", err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return []string{"/sys/fs/cgroup"}, true, nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		i := 0
		for i < len(fields) && fields[i] != "-" {
			i++
		}
		if i+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		fstype := fields[i+1]
		if (fstype == "cgroup" || fstype == "cgroup2") && strings.HasPrefix(fields[4], "/sys/fs/cgroup/") {
			mounts = append(mounts, fields[4])
		}
	}
	return mounts, false, sc.Err()
}

// New prepares the manager for cgroupsPath (created on Apply).
func New(cgroupsPath string) (*Manager, error) {
	if !filepath.IsAbs(cgroupsPath) {
		cgroupsPath = "/" + cgroupsPath
	}
	mounts, v2only, err := hierarchies()
	if err != nil {
		return nil, err
	}
	m := &Manager{path: cgroupsPath, v2: v2only}
	for _, mp := range mounts {
		d := filepath.Join(mp, cgroupsPath)
		m.dirs = append(m.dirs, d)
		if v2only {
			m.freezer = d
		} else if filepath.Base(mp) == "freezer" {
			m.freezer = d
		}
	}
	if m.freezer == "" {
		return nil, errors.New("no cgroup freezer found")
	}
	return m, nil
}

// Path is the container's cgroup path.
func (m *Manager) Path() string { return m.path }

// Apply creates the cgroup and moves pid into it.
func (m *Manager) Apply(pid int) error {
	for _, d := range m.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if strings.HasPrefix(d, "/sys/fs/cgroup/cpuset/") {
			// A new v1 cpuset has no cpus or mems: inherit them at every level.
			cur := "/sys/fs/cgroup/cpuset"
			for _, part := range strings.Split(strings.TrimPrefix(d, cur+"/"), "/") {
				parent := cur
				cur = filepath.Join(cur, part)
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					if b, _ := os.ReadFile(filepath.Join(cur, f)); len(strings.TrimSpace(string(b))) == 0 {
						b, _ = os.ReadFile(filepath.Join(parent, f))
						_ = os.WriteFile(filepath.Join(cur, f), b, 0o644)
					}
				}
			}
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("add pid %d to cgroup %s: %w", pid, d, err)
		}
	}
	return nil
}

// Set applies the memory limit and pids limit (the placeholder's subset).
func (m *Manager) Set(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	for _, d := range m.dirs {
		switch {
		case m.v2:
			if r.Memory != nil && r.Memory.Limit != nil {
				if err := os.WriteFile(filepath.Join(d, "memory.max"), []byte(strconv.FormatInt(*r.Memory.Limit, 10)), 0o644); err != nil {
					return err
				}
			}
			if r.Pids != nil && r.Pids.Limit != nil {
				if err := os.WriteFile(filepath.Join(d, "pids.max"), []byte(strconv.FormatInt(*r.Pids.Limit, 10)), 0o644); err != nil {
					return err
				}
			}
		case strings.Contains(d, "/memory/"):
			if r.Memory != nil && r.Memory.Limit != nil {
				if err := os.WriteFile(filepath.Join(d, "memory.limit_in_bytes"), []byte(strconv.FormatInt(*r.Memory.Limit, 10)), 0o644); err != nil {
					return err
				}
			}
		case strings.Contains(d, "/pids/"):
			if r.Pids != nil && r.Pids.Limit != nil {
				if err := os.WriteFile(filepath.Join(d, "pids.max"), []byte(strconv.FormatInt(*r.Pids.Limit, 10)), 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Freeze stops every task of the cgroup and waits until it is frozen.
func (m *Manager) Freeze() error { return m.setFrozen(true) }

// Thaw resumes the cgroup.
func (m *Manager) Thaw() error { return m.setFrozen(false) }

func (m *Manager) setFrozen(frozen bool) error {
	file, val := "freezer.state", "THAWED"
	if m.v2 {
		file, val = "cgroup.freeze", "0"
	}
	if frozen {
		val = "FROZEN"
		if m.v2 {
			val = "1"
		}
	}
	if err := os.WriteFile(filepath.Join(m.freezer, file), []byte(val), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	for i := 0; i < 2000; i++ {
		f, err := m.Frozen()
		if err != nil {
			return err
		}
		if f == frozen {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("cgroup %s did not reach frozen=%v", m.path, frozen)
}

// Frozen reports whether the cgroup is frozen.
func (m *Manager) Frozen() (bool, error) {
	if m.v2 {
		b, err := os.ReadFile(filepath.Join(m.freezer, "cgroup.events"))
		if err != nil {
			return false, err
		}
		return strings.Contains(string(b), "frozen 1"), nil
	}
	b, err := os.ReadFile(filepath.Join(m.freezer, "freezer.state"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "FROZEN", nil
}

// Pids lists the processes in the cgroup.
func (m *Manager) Pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(m.freezer, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, l := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(l)
		if err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Delete removes the cgroup from every hierarchy.
func (m *Manager) Delete() error {
	var errs []error
	for _, d := range m.dirs {
		var err error
		for i := 0; i < 100; i++ {
			err = unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
