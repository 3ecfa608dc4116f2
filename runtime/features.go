package runtime

import (
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/cryo-run/cryo/runtime/seccomp"
)

// Feature annotations of `cryo features` (the features document's
// "annotations": informational, as runc's org.opencontainers.runc.*).
const (
	// FeatureCheckpointEnabled is "true": checkpoint and restore are built
	// in (the native engine, no CRIU needed).
	FeatureCheckpointEnabled = "io.cryo.checkpoint.enabled"
	// FeatureVersion is the cryo version.
	FeatureVersion = "io.cryo.version"
)

// Features describes what this runtime implements (`cryo features`), in the
// runtime-spec features document: only settings Create honours are listed;
// the others are refused at create.
func Features() *features.Features {
	t, f := true, false
	var opts []string
	for o := range flagOpts {
		opts = append(opts, o)
	}
	for o := range propagationOpts {
		opts = append(opts, o)
	}
	for o := range recAttrOpts {
		opts = append(opts, o)
	}
	sort.Strings(opts)
	sc := &features.Seccomp{Enabled: &t}
	for _, a := range seccomp.Actions {
		if a != specs.ActNotify { // refused: no seccomp agent support
			sc.Actions = append(sc.Actions, string(a))
		}
	}
	for _, o := range seccomp.Operators {
		sc.Operators = append(sc.Operators, string(o))
	}
	for _, a := range seccomp.Archs {
		sc.Archs = append(sc.Archs, string(a))
	}
	for _, fl := range seccomp.Flags {
		sc.KnownFlags = append(sc.KnownFlags, string(fl))
		// The kernel takes SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only with
		// a notify listener, which cryo does not create.
		if fl != specs.LinuxSeccompFlagWaitKillableRecv {
			sc.SupportedFlags = append(sc.SupportedFlags, string(fl))
		}
	}
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions:  opts,
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"},
			Capabilities: append([]string{}, capNames...),
			Cgroup:       &features.Cgroup{V1: &t, V2: &t, Systemd: &f, SystemdUser: &f, Rdma: &t},
			Seccomp:      sc,
			Apparmor:     &features.Apparmor{Enabled: &f},
			Selinux:      &features.Selinux{Enabled: &f},
			IntelRdt:     &features.IntelRdt{Enabled: &f},
			NetDevices:   &features.NetDevices{Enabled: &f},
			MountExtensions: &features.MountExtensions{
				IDMap: &features.IDMap{Enabled: &f},
			},
		},
		Annotations: map[string]string{
			FeatureCheckpointEnabled: "true",
			FeatureVersion:           Version,
		},
	}
}
