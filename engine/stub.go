package engine

import "encoding/binary"

// stubBase is the load address of the stub. It only has to be valid at exec
// time: the restore maps its own gadget page elsewhere and unmaps the stub
// before any saved mapping is created, so the saved layout may use it.
const stubBase = 0x10000

// stubCode is the whole stub program:
//
//	loop:   mov  eax, 34      ; pause()
//	        syscall
//	        jmp  loop
//	gadget: syscall           ; a syscall gadget followed by a breakpoint
//	        int3
var stubCode = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00,
	0x0f, 0x05,
	0xeb, 0xf7,
	0x0f, 0x05,
	0xcc,
}

// Stub returns the tiny static single-threaded x86-64 ELF that the runtime
// execs as the container's init when restoring. It waits in a pause() loop
// until the engine seizes it and rebuilds it from outside. It needs no
// loader, no libc and no stack.
func Stub() []byte {
	const ehdr, phdr = 64, 56
	const codeOff = ehdr + 2*phdr
	size := codeOff + len(stubCode)
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], stubBase+codeOff) // e_entry
	le.PutUint64(b[32:], ehdr)             // e_phoff
	le.PutUint16(b[52:], ehdr)             // e_ehsize
	le.PutUint16(b[54:], phdr)             // e_phentsize
	le.PutUint16(b[56:], 2)                // e_phnum
	p := b[ehdr:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 5) // R+X
	le.PutUint64(p[8:], 0)
	le.PutUint64(p[16:], stubBase)
	le.PutUint64(p[24:], stubBase)
	le.PutUint64(p[32:], uint64(size))
	le.PutUint64(p[40:], uint64(size))
	le.PutUint64(p[48:], 0x1000)
	p = b[ehdr+phdr:]
	le.PutUint32(p[0:], 0x6474e551) // PT_GNU_STACK
	le.PutUint32(p[4:], 6)          // RW, not executable
	le.PutUint64(p[48:], 16)
	copy(b[codeOff:], stubCode)
	return b
}
