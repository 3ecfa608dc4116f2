package cgroups

import (
	"fmt"
	"math"

	"github.com/cilium/ebpf/asm"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// deviceFilter builds the BPF_CGROUP_DEVICE program for an OCI device list.
//
// The program decides each requested access bit (read, write, mknod) on its
// own, exactly like the v1 devices controller: a bit is granted when the
// last rule that matches the device (type, major, minor) and names the bit
// allows it, and the access is granted when every requested bit is. (Rule
// matching by "any access bit in common" would let "allow c 5:* r" grant a
// write; matching by "all bits" would let "deny c 1:3 w" miss an "rw"
// request: deciding per bit avoids both.) No matching rule means deny.
//
// Context (struct bpf_cgroup_dev_ctx): u32 access_type = access<<16 | type,
// u32 major, u32 minor.
func deviceFilter(devs []specs.LinuxDeviceCgroup) (asm.Instructions, error) {
	type rule struct {
		allow        bool
		typ          int32 // -1: any
		major, minor int64 // -1: any
		access       int32
	}
	rules := make([]rule, 0, len(devs))
	for _, d := range devs {
		r := rule{allow: d.Allow, typ: -1, major: -1, minor: -1}
		switch d.Type {
		case "", "a":
		case "c":
			r.typ = unix.BPF_DEVCG_DEV_CHAR
		case "b":
			r.typ = unix.BPF_DEVCG_DEV_BLOCK
		default:
			return nil, fmt.Errorf("device type %q: %w", d.Type, ErrInvalid)
		}
		for _, p := range []struct {
			v   *int64
			dst *int64
		}{{d.Major, &r.major}, {d.Minor, &r.minor}} {
			if p.v != nil && *p.v >= 0 {
				if *p.v > math.MaxUint32 {
					return nil, fmt.Errorf("device number %d: %w", *p.v, ErrInvalid)
				}
				*p.dst = *p.v
			}
		}
		access := d.Access
		if access == "" {
			access = "rwm"
		}
		for _, c := range access {
			switch c {
			case 'r':
				r.access |= unix.BPF_DEVCG_ACC_READ
			case 'w':
				r.access |= unix.BPF_DEVCG_ACC_WRITE
			case 'm':
				r.access |= unix.BPF_DEVCG_ACC_MKNOD
			default:
				return nil, fmt.Errorf("device access %q: %w", d.Access, ErrInvalid)
			}
		}
		rules = append(rules, r)
	}

	insts := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.And.Imm32(asm.R2, 0xffff), // R2 = type
		asm.LoadMem(asm.R3, asm.R1, 0, asm.Word),
		asm.RSh.Imm32(asm.R3, 16),                // R3 = requested access
		asm.LoadMem(asm.R4, asm.R1, 4, asm.Word), // R4 = major
		asm.LoadMem(asm.R5, asm.R1, 8, asm.Word), // R5 = minor
	}
	// label puts a symbol on the next instruction emitted.
	pending := ""
	emit := func(in ...asm.Instruction) {
		ins := append([]asm.Instruction(nil), in...)
		if pending != "" {
			ins[0] = ins[0].WithSymbol(pending)
			pending = ""
		}
		insts = append(insts, ins...)
	}
	deny := []asm.Instruction{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	for _, bit := range []int32{unix.BPF_DEVCG_ACC_READ, unix.BPF_DEVCG_ACC_WRITE, unix.BPF_DEVCG_ACC_MKNOD} {
		done := fmt.Sprintf("bit%d-done", bit)
		emit(
			asm.Mov.Reg32(asm.R1, asm.R3),
			asm.And.Imm32(asm.R1, bit),
			asm.JEq.Imm32(asm.R1, 0, done),
		)
		n, wildcard := 0, false
		for i := len(rules) - 1; i >= 0 && !wildcard; i-- {
			r := rules[i]
			if r.access&bit == 0 {
				continue
			}
			next := fmt.Sprintf("bit%d-rule%d", bit, n+1)
			var block []asm.Instruction
			if r.typ >= 0 {
				block = append(block, asm.JNE.Imm32(asm.R2, r.typ, next))
			}
			if r.major >= 0 {
				block = append(block, asm.JNE.Imm32(asm.R4, int32(uint32(r.major)), next))
			}
			if r.minor >= 0 {
				block = append(block, asm.JNE.Imm32(asm.R5, int32(uint32(r.minor)), next))
			}
			// A rule without conditions decides the bit for every
			// device: the rules before it are never reached.
			wildcard = len(block) == 0
			if r.allow {
				block = append(block, asm.Ja.Label(done))
			} else {
				block = append(block, deny...)
			}
			emit(block...)
			n++
			if !wildcard {
				pending = next
			}
		}
		if !wildcard {
			emit(deny...) // no rule names this bit for this device
		}
		pending = done
	}
	emit(asm.Mov.Imm(asm.R0, 1), asm.Return())
	return insts, nil
}
