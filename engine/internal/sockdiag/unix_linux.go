// Package sockdiag queries the kernel's sock_diag netlink interface for the
// state of sockets that /proc does not show: a unix socket's peer, bound
// name, queue lengths and shutdown state (UNIX_DIAG, linux/unix_diag.h).
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// unix_diag constants (linux/unix_diag.h, linux/sock_diag.h).
const (
	sockDiagByFamily = 20
	udiagShowName    = 1 << 0
	udiagShowPeer    = 1 << 2
	udiagShowRqlen   = 1 << 4
	attrName         = 0
	attrPeer         = 2
	attrRqlen        = 4
	attrShutdown     = 6
)

// UnixSocket is what sock_diag says about one unix socket.
type UnixSocket struct {
	Ino   uint32
	Type  uint8 // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State uint8 // TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)...
	// Peer is the inode of the connected peer (0: none).
	Peer uint32
	// Name is the bound address ("" for unbound; abstract names start with "@").
	Name string
	// RQueue is the receive queue length (for a listening socket: pending connections).
	RQueue, WQueue uint32
	// Shutdown holds the shutdown bits (1: no more receives, 2: no more sends).
	Shutdown uint8
}

// Unix lists the unix sockets of the network namespace at netnsPath (a
// /proc/PID/ns/net file; "" for the caller's own), by inode.
func Unix(netnsPath string) (map[uint32]UnixSocket, error) {
	fd, err := socketIn(netnsPath)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	req := make([]byte, 16+24)
	le := binary.LittleEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], sockDiagByFamily)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], 0xffffffff) // every state
	le.PutUint32(req[28:], udiagShowName|udiagShowPeer|udiagShowRqlen)
	le.PutUint32(req[32:], 0xffffffff) // no cookie
	le.PutUint32(req[36:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	out := map[uint32]UnixSocket{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(le.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return out, nil
			}
			s, err := parseUnix(m.Data)
			if err != nil {
				return nil, err
			}
			out[s.Ino] = s
		}
	}
}

// parseUnix decodes struct unix_diag_msg and its attributes.
func parseUnix(b []byte) (UnixSocket, error) {
	var s UnixSocket
	if len(b) < 16 {
		return s, errors.New("short unix_diag_msg")
	}
	le := binary.LittleEndian
	s.Type, s.State, s.Ino = b[1], b[2], le.Uint32(b[4:])
	for a := b[16:]; len(a) >= 4; {
		l, typ := int(le.Uint16(a)), le.Uint16(a[2:])
		if l < 4 || l > len(a) {
			return s, errors.New("bad unix_diag attribute")
		}
		v := a[4:l]
		switch typ {
		case attrName:
			if len(v) > 0 && v[0] == 0 {
				s.Name = "@" + string(v[1:])
			} else {
				s.Name = string(v)
			}
		case attrPeer:
			if len(v) >= 4 {
				s.Peer = le.Uint32(v)
			}
		case attrRqlen:
			if len(v) >= 8 {
				s.RQueue, s.WQueue = le.Uint32(v), le.Uint32(v[4:])
			}
		case attrShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
			}
		}
		step := (l + 3) &^ 3
		if step >= len(a) {
			break
		}
		a = a[step:]
	}
	return s, nil
}

// socketIn opens a NETLINK_SOCK_DIAG socket in the network namespace at
// path: a socket belongs to the namespace it was created in, so the socket
// is made on a thread that joins the namespace and goes back right after.
func socketIn(path string) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	}
	if path == "" {
		return open()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		back := false
		defer func() {
			if back {
				runtime.UnlockOSThread()
			}
		}()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer unix.Close(self)
		ns, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("setns %s: %w", path, err)}
			return
		}
		fd, err := open()
		back = unix.Setns(self, unix.CLONE_NEWNET) == nil
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}
