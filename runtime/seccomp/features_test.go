package seccomp

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestFeatureListsCompile compiles a profile using each listed action,
// operator, architecture and flag: what `cryo features` reports is accepted.
func TestFeatureListsCompile(t *testing.T) {
	one := uint(1)
	for _, a := range Actions {
		sc := specs.LinuxSyscall{Names: []string{"mkdir"}, Action: a}
		if a == specs.ActErrno || a == specs.ActTrace {
			sc.ErrnoRet = &one
		}
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{sc}}
		if _, err := Compile(p); err != nil {
			t.Errorf("action %s: %v", a, err)
		}
	}
	for _, op := range Operators {
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{
			Names: []string{"personality"}, Action: specs.ActErrno,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: 8, ValueTwo: 8, Op: op}},
		}}}
		if _, err := Compile(p); err != nil {
			t.Errorf("operator %s: %v", op, err)
		}
	}
	for _, a := range Archs {
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{a},
			Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActErrno}}}
		if _, err := Compile(p); err != nil {
			t.Errorf("arch %s: %v", a, err)
		}
	}
	for _, f := range Flags {
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{f}}
		if _, err := Compile(p); err != nil {
			t.Errorf("flag %s: %v", f, err)
		}
	}
}
