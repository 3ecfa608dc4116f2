package seccomp

import (
	"encoding/binary"
	"errors"
	"math/rand"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// data is struct seccomp_data.
type data struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

func (d data) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], d.nr)
	binary.LittleEndian.PutUint32(b[4:], d.arch)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// run interprets a classic BPF program the way the kernel does for seccomp.
func run(t *testing.T, prog []Instruction, d data) uint32 {
	t.Helper()
	mem := d.bytes()
	var A uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case opLdAbsW:
			if in.K%4 != 0 || in.K+4 > 64 {
				t.Fatalf("pc %d: load at %d", pc, in.K)
			}
			A = binary.LittleEndian.Uint32(mem[in.K:])
		case opAndK:
			A &= in.K
		case opJa:
			pc += int(in.K)
		case opJeqK, opJgtK, opJgeK:
			var c bool
			switch in.Code {
			case opJeqK:
				c = A == in.K
			case opJgtK:
				c = A > in.K
			case opJgeK:
				c = A >= in.K
			}
			if c {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case opRetK:
			return in.K
		default:
			t.Fatalf("pc %d: opcode %#x", pc, in.Code)
		}
	}
	t.Fatal("program ran off its end")
	return 0
}

func uintp(v uint) *uint { return &v }

func x64(name string, args ...uint64) data {
	d := data{nr: sysnumX86_64[name], arch: auditArchX86_64}
	copy(d.args[:], args)
	return d
}

func TestCompileSemantics(t *testing.T) {
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: uintp(38), // ENOSYS
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid", "read", "write", "no_such_syscall"}, Action: specs.ActAllow},
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno},
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo}}},
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 8, Op: specs.OpEqualTo}}},
			{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0x7e020000, ValueTwo: 0, Op: specs.OpMaskedEqual}}},
			{Names: []string{"kill"}, Action: specs.ActTrace, ErrnoRet: uintp(7)},
			{Names: []string{"uname"}, Action: specs.ActKillProcess},
			{Names: []string{"getppid"}, Action: specs.ActNotify},
			{Names: []string{"read"}, Action: specs.ActKill}, // read is already unconditional: first wins
			// Two conditions on one argument: each is its own rule.
			{Names: []string{"dup3"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 2, Value: 0, Op: specs.OpEqualTo}, {Index: 2, Value: 0x80000, Op: specs.OpEqualTo}}},
			// Conditions on two arguments are ANDed.
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 1, Op: specs.OpEqualTo}}},
			// Same action as the default: dropped.
			{Names: []string{"getuid"}, Action: specs.ActErrno, ErrnoRet: uintp(38)},
		},
	}
	f, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Listener() {
		t.Error("profile with SCMP_ACT_NOTIFY: want a listener")
	}
	if len(f.Skipped) != 3 {
		t.Errorf("skipped: got %v, want no_such_syscall on 3 archs", f.Skipped)
	}
	enosys := uint32(retErrno | 38)
	cases := []struct {
		name string
		d    data
		want uint32
	}{
		{"getpid", x64("getpid"), retAllow},
		{"read first rule wins", x64("read"), retAllow},
		{"unlisted gets the default", x64("getuid"), enosys},
		{"mkdir errno defaults to EPERM", x64("mkdir"), retErrno | 1},
		{"personality 0xffffffff", x64("personality", 0xffffffff), retAllow},
		{"personality 8", x64("personality", 8), retAllow},
		{"personality other", x64("personality", 1), enosys},
		{"personality high bits differ", x64("personality", 0x1_ffffffff), enosys},
		{"clone without namespace flags", x64("clone", 0x11), retAllow},
		{"clone with CLONE_NEWNS", x64("clone", 0x20000), enosys},
		{"kill traced", x64("kill"), retTrace | 7},
		{"uname kills", x64("uname"), retKillProcess},
		{"getppid notifies", x64("getppid"), retUserNotif},
		{"dup3 flags 0", x64("dup3", 1, 2, 0), retAllow},
		{"dup3 O_CLOEXEC", x64("dup3", 1, 2, 0x80000), retAllow},
		{"dup3 other", x64("dup3", 1, 2, 1), enosys},
		{"socket unix stream", x64("socket", 1, 1), retAllow},
		{"socket unix dgram", x64("socket", 1, 2), enosys},
		{"i386 mkdir", data{nr: sysnumX86["mkdir"], arch: auditArchI386}, retErrno | 1},
		{"i386 getpid", data{nr: sysnumX86["getpid"], arch: auditArchI386}, retAllow},
		{"i386 personality (32-bit arg)", data{nr: sysnumX86["personality"], arch: auditArchI386, args: [6]uint64{0xffffffff}}, retAllow},
		{"x32 mkdir", data{nr: sysnumX32["mkdir"] | x32SyscallBit, arch: auditArchX86_64}, retErrno | 1},
		{"x32 getpid", data{nr: sysnumX32["getpid"] | x32SyscallBit, arch: auditArchX86_64}, retAllow},
		{"x32 unlisted", data{nr: sysnumX32["getuid"] | x32SyscallBit, arch: auditArchX86_64}, enosys},
		{"foreign arch", data{nr: 39, arch: 0xc00000b7}, retKillProcess},
		{"huge nr", data{nr: 0xffffffff, arch: auditArchX86_64}, enosys},
	}
	for _, c := range cases {
		if got := run(t, f.Program, c.d); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}

	// Without x32 in the profile, an x32 syscall is a bad architecture.
	p.Architectures = []specs.Arch{specs.ArchX86_64}
	f, err = Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, f.Program, data{nr: sysnumX32["getpid"] | x32SyscallBit, arch: auditArchX86_64}); got != retKillProcess {
		t.Errorf("x32 syscall without x32: got %#x, want KILL_PROCESS", got)
	}
	if got := run(t, f.Program, data{nr: sysnumX86["getpid"], arch: auditArchI386}); got != retKillProcess {
		t.Errorf("i386 syscall without x86: got %#x, want KILL_PROCESS", got)
	}
}

