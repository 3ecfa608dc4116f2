package engine

// Event and object fds beyond the core's eventfd/signalfd/timerfd/epoll:
// inotify instances (their watches are found again by path: fdinfo gives
// each watched inode as a file handle, which open_by_handle_at turns into a
// path), files deleted while open (their content is saved and they come back
// as an O_TMPFILE in the directory they were in), and the check that every
// epoll target still is the file its fd number names (kcmp KCMP_EPOLL_TFD).

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/procfs"
)

// dumpFdObjects runs once every task's fds are known, with the tree still
// stopped: epoll targets, contents of deleted files, sockets.
func (d *dumper) dumpFdObjects() error {
	if err := d.checkEpolls(); err != nil {
		return err
	}
	if err := d.writeGhosts(); err != nil {
		return err
	}
	return d.dumpSockets()
}

// inotifyWatch is one "inotify" line of an fdinfo.
type inotifyWatch struct {
	wd         int
	ino, sdev  uint64
	mask       uint32
	handleType int32
	handle     []byte
}

func parseInotify(extra string) ([]inotifyWatch, error) {
	var out []inotifyWatch
	for _, line := range strings.Split(extra, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, ":"); ok {
				kv[k] = v
			}
		}
		var w inotifyWatch
		wd, err1 := strconv.Atoi(kv["wd"])
		ino, err2 := strconv.ParseUint(kv["ino"], 16, 64)
		sdev, err3 := strconv.ParseUint(kv["sdev"], 16, 64)
		mask, err4 := strconv.ParseUint(kv["mask"], 16, 32)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("inotify fdinfo %q: %w", line, err)
		}
		w.wd, w.ino, w.sdev, w.mask = wd, ino, sdev, uint32(mask)
		if h, ok := kv["f_handle"]; ok {
			typ, err := strconv.ParseInt(kv["fhandle-type"], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("inotify fdinfo %q: %w", line, err)
			}
			if w.handle, err = hex.DecodeString(h); err != nil {
				return nil, fmt.Errorf("inotify fdinfo %q: %w", line, err)
			}
			w.handleType = int32(typ)
		}
		out = append(out, w)
	}
	return out, nil
}

func (ft *fileTable) dumpInotify(t *dtask, out *image.Fd, fi *procfs.Fdinfo) (*image.Fd, error) {
	// procfs cut "inotify wd:1 ino:..." at its first colon.
	var lines []string
	for _, v := range strings.Split(fi.Extra["inotify wd"], "\n") {
		if v != "" {
			lines = append(lines, "wd:"+v)
		}
	}
	watches, err := parseInotify(strings.Join(lines, "\n"))
	if err != nil {
		return nil, err
	}
	out.Kind, out.Pos = image.FdInotify, 0
	for _, w := range watches {
		p, err := watchPath(t, w)
		if err != nil {
			return nil, fmt.Errorf("anon_inode:inotify: watch %d (inode %d on device %d:%d): %w", w.wd, w.ino, w.sdev>>20, w.sdev&0xfffff, err)
		}
		out.Inotify = append(out.Inotify, image.InotifyWatch{Wd: w.wd, Mask: w.mask, Path: p})
	}
	// Watches are added back in wd order, which is the order they were given.
	for i := 1; i < len(out.Inotify); i++ {
		for j := i; j > 0 && out.Inotify[j].Wd < out.Inotify[j-1].Wd; j-- {
			out.Inotify[j], out.Inotify[j-1] = out.Inotify[j-1], out.Inotify[j]
		}
	}
	return out, nil
}

