package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestFeaturesHonoured checks `cryo features` against Create: a container
// whose seccomp profile uses every supported flag, every listed operator and
// every listed architecture runs with its filter, and the settings reported
// as unsupported are refused, leaving nothing behind.
func TestFeaturesHonoured(t *testing.T) {
	f := Features()
	sc := f.Linux.Seccomp
	if f.Annotations[FeatureCheckpointEnabled] != "true" || len(sc.Operators) != 7 || len(sc.SupportedFlags) == 0 {
		t.Fatalf("features: %+v %+v", f.Annotations, sc)
	}
	for _, a := range sc.Actions {
		if a == string(specs.ActNotify) {
			t.Errorf("features list %s, which create refuses", a)
		}
	}
	bundle, s := newBundle(t, "sh", "-c", "mkdir /tmp/d 2>/dev/null && echo mkdir-allowed; grep Seccomp: /proc/self/status")
	eperm := uint(1)
	prof := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	for _, fl := range sc.SupportedFlags {
		prof.Flags = append(prof.Flags, specs.LinuxSeccompFlag(fl))
	}
	for _, a := range sc.Archs {
		prof.Architectures = append(prof.Architectures, specs.Arch(a))
	}
	// mkdir(path, mode) with mode 0777 (busybox's default): each operator
	// in a rule that holds for that mode.
	vals := map[string][2]uint64{
		"SCMP_CMP_NE": {1, 0}, "SCMP_CMP_LT": {0o1000, 0}, "SCMP_CMP_LE": {0o777, 0}, "SCMP_CMP_EQ": {0o777, 0},
		"SCMP_CMP_GE": {0o777, 0}, "SCMP_CMP_GT": {1, 0}, "SCMP_CMP_MASKED_EQ": {0o700, 0o700},
	}
	for _, op := range sc.Operators {
		v, ok := vals[op]
		if !ok {
			t.Fatalf("no test value for operator %s", op)
		}
		prof.Syscalls = append(prof.Syscalls, specs.LinuxSyscall{
			Names: []string{"mkdir"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: v[0], ValueTwo: v[1], Op: specs.LinuxSeccompOperator(op)}},
		})
	}
	s.Linux.Seccomp = prof
	r := newRuntime(t)
	code, out := runToExit(t, r, bundle, s)
	if code != 0 || strings.Contains(out, "mkdir-allowed") || !strings.Contains(out, "Seccomp:\t2") {
		t.Fatalf("exit %d output %q, want mkdir refused by the filter", code, out)
	}

	ctx := context.Background()
	for name, mod := range map[string]func(*specs.Spec){
		"memoryPolicy": func(s *specs.Spec) {
			s.Linux.MemoryPolicy = &specs.LinuxMemoryPolicy{Mode: specs.MpolInterleave, Nodes: "0"}
		},
		"netDevices": func(s *specs.Spec) { s.Linux.NetDevices = map[string]specs.LinuxNetDevice{"dummy0": {}} },
		"intelRdt":   func(s *specs.Spec) { s.Linux.IntelRdt = &specs.LinuxIntelRdt{} },
	} {
		_, s := newBundle(t, "true")
		mod(s)
		if _, err := r.Create(ctx, "feat", CreateOpts{Bundle: bundle, Spec: s}); !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: got %v, want ErrNotSupported", name, err)
		}
		assertNoLeaks(t, r, "feat", 0, s.Linux.CgroupsPath, bundle)
	}
}
