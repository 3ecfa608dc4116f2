package engine

import (
	"os"
	"time"
)

// Freezer freezes/thaws the tasks being dumped (the container's cgroup).
type Freezer interface {
	Freeze() error
	Thaw() error
}

// DumpOptions configure Dump.
type DumpOptions struct {
	// Pid is the host PID of the root task of the tree (the container's init).
	Pid int
	// Freezer freezes the tree while it is seized; nil seizes without freezing.
	Freezer Freezer
	// ImageDir receives the image (created 0700 if missing; must not hold an image).
	ImageDir string
	// LeaveRunning keeps the tree running after a successful dump; by default
	// it is killed (runc's default).
	LeaveRunning bool
	// TCPEstablished, ExtUnixSockets, ShellJob and FileLocks are runc's
	// checkpoint options. TCPEstablished allows established TCP connections
	// (saved with TCP_REPAIR; refused without it). ExtUnixSockets allows unix
	// sockets connected to a named socket outside the tree (reconnected by
	// name at restore; refused without it). FileLocks allows advisory
	// file locks (POSIX, OFD and flock), taken again by their owners at
	// restore; without it a lock is refused, naming the pid, fd, file and
	// lock. ShellJob is accepted for compatibility.
	TCPEstablished, ExtUnixSockets, ShellJob, FileLocks bool
	// Parent, if set, is the directory of a previous image of the same tree
	// (the engine files of the parent checkpoint, laid out as Dump wrote
	// them, with its own parents' files under parent/ and so on): the dump
	// is incremental. Pages unchanged since the parent are not written: the
	// records refer to them in "parent/pages-<pid>.img" (or deeper), so the
	// image is only complete with the parent's files laid out under parent/
	// in its directory, which is how the packer extracts a chain.
	// Unchanged pages are known from the dirty-page tracker that a
	// LeaveRunning dump arms in each task (userfaultfd WP_ASYNC, read back
	// with PAGEMAP_SCAN; see dirty_linux.go); without a valid tracker
	// (another boot, a restarted or restored task, a tracker re-armed by a
	// later dump) the task's pages are read and compared with the parent's
	// bytes. New tasks and pages are written in full. A parent that cannot
	// be read or whose records do not match its files fails the dump (the
	// tree keeps running).
	//
	// Every dump with LeaveRunning arms a fresh tracker in each task after
	// its pages are read and records it in tracking.json, so that the image
	// can be the parent of the next one.
	Parent string
	// ParentFiles, if set, holds pages files of Parent open, by their name
	// relative to Parent ("pages-1.img", "parent/pages-1.img"...): they are
	// read from there instead of being opened in Parent (the runtime hands
	// over the very blobs it verified, without linking them).
	ParentFiles map[string]*os.File
	// Commit, if set, runs once the image is complete, while every task is
	// still stopped under ptrace, and before the tree is killed or resumed.
	// An error from it fails the dump and the tree is left running, so a
	// caller can make the image durable (pack it) before the tree dies.
	Commit func(*DumpResult) error
	// PreCopy copies most of the tree's memory while it still runs, then
	// stops it for the rest of the dump, which copies only the pages
	// written meanwhile (precopy_linux.go): the tree is stopped twice,
	// briefly, instead of once for the whole copy. The pre-copied pages
	// are files of the image like the others. It cannot be combined with
	// Parent. Where a pre-copy is not possible (a process using
	// userfaultfd itself, a mapping gone while it was copied), the dump
	// goes on without it.
	PreCopy bool
	// HashPages computes the sha256 of each pages file while it is written
	// (DumpResult.PageDigests), overlapped with the copy, so that packing
	// need not read the files again. It costs CPU while the tree is stopped:
	// leave it off when the stall matters more than the total time.
	HashPages bool
	// Stdio names the files the tree was started with as its stdio (what
	// the init's fds 0-2 were when it was created; a zero FileID: unknown).
	// An fd whose file is Stdio[i] is external stdio i, reconnected at
	// restore to RestoreOptions.Stdio[i]. When all three are zero, the root
	// task's fds 0-2 at dump time are taken instead, which is wrong when
	// the init has redirected them for a moment (a shell running
	// `printf ... >&3` has the description of fd 3 as its fd 1).
	Stdio [3]FileID
}

