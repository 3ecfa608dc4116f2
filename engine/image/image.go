// Package image is the on-disk record format of the cryo checkpoint engine.
//
// An engine image is a directory (mode 0700) of files (mode 0600):
//
//	inventory.json      Inventory: format magic and version, the task list (parent before
//	                    child), pipes with their buffered bytes, the host kernel
//	task-<pid>.json     Task: one per process, <pid> is its PID in its own PID namespace
//	pages-<pid>.img     raw page data of that process, referenced by Vma.Pages
//
// Record files are JSON documents. Every record carries the same header
// ({"magic": "cryo-engine-image", "version": 1}); a decoder refuses any other
// magic and any version it does not know, and validates what it decoded
// (address ranges page aligned and ordered, page runs inside their mapping and
// inside the pages file, file descriptors unique...) before a restore may act on
// it: the records come from disk and are treated as untrusted input.
//
// Page data is raw: a PageRun{Addr, Len, Off} says that the Len bytes of the
// task's memory at Addr are the Len bytes at offset Off of the task's pages
// file. Pages not listed are not present (never touched, or zero pages) and are
// restored as fresh zero-filled anonymous memory, or from the mapped file for
// file-backed private mappings.
//
// Register sets are stored as the raw kernel regset layouts of x86-64
// (NT_PRSTATUS: struct user_regs_struct, 216 bytes; NT_X86_XSTATE: the XSAVE
// standard layout, whose size depends on the CPU's XCR0).
//
// The package is pure Go (stdlib only, no build tags) so that the decoders
// can be fuzzed anywhere.
package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// Magic identifies an engine record file.
const Magic = "cryo-engine-image"

// Version is the format revision this package writes and the only one it reads.
const Version = 1

// PageSize is the page size of the only supported architecture (x86-64).
const PageSize = 4096

// File names inside an image directory.
const (
	InventoryFile = "inventory.json"
	taskPrefix    = "task-"
	pagesPrefix   = "pages-"
)

// TaskFile is the name of the record file of the task with PID pid.
func TaskFile(pid int) string { return taskPrefix + strconv.Itoa(pid) + ".json" }

// PagesFile is the name of the page data file of the task with PID pid.
func PagesFile(pid int) string { return pagesPrefix + strconv.Itoa(pid) + ".img" }

// PagesPartFile is the name of part k (k >= 1) of the page data of the task
// with PID pid; part 0 is PagesFile(pid).
func PagesPartFile(pid, k int) string {
	return pagesPrefix + strconv.Itoa(pid) + "-" + strconv.Itoa(k) + ".img"
}

// ErrFormat is returned (wrapped) for any record that is not a valid engine record.
var ErrFormat = errors.New("invalid engine image")

// Header starts every record file.
type Header struct {
	Magic   string `json:"magic"`
	Version int    `json:"version"`
}

func (h Header) check() error {
	if h.Magic != Magic {
		return fmt.Errorf("%w: magic %q", ErrFormat, h.Magic)
	}
	if h.Version != Version {
		return fmt.Errorf("%w: version %d (this engine reads version %d)", ErrFormat, h.Version, Version)
	}
	return nil
}

// NewHeader returns the header of the current format.
func NewHeader() Header { return Header{Magic: Magic, Version: Version} }

// Inventory describes the whole dumped tree.
type Inventory struct {
	Header
	// Kernel is the release of the kernel the image was taken on.
	Kernel string `json:"kernel"`
	// RootPid is the PID of the root task in its PID namespace.
	RootPid int `json:"root_pid"`
	// Tasks lists the PIDs of every process, each parent before its children.
	Tasks []int `json:"tasks"`
	// Pipes are the pipes (and FIFOs) that fds of the tree refer to.
	Pipes []Pipe `json:"pipes,omitempty"`
	// UnixSockets are the unix socket pairs that fds of the tree refer to.
	UnixSockets []UnixSocket `json:"unix_sockets,omitempty"`
	// Shmems are the shared memory objects (shared anonymous memory, memfd)
	// that mappings and fds of the tree refer to.
	Shmems []Shmem `json:"shmems,omitempty"`
	// Monotonic and Boottime are CLOCK_MONOTONIC and CLOCK_BOOTTIME (in ns) as
	// the tree saw them when it was stopped: a restore into a time namespace
	// whose offsets make them continue from there hides the downtime.
	Monotonic int64 `json:"monotonic_ns,omitempty"`
	Boottime  int64 `json:"boottime_ns,omitempty"`
	// XStateSize is the size of the NT_X86_XSTATE regset on the dumping CPU.
	XStateSize int `json:"xstate_size"`
}

