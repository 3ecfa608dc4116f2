package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
)

// Advisory file locks (DumpOptions.FileLocks).
//
// /proc/PID/fdinfo/FD has a "lock:" line for every lock taken through that
// open file description: POSIX locks of the process's fd table (fcntl
// F_SETLK), and the flock and OFD locks (F_OFD_SETLK) of the description
// itself. They are dumped with the fd, and taken again at restore from the
// task that owns the fd, once every fd is in place and before the task
// resumes, so a POSIX lock is owned by the restored process (F_GETLK in
// another process names its pid), and a lock on a description shared by
// several processes is taken once (taking it again is a no-op).
// Blocked lock requests (F_SETLKW, flock without LOCK_NB) need nothing: the
// waiting task is inside the system call, which restarts after restore.
// Leases and delegations are refused.

// dumpLocks parses the lock lines of an fdinfo ("1: POSIX  ADVISORY  WRITE
// 42 fe:00:1234 5 14"); allowed is DumpOptions.FileLocks.
func dumpLocks(lines string, allowed bool) ([]image.FileLock, error) {
	var out []image.FileLock
	for _, line := range strings.Split(lines, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("unexpected lock line %q", line)
		}
		if !allowed {
			return nil, fmt.Errorf("%w without --file-locks (DumpOptions.FileLocks): the file holds the lock %q", ErrUnsupported, strings.Join(f[1:], " "))
		}
		var l image.FileLock
		switch f[1] {
		case "POSIX":
			l.Kind = image.LockPosix
		case "OFDLCK":
			l.Kind = image.LockOFD
		case "FLOCK":
			l.Kind = image.LockFlock
		default:
			return nil, fmt.Errorf("%w: %s locks (leases, delegations) are not supported: %q", ErrUnsupported, f[1], line)
		}
		if f[2] != "ADVISORY" {
			return nil, fmt.Errorf("%w: %s lock %q", ErrUnsupported, strings.ToLower(f[2]), line)
		}
		switch f[3] {
		case "READ":
		case "WRITE":
			l.Write = true
		default:
			return nil, fmt.Errorf("%w: lock of type %s: %q", ErrUnsupported, f[3], line)
		}
		var err error
		if l.Start, err = strconv.ParseInt(f[6], 10, 64); err != nil {
			return nil, fmt.Errorf("lock line %q: %w", line, err)
		}
		l.End = -1
		if f[7] != "EOF" {
			if l.End, err = strconv.ParseInt(f[7], 10, 64); err != nil {
				return nil, fmt.Errorf("lock line %q: %w", line, err)
			}
		}
		out = append(out, l)
	}
	return out, nil
}

const (
	fcntlSetlk    = 6  // F_SETLK
	fcntlOFDSetlk = 37 // F_OFD_SETLK
)

// restoreLocks takes the locks of rt's fds from inside rt.
func (r *restorer) restoreLocks(rt *rtask) error {
	t := rt.lead()
	for _, f := range rt.rec.Fds {
		for _, l := range f.Locks {
			what := fmt.Sprintf("%s %s lock %d-%s", l.Kind, map[bool]string{false: "read", true: "write"}[l.Write], l.Start, lockEnd(l.End))
			var err error
			switch l.Kind {
			case image.LockFlock:
				op := uint64(unix.LOCK_SH | unix.LOCK_NB)
				if l.Write {
					op = unix.LOCK_EX | unix.LOCK_NB
				}
				_, err = t.sys("flock", unix.SYS_FLOCK, uint64(f.Fd), op)
			case image.LockPosix, image.LockOFD:
				// struct flock: l_type, l_whence (shorts), l_start, l_len, l_pid.
				buf := make([]byte, 32)
				typ := uint16(unix.F_RDLCK)
				if l.Write {
					typ = unix.F_WRLCK
				}
				binary.LittleEndian.PutUint16(buf, typ)
				binary.LittleEndian.PutUint64(buf[8:], uint64(l.Start))
				if l.End >= 0 {
					binary.LittleEndian.PutUint64(buf[16:], uint64(l.End-l.Start+1))
				}
				if err = t.writeMem(r.scratch, buf); err != nil {
					return err
				}
				cmd := uint64(fcntlSetlk)
				if l.Kind == image.LockOFD {
					cmd = fcntlOFDSetlk
				}
				_, err = t.sys("fcntl", unix.SYS_FCNTL, uint64(f.Fd), cmd, r.scratch)
			default:
				return fmt.Errorf("fd %d (%s): %w: lock kind %q", f.Fd, f.Path, ErrUnsupported, l.Kind)
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EWOULDBLOCK) {
				return fmt.Errorf("fd %d (%s): take the %s: another process holds a conflicting lock: %w", f.Fd, f.Path, what, err)
			}
			if err != nil {
				return fmt.Errorf("fd %d (%s): take the %s: %w", f.Fd, f.Path, what, err)
			}
		}
	}
	return nil
}

func lockEnd(end int64) string {
	if end < 0 {
		return "EOF"
	}
	return strconv.FormatInt(end, 10)
}
