package seccomp

import specs "github.com/opencontainers/runtime-spec/specs-go"

// Actions, Operators, Archs and Flags list what Compile accepts (reported
// by `cryo features`; the tests compile a profile with each).
var (
	Actions = []specs.LinuxSeccompAction{
		specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap, specs.ActErrno,
		specs.ActTrace, specs.ActAllow, specs.ActLog, specs.ActNotify,
	}
	Operators = []specs.LinuxSeccompOperator{
		specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual,
	}
	// Archs are the architectures a filter can cover on x86_64; other
	// valid OCI architectures are accepted and ignored (they cannot run here).
	Archs = []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	Flags = []specs.LinuxSeccompFlag{
		"SECCOMP_FILTER_FLAG_TSYNC", specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow,
		specs.LinuxSeccompFlagWaitKillableRecv, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
	}
)