// watchPath finds the path (in the task's root) of a watched inode: its file
// handle opened on a mount of its filesystem seen by the task.
func watchPath(t *dtask, w inotifyWatch) (string, error) {
	if w.handle == nil {
		return "", fmt.Errorf("%w: the kernel gave no file handle for the watched inode", ErrUnsupported)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", t.pid))
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("%d:%d", w.sdev>>20, w.sdev&0xfffff)
	var lastErr error = fmt.Errorf("%w: no mount of device %s in the task's mount namespace", ErrUnsupported, want)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[2] != want {
			continue
		}
		mnt, err := unix.Open(fmt.Sprintf("/proc/%d/root%s", t.pid, f[4]), unix.O_RDONLY|unix.O_CLOEXEC, 0) // open_by_handle_at refuses O_PATH
		if err != nil {
			lastErr = err
			continue
		}
		fd, err := unix.OpenByHandleAt(mnt, unix.NewFileHandle(w.handleType, w.handle), unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mnt)
		if err != nil {
			lastErr = fmt.Errorf("open_by_handle_at: %w", err)
			continue
		}
		var st unix.Stat_t
		serr := unix.Fstat(fd, &st)
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		unix.Close(fd)
		if serr != nil || err != nil {
			lastErr = errors.Join(serr, err)
			continue
		}
		if st.Ino != w.ino {
			lastErr = fmt.Errorf("file handle resolved to inode %d", st.Ino)
			continue
		}
		if strings.HasSuffix(p, " (deleted)") {
			return "", fmt.Errorf("%w: the watched inode was deleted", ErrUnsupported)
		}
		rel, err := inRoot(t.root, p)
		if err != nil {
			lastErr = fmt.Errorf("%w: watched inode found at %s, not reachable from the task root", ErrUnsupported, p)
			continue
		}
		return rel, nil
	}
	return "", lastErr
}

// ghostRef is a file deleted while open, found at pid/fd.
type ghostRef struct {
	pid, fd int
	g       *image.Ghost
}

func (ft *fileTable) dumpDeleted(t *dtask, fd int, out *image.Fd, target string, st *unix.Stat_t) (*image.Fd, error) {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: deleted files of type %#o are %w", target, st.Mode&unix.S_IFMT, ErrUnsupported)
	}
	p, err := inRoot(t.root, strings.TrimSuffix(target, " (deleted)"))
	if err != nil {
		return nil, err
	}
	out.Kind, out.Path = image.FdDeleted, filepath.Clean(p)
	for _, r := range ft.ghosts {
		if r.g.ID == st.Ino {
			out.Ghost = r.g
			return out, nil
		}
	}
	g := &image.Ghost{ID: st.Ino, Data: image.GhostFile(st.Ino), Size: st.Size, Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid}
	ft.ghosts = append(ft.ghosts, ghostRef{pid: t.pid, fd: fd, g: g})
	out.Ghost = g
	return out, nil
}

// writeGhosts saves the content of every deleted file into the image.
func (d *dumper) writeGhosts() error {
	for _, r := range d.files.ghosts {
		src, err := os.Open(fmt.Sprintf("/proc/%d/fd/%d", r.pid, r.fd))
		if err != nil {
			return fmt.Errorf("deleted file %d: %w", r.g.ID, err)
		}
		dst, err := os.OpenFile(filepath.Join(d.opts.ImageDir, r.g.Data), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			src.Close()
			return err
		}
		n, err := io.Copy(dst, io.NewSectionReader(src, 0, r.g.Size))
		src.Close()
		if err := errors.Join(err, dst.Close()); err != nil {
			return fmt.Errorf("save deleted file %d: %w", r.g.ID, err)
		}
		r.g.Size = n
		d.result.RecordFiles = append(d.result.RecordFiles, r.g.Data)
	}
	return nil
}

const kcmpEpollTfd = 7 // KCMP_EPOLL_TFD

// kcmpEpoll compares fd of pid with the target tfd registered in epoll epfd of pid.
func kcmpEpoll(pid, fd, epfd, tfd int) bool {
	slot := [3]uint32{uint32(epfd), uint32(tfd), 0}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot[0])), 0)
	return e == 0 && r == 0
}

// checkEpolls makes sure that the fd number fdinfo gives for each epoll
// target (the number it was registered with) still names that file, and
// otherwise finds the fd that does (the app may have dup2'd it elsewhere).
func (d *dumper) checkEpolls() error {
	for _, t := range d.tasks {
		if t.zombie || t.rec == nil {
			continue
		}
		for i := range t.rec.Fds {
			ep := &t.rec.Fds[i]
			for j := range ep.Epoll {
				tg := &ep.Epoll[j]
				if kcmpEpoll(t.pid, tg.Fd, ep.Fd, tg.Fd) {
					continue
				}
				found := false
				for _, f := range t.rec.Fds {
					if kcmpEpoll(t.pid, f.Fd, ep.Fd, tg.Fd) {
						tg.Fd, found = f.Fd, true
						break
					}
				}
				if !found {
					return fmt.Errorf("pid %d: fd %d: epoll target registered as fd %d: %w: its file is no longer open in the task", t.nspid, ep.Fd, tg.Fd, ErrUnsupported)
				}
			}
		}
	}
	return nil
}

