package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Bounded waits. A v1 freeze of a few processes takes well under a
// millisecond; the bounds only matter for a cgroup that never converges.
const (
	freezeTimeout = 5 * time.Second
	removeTimeout = 5 * time.Second
)

type manager struct {
	path   string
	mode   Mode
	v1     map[string]string // controller -> directory of this cgroup
	v2     string            // directory in the v2 hierarchy, "" when there is none
	v2root string            // mount point of the v2 hierarchy
}

// New resolves cgroupsPath (see the package doc), creates the cgroup in every
// hierarchy and applies r (which may be nil). On error nothing is left
// behind that New created.
func New(cgroupsPath string, r *specs.LinuxResources) (Manager, error) {
	m, err := newManager(cgroupsPath)
	if err != nil {
		return nil, err
	}
	existed := m.exists()
	if err := m.create(); err != nil {
		if !existed {
			_ = m.Delete()
		}
		return nil, err
	}
	if err := m.Set(r); err != nil {
		if !existed {
			_ = m.Delete()
		}
		return nil, err
	}
	return m, nil
}

// Load returns the manager of an existing cgroup; the error wraps
// ErrNotExist when it does not exist.
func Load(cgroupsPath string) (Manager, error) {
	m, err := newManager(cgroupsPath)
	if err != nil {
		return nil, err
	}
	if !m.exists() {
		return nil, fmt.Errorf("load cgroup %s: %w", m.path, ErrNotExist)
	}
	return m, nil
}

func newManager(cgroupsPath string) (*manager, error) {
	h, err := detectHierarchies()
	if err != nil {
		return nil, err
	}
	base := ""
	if !strings.HasPrefix(cgroupsPath, "/") {
		ctrl := "freezer"
		if h.mode == Unified {
			ctrl = ""
		} else if _, ok := h.v1["freezer"]; !ok {
			for c := range h.v1 {
				ctrl = c
				break
			}
		}
		if base, err = ownCgroup(ctrl); err != nil {
			return nil, fmt.Errorf("resolve relative cgroups path %q: %w", cgroupsPath, err)
		}
	}
	p, err := cleanPath(cgroupsPath, base)
	if err != nil {
		return nil, err
	}
	m := &manager{path: p, mode: h.mode, v1: map[string]string{}}
	for c, mnt := range h.v1 {
		m.v1[c] = filepath.Join(mnt, p)
	}
	if h.v2 != "" {
		m.v2root = h.v2
		m.v2 = filepath.Join(h.v2, p)
	}
	return m, nil
}

func (m *manager) Path() string { return m.path }
func (m *manager) Mode() Mode   { return m.mode }

func (m *manager) Paths() map[string]string {
	out := make(map[string]string, len(m.v1)+1)
	for c, d := range m.v1 {
		out[c] = d
	}
	if m.v2 != "" {
		out[""] = m.v2
	}
	return out
}

