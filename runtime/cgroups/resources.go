package cgroups

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// This file translates OCI resources into controller file values. It is pure
// (no file access) so that the translation is tested on any host, for v1 and
// for v2 alike.

// kv is one value to write into one controller file.
type kv struct {
	file, value string
}

// v1MemoryValues returns the memory controller files of a v1 cgroup, except
// memory.limit_in_bytes and memory.memsw.limit_in_bytes whose order depends
// on the current values (see setMemoryV1).
func v1MemoryValues(m *specs.LinuxMemory) ([]kv, error) {
	var out []kv
	if m.Reservation != nil {
		out = append(out, kv{"memory.soft_limit_in_bytes", strconv.FormatInt(*m.Reservation, 10)})
	}
	if m.KernelTCP != nil {
		out = append(out, kv{"memory.kmem.tcp.limit_in_bytes", strconv.FormatInt(*m.KernelTCP, 10)})
	}
	if m.Swappiness != nil {
		if *m.Swappiness > 100 {
			return nil, fmt.Errorf("memory swappiness %d is above 100: %w", *m.Swappiness, ErrInvalid)
		}
		out = append(out, kv{"memory.swappiness", strconv.FormatUint(*m.Swappiness, 10)})
	}
	if m.DisableOOMKiller != nil {
		out = append(out, kv{"memory.oom_control", boolValue(*m.DisableOOMKiller)})
	}
	if m.UseHierarchy != nil && *m.UseHierarchy {
		// Writing 0 is refused by kernels >= 5.x, where hierarchy is
		// always on; 1 stays valid.
		out = append(out, kv{"memory.use_hierarchy", "1"})
	}
	return out, nil
}

// v2MemoryValues translates memory resources for a v2 cgroup. OCI's swap is
// memory+swap; v2's memory.swap.max is swap alone.
func v2MemoryValues(m *specs.LinuxMemory) ([]kv, error) {
	var out []kv
	if m.Swap != nil && *m.Swap != 0 {
		swap, err := v2SwapValue(*m.Swap, m.Limit)
		if err != nil {
			return nil, err
		}
		out = append(out, kv{"memory.swap.max", swap})
	}
	if m.Limit != nil && *m.Limit != 0 {
		out = append(out, kv{"memory.max", limitValue(*m.Limit)})
	}
	if m.Reservation != nil && *m.Reservation != 0 {
		out = append(out, kv{"memory.low", limitValue(*m.Reservation)})
	}
	if m.Swappiness != nil {
		return nil, fmt.Errorf("memory swappiness has no cgroup v2 file: %w", ErrUnsupported)
	}
	if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
		return nil, fmt.Errorf("disabling the OOM killer has no cgroup v2 file: %w", ErrUnsupported)
	}
	return out, nil
}

// v2SwapValue converts OCI memory+swap into memory.swap.max.
func v2SwapValue(swap int64, limit *int64) (string, error) {
	if swap == -1 {
		return "max", nil
	}
	if swap < 0 {
		return "", fmt.Errorf("memory+swap limit %d: %w", swap, ErrInvalid)
	}
	if limit == nil || *limit <= 0 {
		return "", fmt.Errorf("memory+swap limit %d without a memory limit: %w", swap, ErrInvalid)
	}
	if swap < *limit {
		return "", fmt.Errorf("memory+swap limit %d is below the memory limit %d: %w", swap, *limit, ErrInvalid)
	}
	return strconv.FormatInt(swap-*limit, 10), nil
}

