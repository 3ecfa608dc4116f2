package seccomp

import (
	"fmt"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Return values (SECCOMP_RET_*).
const (
	retKillThread  = 0x00000000
	retKillProcess = 0x80000000
	retTrap        = 0x00030000
	retErrno       = 0x00050000
	retUserNotif   = 0x7fc00000
	retTrace       = 0x7ff00000
	retLog         = 0x7ffc0000
	retAllow       = 0x7fff0000
	retData        = 0x0000ffff
)

// Filter flags (SECCOMP_FILTER_FLAG_*).
const (
	FlagTsync            = 1 << 0
	FlagLog              = 1 << 1
	FlagSpecAllow        = 1 << 2
	FlagNewListener      = 1 << 3
	FlagTsyncESRCH       = 1 << 4
	FlagWaitKillableRecv = 1 << 5
)

// Audit architectures and the x32 syscall bit.
const (
	auditArchX86_64 = 0xc000003e
	auditArchI386   = 0x40000003
	x32SyscallBit   = 0x40000000
)

const eperm = 1

// Filter is a compiled profile.
type Filter struct {
	// Program is the BPF program for seccomp(SECCOMP_SET_MODE_FILTER).
	Program []Instruction
	// Flags are the SECCOMP_FILTER_FLAG_* of the profile, plus
	// FlagNewListener when a rule uses SCMP_ACT_NOTIFY.
	Flags uint
	// Skipped lists "arch/name" of the syscall names that an
	// architecture's table does not know.
	Skipped []string
}

// Listener reports whether loading the filter returns a notify listener.
func (f *Filter) Listener() bool { return f.Flags&FlagNewListener != 0 }

type arch struct {
	name  specs.Arch
	audit uint32
	table map[string]uint32
	bias  uint32 // added to every number (x32 bit)
	is32  bool   // 32-bit arguments
}

var (
	archX86_64 = arch{name: specs.ArchX86_64, audit: auditArchX86_64, table: sysnumX86_64}
	archX86    = arch{name: specs.ArchX86, audit: auditArchI386, table: sysnumX86, is32: true}
	archX32    = arch{name: specs.ArchX32, audit: auditArchX86_64, table: sysnumX32, bias: x32SyscallBit}
)

// foreignArchs are valid OCI architectures that cannot run on x86_64.
var foreignArchs = map[specs.Arch]bool{
	specs.ArchARM: true, specs.ArchAARCH64: true, specs.ArchMIPS: true, specs.ArchMIPS64: true,
	specs.ArchMIPS64N32: true, specs.ArchMIPSEL: true, specs.ArchMIPSEL64: true,
	specs.ArchMIPSEL64N32: true, specs.ArchPPC: true, specs.ArchPPC64: true, specs.ArchPPC64LE: true,
	specs.ArchS390: true, specs.ArchS390X: true, specs.ArchPARISC: true, specs.ArchPARISC64: true,
	specs.ArchRISCV64: true, specs.ArchLOONGARCH64: true, specs.ArchM68K: true, specs.ArchSH: true,
	specs.ArchSHEB: true,
}

var flagValues = map[specs.LinuxSeccompFlag]uint{
	"SECCOMP_FILTER_FLAG_TSYNC":            FlagTsync,
	specs.LinuxSeccompFlagLog:              FlagLog,
	specs.LinuxSeccompFlagSpecAllow:        FlagSpecAllow,
	specs.LinuxSeccompFlagWaitKillableRecv: FlagWaitKillableRecv,
	"SECCOMP_FILTER_FLAG_TSYNC_ESRCH":      FlagTsyncESRCH,
}

// actionValue translates an action and its errnoRet into a SECCOMP_RET value.
func actionValue(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := func() (uint32, error) {
		if errnoRet == nil {
			return eperm, nil
		}
		if *errnoRet > retData {
			return 0, fmt.Errorf("errnoRet %d out of range: %w", *errnoRet, ErrInvalid)
		}
		return uint32(*errnoRet), nil
	}
	switch a {
	case specs.ActErrno, specs.ActTrace:
		d, err := data()
		if err != nil {
			return 0, err
		}
		if a == specs.ActErrno {
			return retErrno | d, nil
		}
		return retTrace | d, nil
	}
	if errnoRet != nil {
		return 0, fmt.Errorf("errnoRet with action %s (only %s and %s take one): %w", a, specs.ActErrno, specs.ActTrace, ErrInvalid)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return retKillThread, nil
	case specs.ActKillProcess:
		return retKillProcess, nil
	case specs.ActTrap:
		return retTrap, nil
	case specs.ActAllow:
		return retAllow, nil
	case specs.ActLog:
		return retLog, nil
	case specs.ActNotify:
		return retUserNotif, nil
	}
	return 0, fmt.Errorf("unknown action %q: %w", a, ErrInvalid)
}

type cond struct {
	index    uint
	op       specs.LinuxSeccompOperator
	val, two uint64
}

type rule struct {
	conds []cond
	ret   uint32
}

// decision is what one syscall number of one architecture does.
type decision struct {
	uncond bool
	ret    uint32 // when uncond
	rules  []rule // conditional rules, in order, when !uncond
}

// Compile translates the profile into a BPF program.
func Compile(p *specs.LinuxSeccomp) (*Filter, error) {
	if p == nil {
		return nil, fmt.Errorf("nil profile: %w", ErrInvalid)
	}
	def, err := actionValue(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("default action: %w", err)
	}
	if p.DefaultAction == specs.ActNotify {
		return nil, fmt.Errorf("%s cannot be the default action: %w", specs.ActNotify, ErrInvalid)
	}
	f := &Filter{}
	for _, fl := range p.Flags {
		v, ok := flagValues[fl]
		if !ok {
			return nil, fmt.Errorf("unknown flag %q: %w", fl, ErrInvalid)
		}
		f.Flags |= v
	}

	archs := []arch{archX86_64}
	for _, a := range p.Architectures {
		switch {
		case a == specs.ArchX86_64:
		case a == specs.ArchX86:
			archs = appendArch(archs, archX86)
		case a == specs.ArchX32:
			archs = appendArch(archs, archX32)
		case foreignArchs[a]:
			logrus.WithField("arch", a).Debug("seccomp: architecture cannot run on x86_64, skipped")
		default:
			return nil, fmt.Errorf("unknown architecture %q: %w", a, ErrInvalid)
		}
	}

	perArch := make([]map[uint32]*decision, len(archs))
	for i := range perArch {
		perArch[i] = map[uint32]*decision{}
	}
	for _, sc := range p.Syscalls {
		ret, err := actionValue(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("syscalls %v: %w", sc.Names, err)
		}
		rules, err := rulesOf(sc.Args, ret)
		if err != nil {
			return nil, fmt.Errorf("syscalls %v: %w", sc.Names, err)
		}
		if ret == def {
			continue
		}
		if sc.Action == specs.ActNotify {
			f.Flags |= FlagNewListener
		}
		for _, name := range sc.Names {
			for ai, a := range archs {
				nr, ok := a.table[name]
				if !ok {
					f.Skipped = append(f.Skipped, string(a.name)+"/"+name)
					logrus.WithField("syscall", name).WithField("arch", a.name).Debug("seccomp: unknown syscall skipped")
					continue
				}
				addRules(perArch[ai], nr+a.bias, rules)
			}
		}
	}

	prog, err := generate(archs, perArch, def)
	if err != nil {
		return nil, err
	}
	f.Program = prog
	return f, nil
}

func appendArch(archs []arch, a arch) []arch {
	for _, x := range archs {
		if x.name == a.name {
			return archs
		}
	}
	return append(archs, a)
}

// rulesOf turns the args of one profile entry into rules (see the package
// doc for several conditions on one argument).
func rulesOf(args []specs.LinuxSeccompArg, ret uint32) ([]rule, error) {
	if len(args) == 0 {
		return []rule{{ret: ret}}, nil
	}
	var conds []cond
	seen := map[uint]int{}
	for _, a := range args {
		if a.Index > 5 {
			return nil, fmt.Errorf("argument index %d: %w", a.Index, ErrInvalid)
		}
		switch a.Op {
		case specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
			specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual:
		default:
			return nil, fmt.Errorf("unknown operator %q: %w", a.Op, ErrInvalid)
		}
		seen[a.Index]++
		conds = append(conds, cond{index: a.Index, op: a.Op, val: a.Value, two: a.ValueTwo})
	}
	for _, n := range seen {
		if n > 1 {
			rules := make([]rule, len(conds))
			for i, c := range conds {
				rules[i] = rule{conds: []cond{c}, ret: ret}
			}
			return rules, nil
		}
	}
	return []rule{{conds: conds, ret: ret}}, nil
}

func addRules(m map[uint32]*decision, nr uint32, rules []rule) {
	d := m[nr]
	if d == nil {
		d = &decision{}
		m[nr] = d
	}
	if d.uncond {
		return // the first unconditional rule decides
	}
	for _, r := range rules {
		if len(r.conds) == 0 {
			*d = decision{uncond: true, ret: r.ret}
			return
		}
	}
	d.rules = append(d.rules, rules...)
}

// segment is a range of syscall numbers with one decision.
type segment struct {
	lo, hi uint32
	d      *decision // nil: default action
}

func segmentsOf(m map[uint32]*decision) []segment {
	nrs := make([]uint32, 0, len(m))
	for nr := range m {
		nrs = append(nrs, nr)
	}
	sort.Slice(nrs, func(i, j int) bool { return nrs[i] < nrs[j] })
	var segs []segment
	next := uint32(0) // first number not yet covered
	covered := false  // next wrapped past 0xffffffff
	for _, nr := range nrs {
		d := m[nr]
		if nr > next {
			segs = append(segs, segment{lo: next, hi: nr - 1})
		}
		last := len(segs) - 1
		if last >= 0 && segs[last].hi == nr-1 && segs[last].d != nil && segs[last].d.uncond && d.uncond && segs[last].d.ret == d.ret {
			segs[last].hi = nr
		} else {
			segs = append(segs, segment{lo: nr, hi: nr, d: d})
		}
		if nr == ^uint32(0) {
			covered = true
		}
		next = nr + 1
	}
	if !covered {
		segs = append(segs, segment{lo: next, hi: ^uint32(0)})
	}
	return segs
}

func generate(archs []arch, perArch []map[uint32]*decision, def uint32) ([]Instruction, error) {
	a := newAssembler()
	var x32 = -1
	a.ld(offArch)
	for i, ar := range archs {
		if ar.name == specs.ArchX32 {
			x32 = i
			continue // shares the audit arch of x86_64
		}
		a.jfar(opJeqK, ar.audit, "arch."+string(ar.name))
	}
	a.ret(retKillProcess)
	for i, ar := range archs {
		a.label("arch." + string(ar.name))
		a.ld(offNr)
		switch ar.name {
		case specs.ArchX86_64:
			if x32 >= 0 {
				a.jfar(opJgeK, x32SyscallBit, "arch."+string(specs.ArchX32))
			} else {
				bad := a.fresh("badarch")
				a.jfar(opJgeK, x32SyscallBit, bad)
				tree(a, segmentsOf(perArch[i]), def, ar.is32)
				a.label(bad)
				a.ret(retKillProcess)
				continue
			}
		case specs.ArchX32:
			// Reached only with the x32 bit set.
		}
		tree(a, segmentsOf(perArch[i]), def, ar.is32)
	}
	prog, err := a.resolve()
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp program: %w", err)
	}
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("%d instructions, the kernel takes %d: %w", len(prog), maxInsns, ErrTooLarge)
	}
	return prog, nil
}

