package engine

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
)

const kcmpFile = 0 // KCMP_FILE

func kcmp(pid1, pid2, typ, idx1, idx2 int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), uintptr(idx1), uintptr(idx2), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// openRef is one fd of the tree, as a way to reach its open file description.
type openRef struct {
	pid, fd int
	id      uint64
}

// fileTable identifies open file descriptions across the tree: two fds share
// a description (and so an offset) when kcmp(KCMP_FILE) says so.
type fileTable struct {
	byInode map[[2]uint64][]openRef
	nextID  uint64
	// stdio are the root task's fds 0-2 (for external descriptions), or
	// stdioIDs the files of the tree's original stdio, when known.
	stdio     [3]*openRef
	stdioIDs  [3]FileID
	rootPid   int
	pipeRefs  map[uint64]openRef
	pipeOrder []uint64
	socks     *sockTable // fd_socket_linux.go
	ghosts    []ghostRef // fd_event_linux.go
	fifoPaths map[uint64]string
	shmems    *shmemTable
	unix      *unixTable
	// fileLocks allows advisory locks (DumpOptions.FileLocks).
	fileLocks bool
	// skip says which fds are the engine's own (dirty-page trackers).
	skip func(pid, fd int) bool
}

func newFileTable() *fileTable {
	return &fileTable{byInode: map[[2]uint64][]openRef{}, pipeRefs: map[uint64]openRef{}, fifoPaths: map[uint64]string{}, unix: newUnixTable()}
}

func (ft *fileTable) close() { ft.closeSockets() }

// identify returns the description id of (pid, fd) with the given inode.
func (ft *fileTable) identify(pid, fd int, st *unix.Stat_t) (uint64, error) {
	key := [2]uint64{st.Dev, st.Ino}
	for _, r := range ft.byInode[key] {
		same, err := kcmp(pid, r.pid, kcmpFile, fd, r.fd)
		if err != nil {
			return 0, fmt.Errorf("kcmp: %w", err)
		}
		if same == 0 {
			return r.id, nil
		}
	}
	ft.nextID++
	ft.byInode[key] = append(ft.byInode[key], openRef{pid, fd, ft.nextID})
	return ft.nextID, nil
}

// external says which of the tree's external stdio fd (pid, fd), whose file
// is st, is: the stdio file it is (stdioIDs), or else the root's stdio fd it
// shares a description with.
func (ft *fileTable) external(pid, fd int, st *unix.Stat_t) int {
	if ft.stdioIDs != [3]FileID{} {
		for i, id := range ft.stdioIDs {
			if id != (FileID{}) && id == (FileID{Dev: st.Dev, Ino: st.Ino}) {
				return i
			}
		}
		return -1
	}
	for i, r := range ft.stdio {
		if r == nil {
			continue
		}
		if pid == r.pid && fd == r.fd {
			return i
		}
		if same, err := kcmp(pid, r.pid, kcmpFile, fd, r.fd); err == nil && same == 0 {
			return i
		}
	}
	return -1
}

// reachable reports whether path, resolved in the root and mount namespace
// of pid, is the file st describes.
func reachable(pid int, path string, st *unix.Stat_t) bool {
	var in unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root%s", pid, path), &in); err != nil {
		return false
	}
	return in.Dev == st.Dev && in.Ino == st.Ino
}

// devicesByPath are character devices that are reopened by path.
var devicesByPath = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true,
}

func listFds(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("list fds: %w", err)
	}
	var fds []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	return fds, nil
}