// limitValue formats a v2 byte limit; any negative value is "max".
func limitValue(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

func boolValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// v1CPUValues translates the cpu controller settings of a v1 cgroup. The
// period is written before the quota, and the realtime period before the
// realtime runtime.
func v1CPUValues(c *specs.LinuxCPU) []kv {
	var out []kv
	if c.Shares != nil && *c.Shares != 0 {
		out = append(out, kv{"cpu.shares", strconv.FormatUint(*c.Shares, 10)})
	}
	if c.Period != nil && *c.Period != 0 {
		out = append(out, kv{"cpu.cfs_period_us", strconv.FormatUint(*c.Period, 10)})
	}
	if c.Quota != nil && *c.Quota != 0 {
		out = append(out, kv{"cpu.cfs_quota_us", strconv.FormatInt(*c.Quota, 10)})
	}
	if c.Burst != nil {
		out = append(out, kv{"cpu.cfs_burst_us", strconv.FormatUint(*c.Burst, 10)})
	}
	if c.RealtimePeriod != nil && *c.RealtimePeriod != 0 {
		out = append(out, kv{"cpu.rt_period_us", strconv.FormatUint(*c.RealtimePeriod, 10)})
	}
	if c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0 {
		out = append(out, kv{"cpu.rt_runtime_us", strconv.FormatInt(*c.RealtimeRuntime, 10)})
	}
	if c.Idle != nil {
		out = append(out, kv{"cpu.idle", strconv.FormatInt(*c.Idle, 10)})
	}
	return out
}

// v2CPUValues translates the cpu controller settings of a v2 cgroup.
func v2CPUValues(c *specs.LinuxCPU) ([]kv, error) {
	var out []kv
	if c.Shares != nil && *c.Shares != 0 {
		out = append(out, kv{"cpu.weight", strconv.FormatUint(CPUSharesToWeight(*c.Shares), 10)})
	}
	if v := cpuMaxValue(c.Quota, c.Period); v != "" {
		out = append(out, kv{"cpu.max", v})
	}
	if c.Burst != nil {
		out = append(out, kv{"cpu.max.burst", strconv.FormatUint(*c.Burst, 10)})
	}
	if c.Idle != nil {
		out = append(out, kv{"cpu.idle", strconv.FormatInt(*c.Idle, 10)})
	}
	if (c.RealtimePeriod != nil && *c.RealtimePeriod != 0) || (c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0) {
		return nil, fmt.Errorf("realtime cpu period and runtime have no cgroup v2 files: %w", ErrUnsupported)
	}
	return out, nil
}

// CPUSharesToWeight maps v1 cpu.shares [2, 262144] linearly onto v2
// cpu.weight [1, 10000] (the mapping runc and crun use, so that the same
// spec gives the same weight under every runtime); 0 means unset.
func CPUSharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	if shares < 2 {
		shares = 2
	}
	if shares > 262144 {
		shares = 262144
	}
	return 1 + ((shares-2)*9999)/262142
}

// cpuMaxValue formats cpu.max ("$QUOTA $PERIOD"); "" when neither is set.
func cpuMaxValue(quota *int64, period *uint64) string {
	q := quota != nil && *quota != 0
	p := period != nil && *period != 0
	if !q && !p {
		return ""
	}
	v := "max"
	if q && *quota > 0 {
		v = strconv.FormatInt(*quota, 10)
	}
	if p {
		v += " " + strconv.FormatUint(*period, 10)
	}
	return v
}

// cpusetValues translates cpus and mems (same files in v1 and v2).
func cpusetValues(c *specs.LinuxCPU) []kv {
	var out []kv
	if c.Cpus != "" {
		out = append(out, kv{"cpuset.cpus", c.Cpus})
	}
	if c.Mems != "" {
		out = append(out, kv{"cpuset.mems", c.Mems})
	}
	return out
}

func needsCPU(c *specs.LinuxCPU) bool {
	return c != nil && (c.Shares != nil || c.Quota != nil || c.Period != nil || c.Burst != nil ||
		c.RealtimePeriod != nil || c.RealtimeRuntime != nil || c.Idle != nil)
}

func needsCpuset(c *specs.LinuxCPU) bool {
	return c != nil && (c.Cpus != "" || c.Mems != "")
}

// pidsValue formats pids.max (v1 and v2); a limit <= 0 is "max" (docker
// and nerdctl send 0 and -1 for unlimited).
func pidsValue(limit int64) string {
	if limit <= 0 {
		return "max"
	}
	return strconv.FormatInt(limit, 10)
}