// tree emits a binary search over the segments; A holds the syscall number.
func tree(a *assembler, segs []segment, def uint32, is32 bool) {
	if len(segs) == 1 {
		leaf(a, segs[0].d, def, is32)
		return
	}
	mid := len(segs) / 2
	right := a.fresh("ge")
	a.jfar(opJgeK, segs[mid].lo, right)
	tree(a, segs[:mid], def, is32)
	a.label(right)
	tree(a, segs[mid:], def, is32)
}

func leaf(a *assembler, d *decision, def uint32, is32 bool) {
	switch {
	case d == nil:
		a.ret(def)
	case d.uncond:
		a.ret(d.ret)
	default:
		for _, r := range d.rules {
			next := a.fresh("rule")
			for _, c := range r.conds {
				condCode(a, c, next, is32)
			}
			a.ret(r.ret)
			a.label(next)
		}
		a.ret(def)
	}
}

// condCode falls through when the condition holds and jumps to fail when it
// does not. 64-bit values are compared high half first.
func condCode(a *assembler, c cond, fail string, is32 bool) {
	lo := uint32(offArgs + 8*c.index)
	hi := lo + 4
	v, two := c.val, c.two
	vlo, vhi := uint32(v), uint32(v>>32)
	if c.op == specs.OpMaskedEqual {
		// value is the mask, valueTwo the datum.
		if !is32 {
			a.ld(hi)
			a.and(vhi)
			a.jmp(opJeqK, uint32(two>>32), "", fail)
		}
		a.ld(lo)
		a.and(vlo)
		a.jmp(opJeqK, uint32(two), "", fail)
		return
	}
	pass := a.fresh("pass")
	if !is32 {
		a.ld(hi)
		switch c.op {
		case specs.OpEqualTo:
			a.jmp(opJeqK, vhi, "", fail)
		case specs.OpNotEqual:
			a.jmp(opJeqK, vhi, "", pass)
		case specs.OpGreaterThan, specs.OpGreaterEqual:
			a.jmp(opJgtK, vhi, pass, "")
			a.jmp(opJeqK, vhi, "", fail)
		case specs.OpLessThan, specs.OpLessEqual:
			a.jmp(opJgeK, vhi, "", pass)
			a.jmp(opJgtK, vhi, fail, "")
		}
	}
	a.ld(lo)
	switch c.op {
	case specs.OpEqualTo:
		a.jmp(opJeqK, vlo, "", fail)
	case specs.OpNotEqual:
		a.jmp(opJeqK, vlo, fail, "")
	case specs.OpGreaterThan:
		a.jmp(opJgtK, vlo, "", fail)
	case specs.OpGreaterEqual:
		a.jmp(opJgeK, vlo, "", fail)
	case specs.OpLessThan:
		a.jmp(opJgeK, vlo, fail, "")
	case specs.OpLessEqual:
		a.jmp(opJgtK, vlo, fail, "")
	}
	a.label(pass)
}