// inotifyFd creates an inotify instance in rt with the saved watches.
func (r *restorer) inotifyFd(rt *rtask, f image.Fd) (uint64, error) {
	t := rt.lead()
	fd, err := t.sys("inotify_init1", unix.SYS_INOTIFY_INIT1, uint64(f.Flags&unix.O_NONBLOCK)|unix.IN_CLOEXEC)
	if err != nil {
		return 0, err
	}
	removed := false
	for _, w := range f.Inotify {
		if err := t.writeMem(r.scratch, append([]byte(w.Path), 0)); err != nil {
			return 0, err
		}
		// wds are handed out in increasing order: take (and drop) numbers
		// until the saved one comes.
		for {
			wd, err := t.sys("inotify_add_watch "+w.Path, unix.SYS_INOTIFY_ADD_WATCH, fd, r.scratch, uint64(w.Mask))
			if err != nil {
				return 0, err
			}
			if int(wd) == w.Wd {
				break
			}
			if int(wd) > w.Wd || w.Wd-int(wd) > 1<<16 {
				return 0, fmt.Errorf("inotify watch on %s got wd %d, want %d", w.Path, wd, w.Wd)
			}
			if _, err := t.sys("inotify_rm_watch", unix.SYS_INOTIFY_RM_WATCH, fd, wd); err != nil {
				return 0, err
			}
			removed = true
		}
	}
	if removed {
		// Drop the IN_IGNORED events of the removed watches.
		c, err := getfd(rt.hostPid, int(fd))
		if err != nil {
			return 0, err
		}
		defer unix.Close(c)
		if err := unix.SetNonblock(c, true); err != nil {
			return 0, err
		}
		buf := make([]byte, 1<<16)
		for {
			if _, err := unix.Read(c, buf); err != nil {
				break
			}
		}
		if err := unix.SetNonblock(c, f.Flags&unix.O_NONBLOCK != 0); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// deletedFd opens, in rt, a new description of the restored deleted file of
// f: the file is created once (an O_TMPFILE in the directory it was in, its
// content written back) and reopened through /proc/self/fd for each
// description, with that description's flags and offset.
func (r *restorer) deletedFd(rt *rtask, f image.Fd, base int) (uint64, error) {
	t := rt.lead()
	g := f.Ghost
	sr := r.socks
	h, ok := sr.ghosts[g.ID]
	if !ok {
		dir := filepath.Dir(f.Path)
		if err := t.writeMem(r.scratch, append([]byte(dir), 0)); err != nil {
			return 0, err
		}
		fd, err := t.sys("open O_TMPFILE in "+dir, unix.SYS_OPENAT, atFdcwd, r.scratch, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, uint64(g.Mode&0o7777))
		if err != nil {
			return 0, fmt.Errorf("recreate deleted file %s: %w", f.Path, err)
		}
		if fd, err = r.park(rt, fd, -1, base); err != nil {
			return 0, err
		}
		rt.temps = append(rt.temps, int(fd))
		h = holder{rt, int(fd)}
		sr.ghosts[g.ID] = h
		c, err := getfd(rt.hostPid, int(fd))
		if err != nil {
			return 0, err
		}
		dst := os.NewFile(uintptr(c), f.Path)
		src, err := os.Open(filepath.Join(r.opts.ImageDir, g.Data))
		if err == nil {
			_, err = io.Copy(dst, io.LimitReader(src, g.Size))
			src.Close()
		}
		if err == nil {
			err = dst.Chown(int(g.Uid), int(g.Gid))
		}
		if err == nil {
			err = dst.Chmod(os.FileMode(g.Mode & 0o777))
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, fmt.Errorf("refill deleted file %s: %w", f.Path, err)
		}
	}
	src, err := r.pull(rt, h, base)
	if err != nil {
		return 0, err
	}
	flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	fd, err := r.openIn(t, fmt.Sprintf("/proc/self/fd/%d", src), flags|unix.O_CLOEXEC)
	if h.rt != rt {
		if _, cerr := t.sys("close", unix.SYS_CLOSE, src); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return 0, fmt.Errorf("reopen deleted file %s: %w", f.Path, err)
	}
	if f.Pos != 0 {
		if _, err := t.sys("lseek", unix.SYS_LSEEK, fd, uint64(f.Pos), unix.SEEK_SET); err != nil {
			return 0, err
		}
	}
	return fd, nil
}