// FileID names a file by device and inode (stat's st_dev and st_ino).
type FileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// ProcessInfo summarises one dumped process.
type ProcessInfo struct {
	Pid      int      `json:"pid"` // in the tree's PID namespace
	PPid     int      `json:"ppid"`
	Comm     string   `json:"comm"`
	Args     []string `json:"args,omitempty"`
	Uid      uint32   `json:"uid"`
	Gid      uint32   `json:"gid"`
	Cwd      string   `json:"cwd"`
	Threads  int      `json:"threads"`
	MemBytes uint64   `json:"mem_bytes"` // bytes of page data dumped
	Files    []string `json:"files,omitempty"`
	Zombie   bool     `json:"zombie,omitempty"`
}

// DumpResult summarises a dump for the image config and `cryo inspect`.
type DumpResult struct {
	Processes []ProcessInfo `json:"processes"`
	// PageBytes is the total size of the pages-*.img files.
	PageBytes uint64 `json:"page_bytes"`
	// PageFiles are the names of the page files written in ImageDir.
	PageFiles []string `json:"page_files"`
	// PageDigests are "sha256:<hex>" digests of page files, by name, when
	// DumpOptions.HashPages asked for them.
	PageDigests map[string]string `json:"page_digests,omitempty"`
	// RecordFiles are the names of every other file written in ImageDir.
	RecordFiles []string `json:"record_files"`
	// Kernel is the release of the kernel the dump ran on.
	Kernel string `json:"kernel"`
	// ParentBytes are the bytes of pages an incremental dump (Parent) took
	// from its parent's files instead of writing them; ComparedBytes are the
	// bytes it read to compare with the parent's where no dirty-page tracker
	// could tell what changed.
	ParentBytes   uint64 `json:"parent_bytes,omitempty"`
	ComparedBytes uint64 `json:"compared_bytes,omitempty"`
	// StoppedAt, Monotonic and Boottime are the wall clock and the tree's
	// CLOCK_MONOTONIC and CLOCK_BOOTTIME (its time namespace's offsets
	// included), in nanoseconds, when the tree was stopped for the dump:
	// the moment the image holds.
	StoppedAt time.Time `json:"stopped_at"`
	Monotonic int64     `json:"monotonic"`
	Boottime  int64     `json:"boottime"`
	// Stopped is how long the tree was kept stopped (frozen or in ptrace
	// stops), in all: the stall a LeaveRunning dump causes, the downtime of
	// one that kills the tree.
	Stopped time.Duration `json:"stopped"`
	// PreCopiedBytes are the bytes of pages copied while the tree ran
	// (PreCopy), part of PageBytes.
	PreCopiedBytes uint64 `json:"pre_copied_bytes,omitempty"`
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// ImageDir holds the files laid out as Dump wrote them.
	ImageDir string
	// Pid is the host PID of the stub: PID 1 of fresh namespaces, running Stub().
	Pid int
	// Stdio is what the restored tree's external stdio (the fds the tree
	// inherited from outside, FdExternal in the records) is reconnected to.
	// A nil entry keeps the stub's own fd of that number (the runtime starts
	// the stub with the container's stdio, or /dev/null).
	Stdio [3]*os.File
	// PagesFiles, if set, holds pages files open, by their name relative to
	// ImageDir as the records name them ("pages-1.img", "parent/pages-1.img"):
	// such a file is mapped from the open file and not looked up in
	// ImageDir (the packer hands over the verified blobs this way, without
	// linking them into ImageDir). Restore does not close them.
	PagesFiles map[string]*os.File
}

// RestoreResult describes the restored tree.
type RestoreResult struct {
	// Pids maps the PID of each restored process in its namespace to its host PID.
	Pids map[int]int
}