// TestCompareOps checks every operator against Go's own 64-bit comparison,
// for values around the 32-bit halves' boundaries and random ones.
func TestCompareOps(t *testing.T) {
	ops := map[specs.LinuxSeccompOperator]func(arg, v, two uint64) bool{
		specs.OpEqualTo:      func(a, v, _ uint64) bool { return a == v },
		specs.OpNotEqual:     func(a, v, _ uint64) bool { return a != v },
		specs.OpLessThan:     func(a, v, _ uint64) bool { return a < v },
		specs.OpLessEqual:    func(a, v, _ uint64) bool { return a <= v },
		specs.OpGreaterThan:  func(a, v, _ uint64) bool { return a > v },
		specs.OpGreaterEqual: func(a, v, _ uint64) bool { return a >= v },
		specs.OpMaskedEqual:  func(a, v, two uint64) bool { return a&v == two },
	}
	rng := rand.New(rand.NewSource(1))
	edge := []uint64{0, 1, 0xffffffff, 0x1_00000000, 0x1_00000001, 0xffffffff_ffffffff, 0x7fffffff_ffffffff, 0x2_00000000, 0x1_ffffffff}
	vals := append([]uint64{}, edge...)
	for range 20 {
		vals = append(vals, rng.Uint64(), rng.Uint64()&0x3_0000000f)
	}
	for op, want := range ops {
		for _, v := range vals {
			two := v & 0x0000000f_0000000f
			p := &specs.LinuxSeccomp{
				DefaultAction: specs.ActAllow,
				Syscalls: []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: specs.ActErrno,
					Args: []specs.LinuxSeccompArg{{Index: 3, Value: v, ValueTwo: two, Op: op}}}},
			}
			f, err := Compile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range vals {
				exp := uint32(retAllow)
				if want(a, v, two) {
					exp = retErrno | 1
				}
				if got := run(t, f.Program, x64("getpid", 0, 0, 0, a)); got != exp {
					t.Fatalf("%s value %#x valueTwo %#x arg %#x: got %#x, want %#x", op, v, two, a, got, exp)
				}
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	allow := specs.ActAllow
	for _, c := range []struct {
		name string
		p    specs.LinuxSeccomp
	}{
		{"unknown default action", specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}},
		{"notify as default", specs.LinuxSeccomp{DefaultAction: specs.ActNotify}},
		{"unknown action", specs.LinuxSeccomp{DefaultAction: allow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: "SCMP_ACT_X"}}}},
		{"unknown op", specs.LinuxSeccomp{DefaultAction: allow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Op: "SCMP_CMP_X"}}}}}},
		{"arg index 6", specs.LinuxSeccomp{DefaultAction: allow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}}}}},
		{"errnoRet on allow", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: allow, ErrnoRet: uintp(1)}}}},
		{"unknown arch", specs.LinuxSeccomp{DefaultAction: allow, Architectures: []specs.Arch{"SCMP_ARCH_VAX"}}},
		{"unknown flag", specs.LinuxSeccomp{DefaultAction: allow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_X"}}},
	} {
		if _, err := Compile(&c.p); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", c.name, err)
		}
	}
}

func TestFlags(t *testing.T) {
	f, err := Compile(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{
		specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow, "SECCOMP_FILTER_FLAG_TSYNC"}})
	if err != nil {
		t.Fatal(err)
	}
	if f.Flags != FlagLog|FlagSpecAllow|FlagTsync {
		t.Fatalf("got %#x", f.Flags)
	}
}