// Pipe is one pipe object shared by the fds that refer to it.
type Pipe struct {
	ID uint64 `json:"id"` // the pipe inode at dump time
	// Size is the pipe buffer size (F_GETPIPE_SZ).
	Size int `json:"size"`
	// Data are the bytes that were buffered in it.
	Data []byte `json:"data,omitempty"`
	// Fifo is the path of the FIFO (relative to the task root) or empty for a pipe.
	Fifo string `json:"fifo,omitempty"`
}

// ShmemPagesFile is the name of the page data file of a shared memory object.
func ShmemPagesFile(id uint64) string {
	return pagesPrefix + "shmem-" + strconv.FormatUint(id, 10) + ".img"
}

// Shmem is a shared memory object: the contents of a memfd or of shared
// anonymous memory (which is restored as a memfd).
type Shmem struct {
	ID   uint64 `json:"id"` // its inode at dump time
	Size uint64 `json:"size"`
	// Memfd says it was a memfd, named Name; else it was shared anonymous memory.
	Memfd bool   `json:"memfd,omitempty"`
	Name  string `json:"name,omitempty"`
	// Seals are the memfd seals (F_GET_SEALS).
	Seals int `json:"seals,omitempty"`
	// PagesFile holds the data; Runs give object offsets (Addr) and file offsets (Off).
	PagesFile string    `json:"pages_file,omitempty"`
	PagesSize uint64    `json:"pages_size,omitempty"`
	Runs      []PageRun `json:"runs,omitempty"`
}

// Task is one process.
type Task struct {
	Header
	Pid  int    `json:"pid"` // in the task's PID namespace
	PPid int    `json:"ppid"`
	Pgid int    `json:"pgid"`
	Sid  int    `json:"sid"`
	Comm string `json:"comm"`

	// Zombie tasks carry only ExitCode (a wait status) besides the ids.
	Zombie   bool `json:"zombie,omitempty"`
	ExitCode int  `json:"exit_code,omitempty"`
	// Stopped says the process was in a group stop (SIGSTOP, SIGTSTP, ...):
	// it is restored stopped, and a SIGCONT resumes it.
	Stopped bool `json:"stopped,omitempty"`

	// Ctty says the task is a session leader whose controlling terminal is
	// the fd marked Tty; Tpgid is the terminal's foreground process group.
	Ctty  bool `json:"ctty,omitempty"`
	Tpgid int  `json:"tpgid,omitempty"`

	Threads []Thread `json:"threads,omitempty"`
	Mm      *Mm      `json:"mm,omitempty"`
	Fds     []Fd     `json:"fds,omitempty"`
	// FilesFrom is the PID of an earlier task whose fd table this task shares
	// (CLONE_FILES), or 0.
	FilesFrom int `json:"files_from,omitempty"`

	Cwd         string      `json:"cwd"`
	Root        string      `json:"root"`
	Umask       uint32      `json:"umask"`
	Rlimits     []Rlimit    `json:"rlimits,omitempty"`
	Creds       Creds       `json:"creds"`
	Sigactions  []Sigaction `json:"sigactions,omitempty"`
	Personality uint64      `json:"personality"`
	// ChildSubreaper is PR_SET_CHILD_SUBREAPER; Dumpable is PR_GET_DUMPABLE.
	ChildSubreaper bool     `json:"child_subreaper,omitempty"`
	Dumpable       int      `json:"dumpable"`
	Itimers        []Itimer `json:"itimers,omitempty"`
	// Seccomp are the task's seccomp filters, oldest first (every thread has the same).
	Seccomp []SeccompFilter `json:"seccomp,omitempty"`
	// PosixTimers are the timers of timer_create, recreated with their IDs.
	PosixTimers []PosixTimer `json:"posix_timers,omitempty"`
	// SharedSigpending are the signals queued to the whole process.
	SharedSigpending []Siginfo `json:"shared_sigpending,omitempty"`
}