func devNum(major, minor int64) string {
	return fmt.Sprintf("%d:%d", major, minor)
}

// v1BlkioValues translates block IO resources for v1. weightFile is
// "blkio.weight" (CFQ) or "blkio.bfq.weight" (BFQ), whichever the kernel
// has; the per-device weight file is the same name with _device appended.
// Each throttle device is its own write (the kernel takes one line at a time).
func v1BlkioValues(b *specs.LinuxBlockIO, weightFile string) ([]kv, error) {
	var out []kv
	if (b.Weight != nil && *b.Weight != 0) || len(b.WeightDevice) > 0 {
		if weightFile == "" {
			return nil, fmt.Errorf("block IO weight needs blkio.weight or blkio.bfq.weight, which this kernel lacks (no CFQ/BFQ scheduler): %w", ErrUnsupported)
		}
	}
	if b.Weight != nil && *b.Weight != 0 {
		out = append(out, kv{weightFile, strconv.FormatUint(uint64(*b.Weight), 10)})
	}
	if b.LeafWeight != nil && *b.LeafWeight != 0 {
		out = append(out, kv{"blkio.leaf_weight", strconv.FormatUint(uint64(*b.LeafWeight), 10)})
	}
	for _, d := range b.WeightDevice {
		if d.Weight != nil {
			out = append(out, kv{weightFile + "_device", devNum(d.Major, d.Minor) + " " + strconv.FormatUint(uint64(*d.Weight), 10)})
		}
		if d.LeafWeight != nil {
			out = append(out, kv{"blkio.leaf_weight_device", devNum(d.Major, d.Minor) + " " + strconv.FormatUint(uint64(*d.LeafWeight), 10)})
		}
	}
	for _, t := range []struct {
		file string
		devs []specs.LinuxThrottleDevice
	}{
		{"blkio.throttle.read_bps_device", b.ThrottleReadBpsDevice},
		{"blkio.throttle.write_bps_device", b.ThrottleWriteBpsDevice},
		{"blkio.throttle.read_iops_device", b.ThrottleReadIOPSDevice},
		{"blkio.throttle.write_iops_device", b.ThrottleWriteIOPSDevice},
	} {
		for _, d := range t.devs {
			out = append(out, kv{t.file, devNum(d.Major, d.Minor) + " " + strconv.FormatUint(d.Rate, 10)})
		}
	}
	return out, nil
}

// BlkioWeightToIOWeight maps a v1 blkio weight [10, 1000] onto v2 io.weight
// [1, 10000] linearly (as runc and crun do); 0 means unset.
func BlkioWeightToIOWeight(w uint64) uint64 {
	if w == 0 {
		return 0
	}
	if w < 10 {
		w = 10
	}
	if w > 1000 {
		w = 1000
	}
	return 1 + (w-10)*9999/990
}

// v2IOValues translates block IO resources for v2: io.weight (or
// io.bfq.weight, which takes the v1 scale, when weightFile says so) and one
// io.max line per device with every limit of that device.
func v2IOValues(b *specs.LinuxBlockIO, weightFile string) ([]kv, error) {
	var out []kv
	if b.LeafWeight != nil && *b.LeafWeight != 0 {
		return nil, fmt.Errorf("block IO leaf weight has no cgroup v2 file: %w", ErrUnsupported)
	}
	conv := func(w uint16) string {
		if weightFile == "io.bfq.weight" {
			return strconv.FormatUint(uint64(w), 10)
		}
		return strconv.FormatUint(BlkioWeightToIOWeight(uint64(w)), 10)
	}
	if (b.Weight != nil && *b.Weight != 0) || len(b.WeightDevice) > 0 {
		if weightFile == "" {
			return nil, fmt.Errorf("block IO weight needs io.weight or io.bfq.weight, which this kernel lacks: %w", ErrUnsupported)
		}
	}
	if b.Weight != nil && *b.Weight != 0 {
		out = append(out, kv{weightFile, "default " + conv(*b.Weight)})
	}
	for _, d := range b.WeightDevice {
		if d.LeafWeight != nil {
			return nil, fmt.Errorf("block IO leaf weight of device %s has no cgroup v2 file: %w", devNum(d.Major, d.Minor), ErrUnsupported)
		}
		if d.Weight != nil {
			out = append(out, kv{weightFile, devNum(d.Major, d.Minor) + " " + conv(*d.Weight)})
		}
	}
	for _, l := range ioMaxLines(b) {
		out = append(out, kv{"io.max", l})
	}
	return out, nil
}

