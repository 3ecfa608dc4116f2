package engine

import (
	"encoding/hex"
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

// dumpInotify records the watches of an inotify fd. fdinfo gives each
// watch's descriptor, mask and the file handle of the watched inode; the
// engine turns the handle back into a path with open_by_handle_at on the
// mount of that superblock (found in the task's mountinfo), as CRIU does.
// Events queued and not read yet are not saved.
func dumpInotify(t *dtask, out *image.Fd, fi *procfs.Fdinfo) error {
	out.Kind = image.FdInotify
	lines := fi.Extra["inotify wd"]
	if lines == "" {
		return nil
	}
	for _, l := range strings.Split(lines, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		wd, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("inotify watch %q", l)
		}
		kv := map[string]string{}
		for _, x := range f[1:] {
			if k, v, ok := strings.Cut(x, ":"); ok {
				kv[k] = v
			}
		}
		mask, err1 := strconv.ParseUint(kv["mask"], 16, 32)
		sdev, err2 := strconv.ParseUint(kv["sdev"], 16, 32)
		htype, err3 := strconv.ParseInt(kv["fhandle-type"], 16, 32)
		handle, err4 := hex.DecodeString(kv["f_handle"])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return fmt.Errorf("inotify watch %q", l)
		}
		path, err := pathOfHandle(t, uint32(sdev), int32(htype), handle)
		if err != nil {
			return fmt.Errorf("inotify watch %d: %w", wd, err)
		}
		out.Inotify = append(out.Inotify, image.InotifyWatch{Wd: wd, Mask: uint32(mask), Path: path})
	}
	sort.Slice(out.Inotify, func(i, j int) bool { return out.Inotify[i].Wd < out.Inotify[j].Wd })
	return nil
}

// pathOfHandle resolves a file handle on the superblock sdev (kernel dev_t
// encoding: major << 20 | minor) to a path in the task's root.
func pathOfHandle(t *dtask, sdev uint32, htype int32, handle []byte) (string, error) {
	major, minor := sdev>>20, sdev&0xfffff
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", t.pid))
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("%d:%d", major, minor)
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[2] != want {
			continue
		}
		mnt, err := unix.Open(fmt.Sprintf("/proc/%d/root%s", t.pid, f[4]), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		fd, err := unix.OpenByHandleAt(mnt, unix.NewFileHandle(htype, handle), unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mnt)
		if err != nil {
			continue
		}
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		unix.Close(fd)
		if err != nil {
			return "", err
		}
		if strings.HasSuffix(p, " (deleted)") {
			return "", fmt.Errorf("%w: the watched file %s was deleted", ErrUnsupported, p)
		}
		return inRoot(t.root, p)
	}
	return "", fmt.Errorf("%w: no mount of device %s holds the watched file", ErrUnsupported, want)
}

// createInotify makes an inotify instance with the saved watches under their
// saved descriptors. Descriptors are allocated cyclically from 1, so a gap
// (a removed watch) is reproduced by adding and removing a dummy watch.
func (r *restorer) createInotify(rt *rtask, f image.Fd) (uint64, error) {
	t := rt.lead()
	fd, err := t.sys("inotify_init1", unix.SYS_INOTIFY_INIT1, uint64(f.Flags)&unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return 0, err
	}
	dummy := "/"
	for _, w := range f.Inotify {
		if w.Path == "/" {
			dummy = "/dev"
		}
	}
	add := func(path string, mask uint32) (int, error) {
		if err := t.writeMem(r.scratch, append([]byte(path), 0)); err != nil {
			return 0, err
		}
		wd, err := t.sys("inotify_add_watch "+path, unix.SYS_INOTIFY_ADD_WATCH, fd, r.scratch, uint64(mask))
		return int(wd), err
	}
	next, dummies := 1, false
	for _, w := range f.Inotify {
		for next < w.Wd {
			wd, err := add(dummy, unix.IN_ACCESS)
			if err != nil {
				return 0, err
			}
			if _, err := t.sys("inotify_rm_watch", unix.SYS_INOTIFY_RM_WATCH, fd, uint64(wd)); err != nil {
				return 0, err
			}
			next, dummies = wd+1, true
		}
		wd, err := add(w.Path, w.Mask)
		if err != nil {
			return 0, err
		}
		if wd != w.Wd {
			return 0, fmt.Errorf("inotify watch of %s got descriptor %d, want %d", w.Path, wd, w.Wd)
		}
		next = wd + 1
	}
	if dummies {
		// Removing the dummy watches queued IN_IGNORED events: drop them.
		if err := drainInotify(rt.hostPid, int(fd)); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// drainInotify reads away every event queued on fd of pid (the engine's own
// copy of it, polled so that a blocking fd never blocks the engine).
func drainInotify(pid, fd int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	efd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return err
	}
	defer unix.Close(efd)
	buf := make([]byte, 64<<10)
	for {
		pfd := []unix.PollFd{{Fd: int32(efd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := unix.Read(efd, buf); err != nil && !errors.Is(err, unix.EAGAIN) {
			return err
		}
	}
}