// Thread is one thread of a task; Threads[0] is the thread-group leader.
type Thread struct {
	Tid     int    `json:"tid"`
	Regs    []byte `json:"regs"`   // NT_PRSTATUS
	XState  []byte `json:"xstate"` // NT_X86_XSTATE
	Sigmask uint64 `json:"sigmask"`
	// Rseq is the registered restartable-sequence area, if any.
	Rseq          *Rseq     `json:"rseq,omitempty"`
	RobustList    uint64    `json:"robust_list,omitempty"`
	RobustListLen uint64    `json:"robust_list_len,omitempty"`
	TidAddress    uint64    `json:"tid_address,omitempty"`
	Altstack      *Altstack `json:"altstack,omitempty"`
	Sigpending    []Siginfo `json:"sigpending,omitempty"`
	Comm          string    `json:"comm,omitempty"`
	// Pdeathsig is the parent-death signal (PR_SET_PDEATHSIG).
	Pdeathsig int `json:"pdeathsig,omitempty"`
}

// Rseq is a thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
type Rseq struct {
	Addr      uint64 `json:"addr"`
	Size      uint32 `json:"size"`
	Signature uint32 `json:"signature"`
}

// Altstack is a thread's sigaltstack (stack_t).
type Altstack struct {
	SP    uint64 `json:"sp"`
	Flags int32  `json:"flags"`
	Size  uint64 `json:"size"`
}

// Siginfo is one queued signal: the raw 128-byte siginfo_t.
type Siginfo struct {
	Raw []byte `json:"raw"`
}

// PosixTimer is one POSIX timer (timer_create).
type PosixTimer struct {
	ID    int    `json:"id"`
	Clock int    `json:"clock"`
	Signo int    `json:"signo"`
	Value uint64 `json:"value"` // sigev_value
	// Notify is SIGEV_SIGNAL (0), SIGEV_NONE (1) or SIGEV_THREAD_ID (4), with Tid.
	Notify int `json:"notify"`
	Tid    int `json:"tid,omitempty"`
	// ValueNs is the time left before expiry, IntervalNs the period.
	ValueNs    int64 `json:"value_ns,omitempty"`
	IntervalNs int64 `json:"interval_ns,omitempty"`
}

// Rlimit is one resource limit (RLIMIT_* index).
type Rlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// Creds are the credentials of a task.
type Creds struct {
	Uid    [4]uint32 `json:"uid"` // real, effective, saved, fs
	Gid    [4]uint32 `json:"gid"`
	Groups []uint32  `json:"groups,omitempty"`
	// NoNewPrivs is the PR_SET_NO_NEW_PRIVS bit.
	NoNewPrivs bool `json:"no_new_privs,omitempty"`
	// Capability sets (bit n = capability n) and securebits.
	CapInh     uint64 `json:"cap_inh"`
	CapPrm     uint64 `json:"cap_prm"`
	CapEff     uint64 `json:"cap_eff"`
	CapBnd     uint64 `json:"cap_bnd"`
	CapAmb     uint64 `json:"cap_amb"`
	Securebits uint32 `json:"securebits,omitempty"`
}

// SeccompFilter is one installed seccomp BPF program.
type SeccompFilter struct {
	// Flags are the SECCOMP_FILTER_FLAG_* it was installed with (LOG, SPEC_ALLOW).
	Flags uint64 `json:"flags,omitempty"`
	// Prog is the raw array of struct sock_filter (8 bytes per instruction).
	Prog []byte `json:"prog"`
}

