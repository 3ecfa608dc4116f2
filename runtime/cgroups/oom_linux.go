package cgroups

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

func (m *manager) OOMEvents(ctx context.Context) (<-chan struct{}, error) {
	if d, ok := m.v1["memory"]; ok {
		return oomEventsV1(ctx, d)
	}
	if m.v2 != "" && fileExists(m.v2, "memory.events") {
		return watchMemoryEvents(ctx, filepath.Join(m.v2, "memory.events"))
	}
	return nil, fmt.Errorf("oom events of cgroup %s: no memory controller: %w", m.path, ErrUnsupported)
}

// oomEventsV1 registers an eventfd for memory.oom_control through
// cgroup.event_control. The kernel signals the eventfd on every OOM in the
// cgroup and once more when the cgroup is removed; the latter is told apart
// by the cgroup being gone.
func oomEventsV1(ctx context.Context, dir string) (<-chan struct{}, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd for cgroup %s: %w", dir, err)
	}
	ev := os.NewFile(uintptr(efd), "oom-eventfd")
	oc, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		ev.Close()
		return nil, fmt.Errorf("cgroup file %s: %w", filepath.Join(dir, "memory.oom_control"), unwrapPath(err))
	}
	err = writeFile(dir, "cgroup.event_control", strconv.Itoa(efd)+" "+strconv.Itoa(int(oc.Fd())))
	oc.Close() // the kernel holds its own reference now
	if err != nil {
		ev.Close()
		return nil, err
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go closeOnDone(ctx, done, ev)
	go func() {
		defer close(out)
		defer close(done)
		buf := make([]byte, 8)
		for {
			if _, err := ev.Read(buf); err != nil {
				return
			}
			if binary.NativeEndian.Uint64(buf) == 0 {
				continue
			}
			if !fileExists(dir, "cgroup.event_control") {
				return // cgroup removed
			}
			select {
			case out <- struct{}{}:
			default: // coalesce with the pending one
			}
		}
	}()
	return out, nil
}

// watchMemoryEvents follows the oom_kill counter of a v2 memory.events file
// with inotify: one value per increase. It ends when ctx is done or the file
// goes away (cgroup removed).
func watchMemoryEvents(ctx context.Context, file string) (<-chan struct{}, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify for %s: %w", file, err)
	}
	in := os.NewFile(uintptr(ifd), "oom-inotify")
	if _, err := unix.InotifyAddWatch(ifd, file, unix.IN_MODIFY|unix.IN_DELETE_SELF); err != nil {
		in.Close()
		return nil, fmt.Errorf("watch %s: %w", file, err)
	}
	dir, name := filepath.Split(file)
	count := func() (uint64, error) {
		s, err := readFile(dir, name)
		if err != nil {
			return 0, err
		}
		n, ok := parseKeyed(s)["oom_kill"]
		if !ok {
			// A file caught while it is rewritten (only a plain file can
			// be: cgroupfs reads are atomic) says nothing yet.
			return 0, fmt.Errorf("%s: no oom_kill count", file)
		}
		return n, nil
	}
	last, err := count()
	if err != nil {
		in.Close()
		return nil, err
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go closeOnDone(ctx, done, in)
	go func() {
		defer close(out)
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			gone := false
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				nameLen := binary.NativeEndian.Uint32(buf[off+12:])
				if mask&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0 {
					gone = true
				}
				off += unix.SizeofInotifyEvent + int(nameLen)
			}
			cur, err := count()
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return
				}
				continue
			}
			if cur > last {
				select {
				case out <- struct{}{}:
				default:
				}
			}
			last = cur
			if gone {
				return
			}
		}
	}()
	return out, nil
}

// closeOnDone closes f when ctx is done (which unblocks its reader) or once
// the reader has finished (done closed).
func closeOnDone(ctx context.Context, done <-chan struct{}, f *os.File) {
	select {
	case <-ctx.Done():
	case <-done:
	}
	f.Close()
}
