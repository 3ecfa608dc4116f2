package engine

// Object fds beyond the core's: files deleted while open (their content is
// saved and they come back as an O_TMPFILE in the directory they were in),
// and the check that every epoll target still is the file its fd number
// names (kcmp KCMP_EPOLL_TFD). (Inotify lives in inotify_linux.go.)

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
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
		src, err := r.openImageFile(g.Data)
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