// ioMaxLines groups the throttle settings by device into io.max lines such
// as "8:0 rbps=1048576 wiops=100", devices in numeric order.
func ioMaxLines(b *specs.LinuxBlockIO) []string {
	type dev struct{ major, minor int64 }
	limits := map[dev][]string{}
	var order []dev
	add := func(key string, devs []specs.LinuxThrottleDevice) {
		for _, d := range devs {
			k := dev{d.Major, d.Minor}
			if _, ok := limits[k]; !ok {
				order = append(order, k)
			}
			limits[k] = append(limits[k], key+"="+strconv.FormatUint(d.Rate, 10))
		}
	}
	add("rbps", b.ThrottleReadBpsDevice)
	add("wbps", b.ThrottleWriteBpsDevice)
	add("riops", b.ThrottleReadIOPSDevice)
	add("wiops", b.ThrottleWriteIOPSDevice)
	sort.Slice(order, func(i, j int) bool {
		if order[i].major != order[j].major {
			return order[i].major < order[j].major
		}
		return order[i].minor < order[j].minor
	})
	var lines []string
	for _, d := range order {
		lines = append(lines, devNum(d.major, d.minor)+" "+strings.Join(limits[d], " "))
	}
	return lines
}

func needsBlkio(b *specs.LinuxBlockIO) bool {
	return b != nil && (b.Weight != nil || b.LeafWeight != nil || len(b.WeightDevice) > 0 ||
		len(b.ThrottleReadBpsDevice) > 0 || len(b.ThrottleWriteBpsDevice) > 0 ||
		len(b.ThrottleReadIOPSDevice) > 0 || len(b.ThrottleWriteIOPSDevice) > 0)
}

// hugetlbValues returns, per limit, the limit file and the reservation file
// ("hugetlb.2MB.limit_in_bytes" and "hugetlb.2MB.rsvd.limit_in_bytes" in v1,
// "hugetlb.2MB.max" and "hugetlb.2MB.rsvd.max" in v2).
func hugetlbValues(limits []specs.LinuxHugepageLimit, v2 bool) ([]kv, []kv, error) {
	var lim, rsvd []kv
	for _, l := range limits {
		if !validPageSize(l.Pagesize) {
			return nil, nil, fmt.Errorf("hugepage size %q: %w", l.Pagesize, ErrInvalid)
		}
		v := strconv.FormatUint(l.Limit, 10)
		if v2 {
			lim = append(lim, kv{"hugetlb." + l.Pagesize + ".max", v})
			rsvd = append(rsvd, kv{"hugetlb." + l.Pagesize + ".rsvd.max", v})
		} else {
			lim = append(lim, kv{"hugetlb." + l.Pagesize + ".limit_in_bytes", v})
			rsvd = append(rsvd, kv{"hugetlb." + l.Pagesize + ".rsvd.limit_in_bytes", v})
		}
	}
	return lim, rsvd, nil
}