// Sigaction is a non-default signal disposition (struct kernel_sigaction).
type Sigaction struct {
	Signal   int    `json:"signal"`
	Handler  uint64 `json:"handler"`
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

// Itimer is one interval timer (ITIMER_REAL, _VIRTUAL, _PROF), in microseconds.
type Itimer struct {
	Which    int   `json:"which"`
	Interval int64 `json:"interval_us"`
	Value    int64 `json:"value_us"`
}

// Mm is the address space of a task.
type Mm struct {
	StartCode  uint64   `json:"start_code"`
	EndCode    uint64   `json:"end_code"`
	StartData  uint64   `json:"start_data"`
	EndData    uint64   `json:"end_data"`
	StartBrk   uint64   `json:"start_brk"`
	Brk        uint64   `json:"brk"`
	StartStack uint64   `json:"start_stack"`
	ArgStart   uint64   `json:"arg_start"`
	ArgEnd     uint64   `json:"arg_end"`
	EnvStart   uint64   `json:"env_start"`
	EnvEnd     uint64   `json:"env_end"`
	Auxv       []uint64 `json:"auxv,omitempty"`
	// Exe is the path of the executable, relative to the task root.
	Exe       string `json:"exe,omitempty"`
	Vmas      []Vma  `json:"vmas"`
	PagesFile string `json:"pages_file,omitempty"`
	// PagesSize is the size of the pages file (of all its parts).
	PagesSize uint64 `json:"pages_size,omitempty"`
	// PagesParts, when set, split the page data: PagesFile holds its first
	// PagesPartSize bytes, PagesParts[0] the next PagesPartSize bytes, and
	// so on (the last part may be shorter). Page run offsets are offsets in
	// the concatenation. Bounded files hash in parallel when the image is
	// packed and verified.
	PagesParts    []string `json:"pages_parts,omitempty"`
	PagesPartSize uint64   `json:"pages_part_size,omitempty"`
	// ParentPages are the page data of earlier generations that the runs
	// of an incremental image refer to (PageRun.File, incremental.go).
	ParentPages []ParentPages `json:"parent_pages,omitempty"`
}

// VMA kinds.
const (
	VmaAnon       = "anon"        // private anonymous memory (heap, stack, mmap)
	VmaFile       = "file"        // a file mapping, private or shared
	VmaShmem      = "shmem"       // shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS)
	VmaSysvShm    = "sysvshm"     // an attached System V shared memory segment (ShmemID is the shmid)
	VmaVdso       = "vdso"        // [vdso]
	VmaVvar       = "vvar"        // [vvar]
	VmaVvarVclock = "vvar_vclock" // [vvar_vclock]
	VmaVsyscall   = "vsyscall"    // [vsyscall], fixed, never restored
)

// Protection bits.
const (
	ProtRead  = 1
	ProtWrite = 2
	ProtExec  = 4
)

// Madvise settings of a mapping, by their smaps VmFlags names.
const (
	MadvDontfork   = "dc" // MADV_DONTFORK
	MadvWipeonfork = "wf" // MADV_WIPEONFORK
	MadvDontdump   = "dd" // MADV_DONTDUMP
	MadvHugepage   = "hg" // MADV_HUGEPAGE
	MadvNohugepage = "nh" // MADV_NOHUGEPAGE
	MadvMergeable  = "mg" // MADV_MERGEABLE
)

// Vma is one mapping of an address space.
type Vma struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
	Prot  int    `json:"prot"`
	// Shared is MAP_SHARED (else MAP_PRIVATE).
	Shared bool `json:"shared,omitempty"`
	// GrowsDown is VM_GROWSDOWN (a stack).
	GrowsDown bool `json:"grows_down,omitempty"`
	// Advice are the madvise() settings to apply (MadvDontfork...).
	Advice []string `json:"advice,omitempty"`
	Kind   string   `json:"kind"`
	// Name is the bracketed name in maps ([heap], [stack], [anon:...]).
	Name string `json:"name,omitempty"`
	// Path and Offset describe the mapped file of a file mapping.
	Path   string `json:"path,omitempty"`
	Offset uint64 `json:"offset,omitempty"`
	// FileWrite says the file must be opened for writing (a shared writable mapping).
	FileWrite bool `json:"file_write,omitempty"`
	// ShmemID is the Inventory.Shmems object of a VmaShmem mapping, or the
	// shmid of a VmaSysvShm (in SysVIPCFile) (Offset is
	// the offset in it).
	ShmemID uint64    `json:"shmem_id,omitempty"`
	Pages   []PageRun `json:"pages,omitempty"`
}

