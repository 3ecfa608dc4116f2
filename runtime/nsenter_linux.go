package runtime

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A process of the Go runtime is multi-threaded from its first instruction,
// and the kernel lets only a single-threaded process join a user or a time
// namespace. To exec into a container that has its own user or time
// namespace, the runtime therefore first runs a tiny static ELF of its own
// (from a memfd) that:
//
//  1. setns() to every namespace fd from fd 5 upwards until the first
//     closed fd (EBADF), closing each; the user namespace comes first (the
//     mount namespace is joined later by the exec init, so that execveat
//     still resolves this program's ELF interpreter on the host);
//  2. becomes root of the joined user namespace: setgroups(0, NULL) (its
//     failure is ignored: setgroups may be denied), setresgid(0, 0, 0),
//     setresuid(0, 0, 0);
//  3. forks, so that the child is inside the joined pid namespace; the
//     parent exits 0 at once, the child execveat()s fd 4 (this program) with
//     the stub's own argv and envp, so it continues as the exec init.
//
// Any failing syscall makes it exit with the errno as status. The machine
// code (x86-64, assembled with GNU as from the listing beside each line):
var nsenterCode = []byte{
	0x41, 0xbc, 0x05, 0x00, 0x00, 0x00, //        mov  r12d, 5
	0xb8, 0x34, 0x01, 0x00, 0x00, //       1:     mov  eax, 308 (setns)
	0x44, 0x89, 0xe7, //                          mov  edi, r12d
	0x31, 0xf6, //                                xor  esi, esi
	0x0f, 0x05, //                                syscall
	0x48, 0x83, 0xf8, 0xf7, //                    cmp  rax, -EBADF
	0x74, 0x14, //                                je   2f
	0x48, 0x85, 0xc0, //                          test rax, rax
	0x75, 0x73, //                                jnz  9f
	0xb8, 0x03, 0x00, 0x00, 0x00, //              mov  eax, 3 (close)
	0x44, 0x89, 0xe7, //                          mov  edi, r12d
	0x0f, 0x05, //                                syscall
	0x41, 0xff, 0xc4, //                          inc  r12d
	0xeb, 0xda, //                                jmp  1b
	0xb8, 0x74, 0x00, 0x00, 0x00, //       2:     mov  eax, 116 (setgroups)
	0x31, 0xff, //                                xor  edi, edi
	0x31, 0xf6, //                                xor  esi, esi
	0x0f, 0x05, //                                syscall
	0xb8, 0x77, 0x00, 0x00, 0x00, //              mov  eax, 119 (setresgid)
	0x31, 0xff, 0x31, 0xf6, 0x31, 0xd2, //        xor  edi, edi; xor esi, esi; xor edx, edx
	0x0f, 0x05, //                                syscall
	0x48, 0x85, 0xc0, //                          test rax, rax
	0x75, 0x47, //                                jnz  9f
	0xb8, 0x75, 0x00, 0x00, 0x00, //              mov  eax, 117 (setresuid)
	0x31, 0xff, 0x31, 0xf6, 0x31, 0xd2, //        xor  edi, edi; xor esi, esi; xor edx, edx
	0x0f, 0x05, //                                syscall
	0x48, 0x85, 0xc0, //                          test rax, rax
	0x75, 0x35, //                                jnz  9f
	0xb8, 0x39, 0x00, 0x00, 0x00, //              mov  eax, 57 (fork)
	0x0f, 0x05, //                                syscall
	0x48, 0x85, 0xc0, //                          test rax, rax
	0x78, 0x29, //                                js   9f
	0x75, 0x32, //                                jnz  8f
	0xbf, 0x04, 0x00, 0x00, 0x00, //              mov  edi, 4
	0x48, 0x8d, 0x35, 0x2f, 0x00, 0x00, 0x00, //  lea  rsi, [rip+empty]
	0x48, 0x8d, 0x54, 0x24, 0x08, //              lea  rdx, [rsp+8]          argv
	0x48, 0x8b, 0x0c, 0x24, //                    mov  rcx, [rsp]            argc
	0x4c, 0x8d, 0x54, 0xca, 0x08, //              lea  r10, [rdx+rcx*8+8]    envp
	0x41, 0xb8, 0x00, 0x10, 0x00, 0x00, //        mov  r8d, AT_EMPTY_PATH
	0xb8, 0x42, 0x01, 0x00, 0x00, //              mov  eax, 322 (execveat)
	0x0f, 0x05, //                                syscall
	0xf7, 0xd8, //                         9:     neg  eax
	0x89, 0xc7, //                                mov  edi, eax
	0xb8, 0xe7, 0x00, 0x00, 0x00, //              mov  eax, 231 (exit_group)
	0x0f, 0x05, //                                syscall
	0x31, 0xff, //                         8:     xor  edi, edi
	0xb8, 0xe7, 0x00, 0x00, 0x00, //              mov  eax, 231 (exit_group)
	0x0f, 0x05, //                                syscall
	0x00, //                               empty: .byte 0
}

const (
	nsenterExeFD   = 4 // the program to continue as
	nsenterFirstNS = 5 // first namespace fd
	nsenterBase    = 0x400000
)

// nsenterELF wraps nsenterCode in a minimal static ELF: one read+execute
// PT_LOAD segment holding headers and code, and a non-executable stack.
func nsenterELF() []byte {
	const ehdrSize, phdrSize = 64, 56
	const codeOff = ehdrSize + 2*phdrSize
	b := make([]byte, codeOff+len(nsenterCode))
	le := binary.LittleEndian
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, EV_CURRENT
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], nsenterBase+codeOff) // entry
	le.PutUint64(b[32:], ehdrSize)            // program headers
	le.PutUint16(b[52:], ehdrSize)
	le.PutUint16(b[54:], phdrSize)
	le.PutUint16(b[56:], 2)
	load := b[ehdrSize:]
	le.PutUint32(load[0:], 1)               // PT_LOAD
	le.PutUint32(load[4:], 5)               // PF_R|PF_X
	le.PutUint64(load[16:], nsenterBase)    // vaddr
	le.PutUint64(load[24:], nsenterBase)    // paddr
	le.PutUint64(load[32:], uint64(len(b))) // filesz
	le.PutUint64(load[40:], uint64(len(b))) // memsz
	le.PutUint64(load[48:], 0x1000)         // align
	stack := b[ehdrSize+phdrSize:]
	le.PutUint32(stack[0:], 0x6474e551) // PT_GNU_STACK
	le.PutUint32(stack[4:], 6)          // PF_R|PF_W
	copy(b[codeOff:], nsenterCode)
	return b
}

// nsenterMemfd returns a sealed memfd holding the nsenter ELF.
func nsenterMemfd() (*os.File, error) {
	fd, err := unix.MemfdCreate("cryo-nsenter", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd for nsenter: %w", err)
	}
	f := os.NewFile(uintptr(fd), "cryo-nsenter")
	if _, err := f.Write(nsenterELF()); err != nil {
		f.Close()
		return nil, fmt.Errorf("write nsenter: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal nsenter: %w", err)
	}
	return f, nil
}