// validPageSize accepts the kernel's names: digits then KB, MB or GB.
func validPageSize(s string) bool {
	if len(s) < 3 {
		return false
	}
	switch s[len(s)-2:] {
	case "KB", "MB", "GB":
	default:
		return false
	}
	n := s[:len(s)-2]
	if n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// v1DeviceRule formats one devices.allow / devices.deny line ("c 1:3 rwm",
// "a *:* rwm").
func v1DeviceRule(d specs.LinuxDeviceCgroup) (string, error) {
	typ := d.Type
	switch typ {
	case "", "a":
		typ = "a"
	case "c", "b":
	default:
		return "", fmt.Errorf("device type %q: %w", d.Type, ErrInvalid)
	}
	access := d.Access
	if access == "" {
		access = "rwm"
	}
	for _, c := range access {
		if c != 'r' && c != 'w' && c != 'm' {
			return "", fmt.Errorf("device access %q: %w", d.Access, ErrInvalid)
		}
	}
	num := func(p *int64) string {
		if p == nil || *p < 0 {
			return "*"
		}
		return strconv.FormatInt(*p, 10)
	}
	return fmt.Sprintf("%s %s:%s %s", typ, num(d.Major), num(d.Minor), access), nil
}

// v1DeviceValues turns the OCI device list into the ordered writes of the v1
// devices controller. The list is applied in order, as the spec says, with
// one change: when the list does not begin with a rule for every device, the
// cgroup is first reset to deny everything, so the result does not depend
// on what the cgroup allowed before (a fresh v1 cgroup inherits allow-all).
func v1DeviceValues(devs []specs.LinuxDeviceCgroup) ([]kv, error) {
	var out []kv
	if len(devs) == 0 {
		return nil, nil
	}
	first := devs[0]
	if !((first.Type == "" || first.Type == "a") && first.Major == nil && first.Minor == nil) {
		out = append(out, kv{"devices.deny", "a *:* rwm"})
	}
	for _, d := range devs {
		rule, err := v1DeviceRule(d)
		if err != nil {
			return nil, err
		}
		file := "devices.deny"
		if d.Allow {
			file = "devices.allow"
		}
		out = append(out, kv{file, rule})
	}
	return out, nil
}

// rdmaValues formats rdma.max lines ("mlx5_0 hca_handle=2 hca_object=max").
func rdmaValues(r map[string]specs.LinuxRdma) []kv {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []kv
	for _, n := range names {
		l := r[n]
		line := n
		if l.HcaHandles != nil {
			line += " hca_handle=" + strconv.FormatUint(uint64(*l.HcaHandles), 10)
		}
		if l.HcaObjects != nil {
			line += " hca_object=" + strconv.FormatUint(uint64(*l.HcaObjects), 10)
		}
		out = append(out, kv{"rdma.max", line})
	}
	return out
}

// v1NetworkValues translates the net_cls class id and net_prio map.
func v1NetworkValues(n *specs.LinuxNetwork) (cls, prio []kv) {
	if n.ClassID != nil {
		cls = append(cls, kv{"net_cls.classid", strconv.FormatUint(uint64(*n.ClassID), 10)})
	}
	for _, p := range n.Priorities {
		prio = append(prio, kv{"net_prio.ifpriomap", p.Name + " " + strconv.FormatUint(uint64(p.Priority), 10)})
	}
	return cls, prio
}

// unifiedValues validates the v2 key/values of the spec: a key is a file
// name in the cgroup directory, without path separators, and not one of
// the files that move processes or the cgroup itself.
func unifiedValues(u map[string]string) ([]kv, error) {
	keys := make([]string, 0, len(u))
	for k := range u {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []kv
	for _, k := range keys {
		switch {
		case k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == "..":
			return nil, fmt.Errorf("unified key %q is not a file name: %w", k, ErrInvalid)
		case k == "cgroup.procs" || k == "cgroup.threads" || k == "cgroup.kill" || k == "cgroup.freeze" || k == "cgroup.type":
			return nil, fmt.Errorf("unified key %q is managed by the runtime: %w", k, ErrInvalid)
		case !strings.Contains(k, "."):
			return nil, fmt.Errorf("unified key %q has no controller prefix: %w", k, ErrInvalid)
		}
		out = append(out, kv{k, u[k]})
	}
	return out, nil
}

// controllerOf is the controller that owns a cgroup file ("memory.max" ->
// "memory"); "" for the core cgroup.* files.
func controllerOf(file string) string {
	c, _, _ := strings.Cut(file, ".")
	if c == "cgroup" {
		return ""
	}
	return c
}