// PageRun is a run of dumped pages: Len bytes at Addr are at Off in the pages file.
type PageRun struct {
	Addr uint64 `json:"addr"`
	Len  uint64 `json:"len"`
	Off  uint64 `json:"off"`
	// File is 0 for the task's own pages file, i > 0 for Mm.ParentPages[i-1]
	// (an incremental image; never set in Inventory.Shmems runs).
	File int `json:"file,omitempty"`
}

// Fd kinds.
const (
	FdFile     = "file"     // a regular file or directory, reopened by path
	FdDevice   = "device"   // a character device reopened by path (/dev/null...)
	FdPipe     = "pipe"     // one end of a pipe or FIFO of Inventory.Pipes
	FdExternal = "external" // the stdio the tree was started with, reconnected at restore
	FdEventfd  = "eventfd"  // an eventfd with its counter
	FdEpoll    = "epoll"    // an epoll instance with its registered targets
	FdSignalfd = "signalfd" // a signalfd with its mask
	FdTimerfd  = "timerfd"  // a timerfd with its clock, remaining time and ticks
	FdMemfd    = "memfd"    // a memfd, the Inventory.Shmems object Shmem
	FdFifo     = "fifo"     // a FIFO reopened by Path; its bytes are in Inventory.Pipes
	FdInotify  = "inotify"  // an inotify instance with its watches (queued events are lost)
	FdUnix     = "unix"     // one end of a connected pair of unix sockets, both in the tree
)

// UnixSocket is one end of a connected pair of unbound unix sockets
// (socketpair), whose peer is in the tree too.
type UnixSocket struct {
	ID   uint64 `json:"id"` // its inode at dump time
	Peer uint64 `json:"peer"`
	Type int    `json:"type"` // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	// Queue are the bytes waiting to be received on this end.
	Queue []byte `json:"queue,omitempty"`
	// Shutdown holds the shutdown bits (1: receive, 2: send).
	Shutdown int `json:"shutdown,omitempty"`
}

// InotifyWatch is one watch of an inotify instance.
type InotifyWatch struct {
	Wd   int    `json:"wd"`
	Mask uint32 `json:"mask"`
	// Path is the watched file, relative to the task root.
	Path string `json:"path"`
}

// EpollTarget is one fd registered in an epoll instance (the fd number in
// the task that holds the epoll fd).
type EpollTarget struct {
	Fd     int    `json:"fd"`
	Events uint32 `json:"events"`
	Data   uint64 `json:"data"`
}

// Timerfd is the state of a timerfd.
type Timerfd struct {
	Clock int `json:"clock"`
	// Ticks are the expirations not read yet.
	Ticks uint64 `json:"ticks,omitempty"`
	// ValueNs is the time left before the next expiration, IntervalNs the period.
	ValueNs    int64 `json:"value_ns,omitempty"`
	IntervalNs int64 `json:"interval_ns,omitempty"`
}

