// Package cgroups places a container's processes in a cgroup, applies the
// OCI resources to it, freezes and thaws it (it is the checkpoint engine's
// Freezer), reports its processes, statistics and OOM kills, and removes it.
//
// # Hierarchies
//
// The cgroup layout is detected at run time from /proc/self/mountinfo:
//
//   - unified (pure v2): cgroup2 is mounted at /sys/fs/cgroup. Every
//     controller is a v2 controller; the ancestors of the container's cgroup
//     get every available controller enabled in cgroup.subtree_control.
//   - hybrid: v1 controllers are mounted one per directory under
//     /sys/fs/cgroup and cgroup2 elsewhere (usually /sys/fs/cgroup/unified).
//     The container gets a directory in every v1 hierarchy and in the v2
//     hierarchy. A resource is written through v1 when its controller is
//     mounted as v1, and through v2 when the controller is only available
//     there (hugetlb on some hosts). Freezing uses the v1 freezer only: a
//     task frozen by both never reports FROZEN in v2.
//   - legacy: only v1 hierarchies.
//
// Named v1 hierarchies (name=systemd) are not joined.
//
// # Paths
//
// The cgroupsPath of the OCI spec is interpreted as runc does without
// systemd: an absolute path is a path from the root of every hierarchy; a
// relative path is relative to the cgroup of the calling process, taken from
// the unified hierarchy on pure v2 and from the freezer hierarchy otherwise,
// and resolved once, so that Path returns an absolute path that Load accepts
// from any process. ".." elements are refused. When a spec has no
// cgroupsPath the runtime uses DefaultPath(id), which is /cryo/<id>.
//
// # Settings that are not honoured
//
// A resource that the host cannot apply is an error naming the controller,
// except the kernel memory limits (memory.kernel, memory.kernelTCP): the
// runtime spec deprecates them, cgroup v2 has no such files and recent
// kernels refuse them in v1, so like runc they are ignored with a warning.
//
// Devices on pure v2 are enforced by an eBPF program attached to the cgroup
// with BPF_CGROUP_DEVICE (program built by containerd/cgroups/v3's
// cgroup2.DeviceFilter); a later Set replaces the programs this package
// attached before.
package cgroups