// dirs lists every directory of the cgroup once (combined v1 mounts share one).
func (m *manager) dirs() []string {
	var out []string
	for _, d := range m.v1 {
		out = append(out, d)
	}
	if m.v2 != "" {
		out = append(out, m.v2)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// mainDir is the directory whose cgroup.procs is authoritative: the one the
// freezer acts on.
func (m *manager) mainDir() string {
	if d, ok := m.v1["freezer"]; ok {
		return d
	}
	if m.v2 != "" {
		return m.v2
	}
	for _, d := range m.dirs() {
		return d
	}
	return ""
}

func (m *manager) exists() bool {
	_, err := os.Stat(m.mainDir())
	return err == nil
}

func (m *manager) create() error {
	for c, d := range m.v1 {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s cgroup %s: %w", c, d, err)
		}
	}
	if d, ok := m.v1["cpuset"]; ok {
		if err := fillCpuset(d); err != nil {
			return err
		}
	}
	if m.v2 != "" {
		if err := os.MkdirAll(m.v2, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", m.v2, err)
		}
		enableControllers(m.v2root, m.v2)
	}
	return nil
}

// fillCpuset gives every cpuset cgroup from the hierarchy root down to dir
// the cpus and mems of its parent when it has none: a v1 cpuset cgroup with
// empty cpuset.cpus cannot take processes.
func fillCpuset(dir string) error {
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		if !fileExists(filepath.Dir(d), "cpuset.cpus") {
			break // d is the hierarchy root
		}
		chain = append(chain, d)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		d, parent := chain[i], filepath.Dir(chain[i])
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := readFile(d, f)
			if err != nil {
				return err
			}
			if cur != "" {
				continue
			}
			v, err := readFile(parent, f)
			if err != nil {
				return err
			}
			if err := writeFile(d, f, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// enableControllers enables, in every ancestor of dir below and including
// root, each controller that ancestor has available. Failures are logged
// and left to Set, which names the missing controller if it needs one.
func enableControllers(root, dir string) {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." {
		return
	}
	ancestors := []string{root}
	if parent := filepath.Dir(rel); parent != "." {
		cur := root
		for _, elem := range strings.Split(parent, "/") {
			cur = filepath.Join(cur, elem)
			ancestors = append(ancestors, cur)
		}
	}
	for _, cur := range ancestors {
		avail, err := readFile(cur, "cgroup.controllers")
		if err != nil {
			return
		}
		enabled, _ := readFile(cur, "cgroup.subtree_control")
		on := strings.Fields(enabled)
		for _, c := range strings.Fields(avail) {
			if slices.Contains(on, c) {
				continue
			}
			if err := writeFile(cur, "cgroup.subtree_control", "+"+c); err != nil {
				logrus.WithError(err).WithField("path", cur).Debug("cannot enable cgroup controller")
			}
		}
	}
}

func (m *manager) Apply(pid int) error {
	if err := m.create(); err != nil {
		return err
	}
	for _, d := range m.dirs() {
		if err := writeFile(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("add pid %d: %w", pid, err)
		}
	}
	return nil
}

// v2Has reports whether the v2 cgroup has controller c enabled.
func (m *manager) v2Has(c string) bool {
	if m.v2 == "" {
		return false
	}
	s, err := readFile(m.v2, "cgroup.controllers")
	if err != nil {
		return false
	}
	return slices.Contains(strings.Fields(s), c)
}

func (m *manager) missing(c, what string) error {
	return fmt.Errorf("%s of cgroup %s needs the %s controller, which is not mounted as v1 nor enabled in v2: %w", what, m.path, c, ErrUnsupported)
}

func writeAll(dir string, vals []kv) error {
	for _, v := range vals {
		if err := writeFile(dir, v.file, v.value); err != nil {
			return err
		}
	}
	return nil
}

func (m *manager) Set(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if r.Memory != nil {
		if err := m.setMemory(r.Memory); err != nil {
			return err
		}
	}
	if needsCPU(r.CPU) {
		if err := m.setCPU(r.CPU); err != nil {
			return err
		}
	}
	if needsCpuset(r.CPU) {
		vals := cpusetValues(r.CPU)
		if d, ok := m.v1["cpuset"]; ok {
			if err := writeAll(d, vals); err != nil {
				return err
			}
		} else if m.v2Has("cpuset") {
			if err := writeAll(m.v2, vals); err != nil {
				return err
			}
		} else {
			return m.missing("cpuset", "cpus and mems")
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		v := []kv{{"pids.max", pidsValue(*r.Pids.Limit)}}
		if d, ok := m.v1["pids"]; ok {
			if err := writeAll(d, v); err != nil {
				return err
			}
		} else if m.v2Has("pids") {
			if err := writeAll(m.v2, v); err != nil {
				return err
			}
		} else {
			return m.missing("pids", "pids limit")
		}
	}
	if needsBlkio(r.BlockIO) {
		if err := m.setBlkio(r.BlockIO); err != nil {
			return err
		}
	}
	if len(r.HugepageLimits) > 0 {
		if err := m.setHugetlb(r.HugepageLimits); err != nil {
			return err
		}
	}
	if r.Network != nil {
		cls, prio := v1NetworkValues(r.Network)
		for _, x := range []struct {
			c    string
			vals []kv
		}{{"net_cls", cls}, {"net_prio", prio}} {
			if len(x.vals) == 0 {
				continue
			}
			d, ok := m.v1[x.c]
			if !ok {
				return m.missing(x.c, "network class id and priorities")
			}
			if err := writeAll(d, x.vals); err != nil {
				return err
			}
		}
	}
	if len(r.Rdma) > 0 {
		vals := rdmaValues(r.Rdma)
		if d, ok := m.v1["rdma"]; ok {
			if err := writeAll(d, vals); err != nil {
				return err
			}
		} else if m.v2Has("rdma") {
			if err := writeAll(m.v2, vals); err != nil {
				return err
			}
		} else {
			return m.missing("rdma", "rdma limits")
		}
	}
	if len(r.Devices) > 0 {
		if d, ok := m.v1["devices"]; ok {
			vals, err := v1DeviceValues(r.Devices)
			if err != nil {
				return err
			}
			if err := writeAll(d, vals); err != nil {
				return err
			}
		} else if m.mode == Unified {
			if err := setDevicesV2(m.v2, r.Devices); err != nil {
				return err
			}
		} else {
			return m.missing("devices", "device rules")
		}
	}
	if len(r.Unified) > 0 {
		vals, err := unifiedValues(r.Unified)
		if err != nil {
			return err
		}
		if m.v2 == "" {
			return fmt.Errorf("unified resources of cgroup %s need cgroup v2: %w", m.path, ErrUnsupported)
		}
		for _, v := range vals {
			if c := controllerOf(v.file); c != "" && !m.v2Has(c) && !fileExists(m.v2, v.file) {
				return m.missing(c, fmt.Sprintf("unified key %q", v.file))
			}
		}
		if err := writeAll(m.v2, vals); err != nil {
			return err
		}
	}
	return nil
}

func (m *manager) setMemory(mem *specs.LinuxMemory) error {
	if mem.Kernel != nil {
		logrus.WithField("path", m.path).Warn("kernel memory limit is deprecated and ignored")
	}
	if d, ok := m.v1["memory"]; ok {
		return setMemoryV1(d, mem)
	}
	if !m.v2Has("memory") {
		if memoryNeeded(mem) {
			return m.missing("memory", "memory limits")
		}
		return nil
	}
	if mem.KernelTCP != nil {
		logrus.WithField("path", m.path).Warn("kernel TCP memory limit has no cgroup v2 file and is ignored")
	}
	vals, err := v2MemoryValues(mem)
	if err != nil {
		return fmt.Errorf("memory of cgroup %s: %w", m.path, err)
	}
	if mem.CheckBeforeUpdate != nil && *mem.CheckBeforeUpdate && mem.Limit != nil && *mem.Limit > 0 {
		if err := checkUsage(m.v2, "memory.current", *mem.Limit); err != nil {
			return err
		}
	}
	// memory.swap.max first: its value is computed against the new limit.
	return writeAll(m.v2, vals)
}

func memoryNeeded(m *specs.LinuxMemory) bool {
	return m.Limit != nil || m.Reservation != nil || m.Swap != nil || m.Swappiness != nil ||
		m.DisableOOMKiller != nil
}

func checkUsage(dir, file string, limit int64) error {
	usage, err := readUint(dir, file)
	if err != nil {
		return err
	}
	if uint64(limit) < usage {
		return fmt.Errorf("memory limit %d of cgroup %s is below its current usage %d: %w", limit, dir, usage, ErrInvalid)
	}
	return nil
}

// setMemoryV1 writes the v1 memory files. memory.limit_in_bytes must stay
// <= memory.memsw.limit_in_bytes at every step, so when both are set the
// order depends on whether the limits grow or shrink: try limit first and,
// if the kernel refuses (EINVAL), memsw first.
func setMemoryV1(dir string, mem *specs.LinuxMemory) error {
	if mem.CheckBeforeUpdate != nil && *mem.CheckBeforeUpdate && mem.Limit != nil && *mem.Limit > 0 {
		if err := checkUsage(dir, "memory.usage_in_bytes", *mem.Limit); err != nil {
			return err
		}
	}
	var pair []kv
	if mem.Limit != nil && *mem.Limit != 0 {
		pair = append(pair, kv{"memory.limit_in_bytes", strconv.FormatInt(*mem.Limit, 10)})
	}
	if mem.Swap != nil && *mem.Swap != 0 {
		if !fileExists(dir, "memory.memsw.limit_in_bytes") {
			return fmt.Errorf("memory+swap limit of cgroup %s: kernel without swap accounting (no memory.memsw.limit_in_bytes): %w", dir, ErrUnsupported)
		}
		pair = append(pair, kv{"memory.memsw.limit_in_bytes", strconv.FormatInt(*mem.Swap, 10)})
	}
	if err := writeAll(dir, pair); err != nil {
		if len(pair) != 2 || !errors.Is(err, unix.EINVAL) {
			return err
		}
		if err := writeAll(dir, []kv{pair[1], pair[0]}); err != nil {
			return err
		}
	}
	vals, err := v1MemoryValues(mem)
	if err != nil {
		return fmt.Errorf("memory of cgroup %s: %w", dir, err)
	}
	return writeAll(dir, vals)
}

func (m *manager) setCPU(c *specs.LinuxCPU) error {
	if d, ok := m.v1["cpu"]; ok {
		vals := v1CPUValues(c)
		if err := writeAll(d, vals); err != nil {
			// The period can be refused while the old quota is larger
			// than it (or the reverse): retry with the quota first.
			if !errors.Is(err, unix.EINVAL) {
				return err
			}
			swapped := slices.Clone(vals)
			for i := 0; i+1 < len(swapped); i++ {
				if swapped[i].file == "cpu.cfs_period_us" && swapped[i+1].file == "cpu.cfs_quota_us" {
					swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
				}
			}
			if err2 := writeAll(d, swapped); err2 != nil {
				return err
			}
		}
		return nil
	}
	if !m.v2Has("cpu") {
		return m.missing("cpu", "cpu shares, quota and period")
	}
	vals, err := v2CPUValues(c)
	if err != nil {
		return fmt.Errorf("cpu of cgroup %s: %w", m.path, err)
	}
	return writeAll(m.v2, vals)
}

func (m *manager) setBlkio(b *specs.LinuxBlockIO) error {
	if d, ok := m.v1["blkio"]; ok {
		wf := ""
		if fileExists(d, "blkio.weight") {
			wf = "blkio.weight"
		} else if fileExists(d, "blkio.bfq.weight") {
			wf = "blkio.bfq.weight"
		}
		vals, err := v1BlkioValues(b, wf)
		if err != nil {
			return fmt.Errorf("block IO of cgroup %s: %w", d, err)
		}
		return writeAll(d, vals)
	}
	if !m.v2Has("io") {
		return m.missing("io", "block IO limits")
	}
	wf := ""
	if fileExists(m.v2, "io.weight") {
		wf = "io.weight"
	} else if fileExists(m.v2, "io.bfq.weight") {
		wf = "io.bfq.weight"
	}
	vals, err := v2IOValues(b, wf)
	if err != nil {
		return fmt.Errorf("block IO of cgroup %s: %w", m.v2, err)
	}
	return writeAll(m.v2, vals)
}

func (m *manager) setHugetlb(limits []specs.LinuxHugepageLimit) error {
	if _, _, err := hugetlbValues(limits, false); err != nil {
		return err
	}
	dir, v2 := "", false
	if d, ok := m.v1["hugetlb"]; ok {
		dir = d
	} else if m.v2Has("hugetlb") {
		dir, v2 = m.v2, true
	} else {
		return m.missing("hugetlb", "hugepage limits")
	}
	lim, rsvd, _ := hugetlbValues(limits, v2)
	for i := range lim {
		if !fileExists(dir, lim[i].file) {
			return fmt.Errorf("hugepage size of %s: no file %s in cgroup %s: %w", lim[i].file, lim[i].file, dir, ErrUnsupported)
		}
		if err := writeAll(dir, lim[i:i+1]); err != nil {
			return err
		}
		// The reservation limit exists on kernels >= 5.7; the spec asks
		// for it when supported.
		if fileExists(dir, rsvd[i].file) {
			if err := writeAll(dir, rsvd[i:i+1]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *manager) Pids() ([]int, error) {
	pids, err := readProcs(m.mainDir())
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", m.path, err)
	}
	sort.Ints(pids)
	return slices.Compact(pids), nil
}

func (m *manager) Kill(sig syscall.Signal) error {
	if sig == unix.SIGKILL && m.v2 != "" && fileExists(m.v2, "cgroup.kill") {
		if err := writeFile(m.v2, "cgroup.kill", "1"); err != nil {
			return fmt.Errorf("kill cgroup %s: %w", m.path, err)
		}
		if m.mode == Unified {
			return nil
		}
		// Hybrid: sweep the v1 hierarchy too, for a process that was put
		// in the v1 cgroups only.
	}
	state, err := m.State()
	if err != nil {
		return err
	}
	wasFrozen := state == Frozen
	if !wasFrozen {
		// Freezing makes the set of processes stable: none can fork a
		// child that escapes the signal.
		if err := m.Freeze(); err != nil {
			return fmt.Errorf("kill cgroup %s: %w", m.path, err)
		}
	}
	pids, err := m.Pids()
	if err == nil {
		for _, pid := range pids {
			if kerr := unix.Kill(pid, sig); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
				err = fmt.Errorf("signal %d to pid %d of cgroup %s: %w", sig, pid, m.path, kerr)
				break
			}
		}
	}
	if !wasFrozen || sig == unix.SIGKILL {
		if terr := m.Thaw(); terr != nil && err == nil {
			err = terr
		}
	}
	return err
}

func (m *manager) Delete() error {
	var errs []error
	for _, d := range m.dirs() {
		if err := removeCgroup(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroup removes dir and the cgroups below it, children first,
// retrying while the kernel still counts exiting tasks (EBUSY).
func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(removeTimeout)
	wait := 100 * time.Microsecond
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if time.Now().After(deadline) {
			pids, _ := readProcs(dir)
			return fmt.Errorf("remove cgroup %s: still busy after %v with pids %v: %w", dir, removeTimeout, pids, ErrTimeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
