// Package engine is cryo's native checkpoint/restore engine: it saves a
// running process tree to a directory of records and page files, and rebuilds
// it later, from outside, without CRIU.
//
// # Dump
//
// The caller freezes the tree's cgroup (Freezer); the engine seizes every
// thread with PTRACE_SEIZE (no PTRACE_O_EXITKILL: a checkpointer that dies
// must leave its target running) and PTRACE_INTERRUPT, thaws, and waits for
// every PTRACE_EVENT_STOP. KERNEL.md measured why this order matters: on a
// v1-frozen task the stop only arrives after THAWED, on a v2-frozen one it
// arrives while frozen, and freezing first is what keeps the set of tasks
// stable while it is being seized.
//
// What /proc and ptrace tell from outside is read from outside: maps and
// smaps, pagemap through the PAGEMAP_SCAN ioctl (present pages only),
// status (NSpid, ids, credentials), stat (the mm_struct boundaries), auxv,
// fdinfo, GETREGSET (NT_PRSTATUS and NT_X86_XSTATE), the signal mask,
// PEEKSIGINFO, the rseq configuration, get_robust_list and prlimit. What
// only the task itself can say (signal handlers, brk, sigaltstack, interval
// timers, its clear-child-tid address) is asked by running system calls
// inside the stopped task: the engine points rip at a `syscall` instruction
// (a "gadget": any `0f 05` found in the task's [vdso]), loads rax and the
// argument registers, single-steps it, and reads rax back. The saved
// registers are put back before the task is detached, so an interrupted
// system call restarts exactly as it would after a signal (KERNEL.md item 5).
// Memory is copied with process_vm_readv in large batches (falling back to
// /proc/PID/mem, which reads through PROT_NONE) into raw pages-<pid>.img
// files; the records are JSON documents described by package image.
//
// A failed dump detaches every task with its registers and signal mask as
// they were and thaws the tree: the target keeps running untouched. Anything
// the engine cannot save yet (hugetlb memory, netlink sockets, ...) is refused
// at dump time with an error naming the task, the fd or mapping, and what it is.
//
// # Restore
//
// The runtime starts the stub (Stub: a static ELF of a few instructions that
// loops in pause()) as PID 1 of fresh namespaces. The engine seizes it,
// creates the rest of the tree from it with injected clone3 calls whose
// set_tid array asks for the exact PIDs of the dump (sessions and process
// groups are rebuilt with setsid/setpgid injected in tree order), and then
// rebuilds each stub from outside: map a private gadget page at an address
// that no saved mapping uses, unmap everything else, move [vdso]/[vvar]/
// [vvar_vclock] (by one delta, so the vdso keeps telling the time) to their
// saved addresses, map every saved VMA with MAP_FIXED (files opened inside the
// task, so paths resolve in its own mount namespace and root), queue the
// copy of its pages (fill_linux.go: process_vm_writev from a 2 MiB-aligned,
// PMD-mapped view of the pages files, big fills cut into pieces copied on
// several goroutines, /proc/PID/mem for read-only mappings; the copies run
// on a goroutine of their own while the ptrace thread goes on with the next
// tasks and everyone's files, and are waited for before the shmem seals and
// any state that makes the kernel write into the tasks' memory), set the
// mm_struct fields with PR_SET_MM_MAP, install the fds at their numbers,
// cwd, umask, rlimits, signal handlers, rseq, robust list, credentials last,
// and finally unmap the gadget, load the saved registers and xstate and
// detach. A failed restore kills every task it created.
//
// # What is saved
//
// Processes, threads (clone3 with the saved TID), zombies; PIDs, sessions,
// process groups, the controlling terminal and its foreground group; memory:
// private anonymous (only present pages, PAGEMAP_SCAN), private file
// mappings (their copied-on-write pages), MAP_SHARED files, shared anonymous
// memory and memfd (restored as memfd, with seals), madvise settings, brk,
// auxv, mm_struct boundaries, exe link; registers and xstate; signal
// handlers, masks, pending and queued signals (rt_sigqueueinfo from inside
// the task, with their siginfo), sigaltstack, itimers, POSIX timers (with
// their IDs), rseq, robust lists, clear-child-tid, personality, rlimits,
// umask, cwd, credentials, capabilities (bounding, ambient), securebits,
// no_new_privs, seccomp filters, child-subreaper, dumpable, parent-death
// signal; fds: regular files and directories (path, offset, flags), files
// deleted while open (their content), /dev/null and friends, pipes and FIFOs
// with their bytes, unix sockets (pairs, listeners on paths or abstract
// names, accepted and pending connections, queued bytes, shutdown state),
// TCP and MPTCP listeners, UDP sockets, established TCP connections with
// DumpOptions.TCPEstablished (TCP_REPAIR), eventfd, epoll (targets),
// signalfd, timerfd, inotify (watches; queued events are lost), memfd; open file
// descriptions shared between fds and processes stay shared, and so does an
// fd table shared with the parent (CLONE_FILES); the tree's
// external stdio is reconnected to RestoreOptions.Stdio; advisory file locks
// (POSIX, OFD, flock) with DumpOptions.FileLocks (locks_linux.go). Processes
// in a group stop come back stopped (stop_linux.go). The System V IPC
// objects of the tree's own IPC namespace (segments and their attachments,
// message queues with their messages, semaphore sets) come back with their
// ids (sysvipc_linux.go). The clocks are
// recorded so that a time namespace (RestoreTimeOffsets) hides the downtime.
//
// Refused at dump (ErrUnsupported, naming pid, fd or mapping): sockets of
// other families, established MPTCP connections, file locks without
// DumpOptions.FileLocks and leases, attachments of System V segments of the
// engine's IPC namespace (a tree without an IPC namespace of its own),
// hugetlb, locked, device and userfaultfd mappings, foreign-traced tasks, tasks in
// other namespaces or with another root than the root task, strict seccomp.
//
// # Incremental dumps
//
// A dump with DumpOptions.Parent writes only the pages that changed since
// the parent image and refers to the parent's pages files for the rest
// (image.PageRun.File, "parent/pages-<pid>.img", deeper for older
// generations). What changed is known without soft-dirty bits (absent from
// this kernel): every LeaveRunning dump arms a userfaultfd in WP_ASYNC mode
// in each task (created inside the task, registered and write-protected
// from the engine through pidfd_getfd, kept open in the task at a high fd
// since its registrations end with its last reference) and records it in
// tracking.json; the next dump reads PAGEMAP_SCAN's PAGE_IS_WRITTEN. Where
// the tracker cannot be trusted the pages are compared with the parent's
// bytes. dirty_linux.go documents what was measured and why the result is
// never a wrong image. The changed pages go through the same copy pipeline
// as a full dump's (pages_linux.go: digests, 64 MiB parts). A run into an
// earlier generation names that generation's page data as a whole
// (image.ParentPages: its first file, its parts, its part size, all under
// "parent/" as many times as it is generations back) and its offset is an
// offset in the concatenation of those files; a restore maps each
// generation's parts contiguously, as it maps the image's own.
//
// A PreCopy dump (precopy_linux.go) uses the same machinery inside one
// image: the tracker is registered in a brief stop, the memory protected
// and copied while the tree runs (into PreCopyPagesFile files, generation
// 0: plain names), and the dump that stops the tree refers to the copy
// for every page the tracker reports unwritten.
//
// # Processes the engine must not be mixed with
//
// The engine waits for its tracees with wait4(tid, __WALL). A thread of the
// same process that reaps with wait4(-1) while a dump or restore runs (a
// subreaper's reaper loop) steals those notifications: run the engine in a
// process without one (as runc's shims run runc), or pause it meanwhile.
//
// All ptrace requests come from one locked OS thread (runtime.LockOSThread),
// because the kernel only accepts requests from the thread that attached.
//
// The approach follows what CRIU (and gVisor's own save/restore for its
// sandboxed tasks) taught: parasite-free here, since every question the
// engine needs answered inside the task is a single system call.
package engine
