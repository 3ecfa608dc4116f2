package seccomp

import "fmt"

// Instruction is one classic BPF instruction (struct sock_filter).
type Instruction struct {
	Code   uint16
	Jt, Jf uint8
	K      uint32
}

// Classic BPF opcodes used by the compiler.
const (
	opLdAbsW = 0x20 // BPF_LD | BPF_W | BPF_ABS
	opAndK   = 0x54 // BPF_ALU | BPF_AND | BPF_K
	opJa     = 0x05 // BPF_JMP | BPF_JA
	opJeqK   = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	opJgtK   = 0x25 // BPF_JMP | BPF_JGT | BPF_K
	opJgeK   = 0x35 // BPF_JMP | BPF_JGE | BPF_K
	opRetK   = 0x06 // BPF_RET | BPF_K
)

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// maxInsns is BPF_MAXINSNS.
const maxInsns = 4096

// asmInsn is an instruction whose jump targets are labels. For conditional
// jumps jt and jf are labels ("" = the next instruction) that must end up
// within 255 instructions; ja takes any distance.
type asmInsn struct {
	Instruction
	jt, jf, ja string
}

// assembler collects instructions and labels and resolves the jumps.
type assembler struct {
	insns   []asmInsn
	labels  map[string]int
	pending []string
	n       int
}

func newAssembler() *assembler { return &assembler{labels: map[string]int{}} }

// fresh returns a new unique label.
func (a *assembler) fresh(prefix string) string {
	a.n++
	return fmt.Sprintf("%s.%d", prefix, a.n)
}

// label binds l to the next instruction emitted.
func (a *assembler) label(l string) { a.pending = append(a.pending, l) }

func (a *assembler) emit(i asmInsn) {
	for _, l := range a.pending {
		a.labels[l] = len(a.insns)
	}
	a.pending = a.pending[:0]
	a.insns = append(a.insns, i)
}

func (a *assembler) ld(off uint32) {
	a.emit(asmInsn{Instruction: Instruction{Code: opLdAbsW, K: off}})
}

func (a *assembler) and(k uint32) {
	a.emit(asmInsn{Instruction: Instruction{Code: opAndK, K: k}})
}

func (a *assembler) ret(k uint32) {
	a.emit(asmInsn{Instruction: Instruction{Code: opRetK, K: k}})
}

// jmp is a near conditional jump.
func (a *assembler) jmp(op uint16, k uint32, jt, jf string) {
	a.emit(asmInsn{Instruction: Instruction{Code: op, K: k}, jt: jt, jf: jf})
}

// jfar jumps to the label (any distance) when the condition holds and falls
// through otherwise.
func (a *assembler) jfar(op uint16, k uint32, target string) {
	skip := a.fresh("skip")
	a.jmp(op, k, "", skip)
	a.emit(asmInsn{Instruction: Instruction{Code: opJa}, ja: target})
	a.label(skip)
}

func (a *assembler) resolve() ([]Instruction, error) {
	if len(a.pending) > 0 {
		return nil, fmt.Errorf("labels %v at the end of the program", a.pending)
	}
	out := make([]Instruction, len(a.insns))
	off := func(i int, l string) (int, error) {
		if l == "" {
			return 0, nil
		}
		t, ok := a.labels[l]
		if !ok {
			return 0, fmt.Errorf("undefined label %s", l)
		}
		if t <= i {
			return 0, fmt.Errorf("backward jump to %s", l)
		}
		return t - i - 1, nil
	}
	for i, in := range a.insns {
		out[i] = in.Instruction
		if in.Code == opJa {
			o, err := off(i, in.ja)
			if err != nil {
				return nil, err
			}
			out[i].K = uint32(o)
			continue
		}
		if in.Code&0x07 == 0x05 { // conditional jumps
			t, err := off(i, in.jt)
			if err != nil {
				return nil, err
			}
			f, err := off(i, in.jf)
			if err != nil {
				return nil, err
			}
			if t > 255 || f > 255 {
				return nil, fmt.Errorf("conditional jump at %d too far (%d, %d)", i, t, f)
			}
			out[i].Jt, out[i].Jf = uint8(t), uint8(f)
		}
	}
	return out, nil
}