func (ft *fileTable) dumpFds(t *dtask) ([]image.Fd, error) {
	fds, err := listFds(t.pid)
	if err != nil {
		return nil, err
	}
	if ft.rootPid == 0 {
		ft.rootPid = t.pid
		for _, fd := range fds {
			if fd <= 2 {
				ft.stdio[fd] = &openRef{pid: t.pid, fd: fd}
			}
		}
	}
	var out []image.Fd
	for _, fd := range fds {
		if ft.skip != nil && ft.skip(t.pid, fd) {
			continue
		}
		f, err := ft.dumpFd(t, fd)
		if err != nil {
			return nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		out = append(out, *f)
	}
	return out, nil
}

func (ft *fileTable) dumpFd(t *dtask, fd int) (*image.Fd, error) {
	link := fmt.Sprintf("/proc/%d/fd/%d", t.pid, fd)
	target, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	fi, err := procfs.ReadFdinfo(t.pid, fd)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil {
		return nil, fmt.Errorf("%s: stat: %w", target, err)
	}
	out := &image.Fd{Fd: fd, CloExec: fi.Flags&unix.O_CLOEXEC != 0, Flags: fi.Flags &^ unix.O_CLOEXEC, Pos: fi.Pos}
	if lines, ok := fi.Extra["lock"]; ok {
		if out.Locks, err = dumpLocks(lines, ft.fileLocks); err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
	}
	if out.File, err = ft.identify(t.pid, fd, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	mode := st.Mode & unix.S_IFMT
	isExternal := func() bool {
		if i := ft.external(t.pid, fd, &st); i >= 0 {
			out.Kind, out.Stdio, out.Pos = image.FdExternal, i, 0
			return true
		}
		return false
	}
	switch {
	case strings.HasPrefix(target, "pipe:["):
		if isExternal() {
			return out, nil
		}
		out.Kind, out.Pipe, out.Pos = image.FdPipe, st.Ino, 0
		if _, ok := ft.pipeRefs[st.Ino]; !ok {
			ft.pipeRefs[st.Ino] = openRef{pid: t.pid, fd: fd}
			ft.pipeOrder = append(ft.pipeOrder, st.Ino)
		}
		return out, nil
	case strings.HasPrefix(target, "socket:["):
		if isExternal() {
			return out, nil
		}
		return ft.dumpSocket(t, fd, out, &st)
	case target == "anon_inode:inotify":
		if err := dumpInotify(t, out, fi); err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		return out, nil
	case strings.HasPrefix(target, "anon_inode:"):
		if err := dumpAnon(out, target, fi); err != nil {
			return nil, err
		}
		if out.Kind != "" {
			return out, nil
		}
		return nil, fmt.Errorf("%s: %s files are %w yet", target, strings.TrimPrefix(target, "anon_inode:"), ErrUnsupported)
	case !strings.HasPrefix(target, "/"):
		return nil, fmt.Errorf("%s: this kind of file is %w yet", target, ErrUnsupported)
	case strings.HasPrefix(target, "/memfd:") && strings.HasSuffix(target, " (deleted)"):
		name := strings.TrimSuffix(strings.TrimPrefix(target, "/memfd:"), " (deleted)")
		if err := ft.shmems.add(st.Ino, link, true, name); err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		out.Kind, out.Shmem = image.FdMemfd, st.Ino
		return out, nil
	case strings.HasSuffix(target, " (deleted)"):
		return ft.dumpDeleted(t, fd, out, target, &st) // fd_event_linux.go
	}
	path, err := inRoot(t.root, target)
	if (mode == unix.S_IFREG || mode == unix.S_IFDIR) && (err != nil || !reachable(t.pid, path, &st)) {
		// A file the container cannot name (the caller's log file given
		// as the init's stdout): only the tree's stdio may be one.
		if isExternal() {
			return out, nil
		}
		return nil, fmt.Errorf("%s: the file is outside the container's root (not reachable as %q from pid %d): %w", target, path, t.pid, ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	out.Path = path
	switch mode {
	case unix.S_IFREG, unix.S_IFDIR:
		out.Kind = image.FdFile
		return out, nil
	case unix.S_IFCHR:
		if devicesByPath[path] {
			out.Kind, out.Pos = image.FdDevice, 0
			return out, nil
		}
		if isExternal() {
			if t.stat.TtyNr != 0 {
				maj, min := procfs.TtyDev(t.stat.TtyNr)
				out.Tty = unix.Major(st.Rdev) == maj && unix.Minor(st.Rdev) == min
			}
			return out, nil
		}
		return nil, fmt.Errorf("%s: character device %d:%d is %w yet", target, unix.Major(st.Rdev), unix.Minor(st.Rdev), ErrUnsupported)
	case unix.S_IFIFO:
		if isExternal() {
			return out, nil
		}
		// A FIFO: reopened by path at restore; its bytes are dumped like a pipe's.
		out.Kind, out.Pipe, out.Pos = image.FdFifo, st.Ino, 0
		if _, ok := ft.pipeRefs[st.Ino]; !ok {
			ft.pipeRefs[st.Ino] = openRef{pid: t.pid, fd: fd}
			ft.pipeOrder = append(ft.pipeOrder, st.Ino)
			ft.fifoPaths[st.Ino] = path
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: file type %#o is %w yet", target, mode, ErrUnsupported)
}

// dumpPipes records every pipe of the tree with the bytes buffered in it.
// The bytes are copied with tee(2) from a read end opened through
// /proc/PID/fd, so they stay in the pipe (a dump may leave the tree running).
func (ft *fileTable) dumpPipes(inv *image.Inventory) error {
	for _, ino := range ft.pipeOrder {
		ref := ft.pipeRefs[ino]
		p, err := peekPipe(ref.pid, ref.fd)
		if err != nil {
			return fmt.Errorf("pipe:[%d] (pid %d fd %d): %w", ino, ref.pid, ref.fd, err)
		}
		p.ID, p.Fifo = ino, ft.fifoPaths[ino]
		inv.Pipes = append(inv.Pipes, *p)
	}
	return nil
}

func peekPipe(pid, fd int) (*image.Pipe, error) {
	rfd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open read end: %w", err)
	}
	defer unix.Close(rfd)
	size, err := unix.FcntlInt(uintptr(rfd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GETPIPE_SZ: %w", err)
	}
	p := &image.Pipe{Size: size}
	var tmp [2]int
	if err := unix.Pipe2(tmp[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(tmp[0])
	defer unix.Close(tmp[1])
	if _, err := unix.FcntlInt(uintptr(tmp[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
	}
	n, err := unix.Tee(rfd, tmp[1], size, unix.SPLICE_F_NONBLOCK)
	if errors.Is(err, unix.EAGAIN) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tee: %w", err)
	}
	p.Data = make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(tmp[0], p.Data[got:])
		if err != nil {
			return nil, err
		}
		got += k
	}
	return p, nil
}

// socketKind describes a socket of a task for error messages, as " (unix stream)".
func socketKind(pid, fd int) string {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(pidfd)
	sfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(sfd)
	dom, err1 := unix.GetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, err2 := unix.GetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err1 != nil || err2 != nil {
		return ""
	}
	domains := map[int]string{unix.AF_UNIX: "unix", unix.AF_INET: "tcp/ip v4", unix.AF_INET6: "tcp/ip v6", unix.AF_NETLINK: "netlink", unix.AF_PACKET: "packet"}
	types := map[int]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "datagram", unix.SOCK_SEQPACKET: "seqpacket", unix.SOCK_RAW: "raw"}
	d, ok := domains[dom]
	if !ok {
		d = fmt.Sprintf("family %d", dom)
	}
	ty, ok := types[typ]
	if !ok {
		ty = fmt.Sprintf("type %d", typ)
	}
	return " (" + d + " " + ty + ")"
}

// dumpAnon fills out for the anonymous-inode files the engine knows; it
// leaves out.Kind empty for the others.
func dumpAnon(out *image.Fd, target string, fi *procfs.Fdinfo) error {
	out.Pos = 0
	hex := func(key string) (uint64, error) {
		v, err := strconv.ParseUint(strings.TrimSpace(fi.Extra[key]), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: fdinfo %s %q: %w", target, key, fi.Extra[key], err)
		}
		return v, nil
	}
	var err error
	switch target {
	case "anon_inode:[eventfd]":
		out.Kind = image.FdEventfd
		if out.EventfdCount, err = hex("eventfd-count"); err != nil {
			return err
		}
		out.EventfdSemaphore = strings.TrimSpace(fi.Extra["eventfd-semaphore"]) == "1"
	case "anon_inode:[eventpoll]":
		out.Kind = image.FdEpoll
		tg, err := procfs.EpollTargets(fi.Extra["tfd"])
		if err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
		for _, x := range tg {
			out.Epoll = append(out.Epoll, image.EpollTarget{Fd: x.Fd, Events: x.Events, Data: x.Data})
		}
	case "anon_inode:[signalfd]":
		out.Kind = image.FdSignalfd
		if out.SignalfdMask, err = hex("sigmask"); err != nil {
			return err
		}
	case "anon_inode:[timerfd]":
		tf, err := procfs.ParseTimerfd(fi)
		if err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
		out.Kind = image.FdTimerfd
		out.Timerfd = &image.Timerfd{Clock: tf.Clock, Ticks: tf.Ticks,
			ValueNs: tf.ValueSec*1e9 + tf.ValueNsec, IntervalNs: tf.IntervalSec*1e9 + tf.IntervNsec}
	}
	return nil
}