// Fd is one open file descriptor.
type Fd struct {
	Fd      int    `json:"fd"`
	CloExec bool   `json:"cloexec,omitempty"`
	Kind    string `json:"kind"`
	// Path is the path (relative to the task root) for files and devices.
	Path  string `json:"path,omitempty"`
	Flags int    `json:"flags"` // open flags (status flags and access mode)
	Pos   int64  `json:"pos,omitempty"`
	// File identifies the open file description: fds of the tree with the same
	// File share one description (and its offset).
	File uint64 `json:"file"`
	// Pipe is the Inventory.Pipes ID of a pipe end.
	Pipe uint64 `json:"pipe,omitempty"`
	// Socket is the socket of a FdSocket (its ID in sockets.json) or of a
	// FdUnix (its Inventory.UnixSockets ID).
	Socket uint64 `json:"socket,omitempty"`
	// Shmem is the Inventory.Shmems ID of a memfd.
	Shmem uint64 `json:"shmem,omitempty"`
	// Stdio is the index (0, 1, 2) of the restore stdio an external fd is reconnected to.
	Stdio int `json:"stdio,omitempty"`
	// Tty marks the fd of the task's controlling terminal (Task.Ctty).
	Tty bool `json:"tty,omitempty"`
	// EventfdCount and EventfdSemaphore describe an eventfd.
	EventfdCount     uint64 `json:"eventfd_count,omitempty"`
	EventfdSemaphore bool   `json:"eventfd_semaphore,omitempty"`
	// Epoll lists the targets of an epoll instance.
	Epoll []EpollTarget `json:"epoll,omitempty"`
	// SignalfdMask is the signal mask of a signalfd.
	SignalfdMask uint64 `json:"signalfd_mask,omitempty"`
	// Timerfd is the state of a timerfd.
	Timerfd *Timerfd `json:"timerfd,omitempty"`
	// Inotify lists the watches of an inotify instance, by descriptor.
	Inotify []InotifyWatch `json:"inotify,omitempty"`
	// Ghost is the content of a FdDeleted file (fdkinds.go).
	Ghost *Ghost `json:"ghost,omitempty"`
	// Locks are the advisory locks taken through this fd (DumpOptions.FileLocks).
	Locks []FileLock `json:"locks,omitempty"`
}

// WriteFile writes a record as JSON into dir/name with mode 0600.
func WriteFile(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	return errors.Join(werr, f.Close())
}

func readAll(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return nil
}

// DecodeInventory reads and validates an Inventory.
func DecodeInventory(r io.Reader) (*Inventory, error) {
	var inv Inventory
	if err := readAll(r, &inv); err != nil {
		return nil, err
	}
	if err := inv.Header.check(); err != nil {
		return nil, err
	}
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

// DecodeTask reads and validates a Task.
func DecodeTask(r io.Reader) (*Task, error) {
	var t Task
	if err := readAll(r, &t); err != nil {
		return nil, err
	}
	if err := t.Header.check(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// ReadInventory decodes dir/inventory.json.
func ReadInventory(dir string) (*Inventory, error) {
	f, err := os.Open(filepath.Join(dir, InventoryFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	inv, err := DecodeInventory(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", InventoryFile, err)
	}
	return inv, nil
}

// ReadTask decodes the task record of pid in dir.
func ReadTask(dir string, pid int) (*Task, error) {
	f, err := os.Open(filepath.Join(dir, TaskFile(pid)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := DecodeTask(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TaskFile(pid), err)
	}
	if t.Pid != pid {
		return nil, fmt.Errorf("%s: %w: holds pid %d", TaskFile(pid), ErrFormat, t.Pid)
	}
	return t, nil
}

// Kinds of FileLock.
const (
	LockPosix = "posix" // fcntl F_SETLK: owned by the process (its fd table)
	LockOFD   = "ofd"   // fcntl F_OFD_SETLK: owned by the open file description
	LockFlock = "flock" // flock(2): owned by the open file description
)

// FileLock is one advisory lock held through an fd, as /proc/PID/fdinfo shows it.
type FileLock struct {
	Kind  string `json:"kind"`
	Write bool   `json:"write,omitempty"` // a write (exclusive) lock, else a read (shared) one
	Start int64  `json:"start"`
	// End is the last byte locked, or -1 for "to the end of the file" (EOF).
	End int64 `json:"end"`
}
