// Package sockdiag asks the kernel's sock_diag netlink interface about the
// sockets of one network namespace: unix sockets (peer, name, pending
// connections of a listener, queue lengths, shutdown state) and TCP sockets
// (backlog and accept-queue length of listeners). What it answers is about
// the namespace of the netlink socket, so Open creates that socket inside
// the namespace of a given process.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/internal/nsthread"
)

// UnixInfo is what sock_diag says about one unix socket.
type UnixInfo struct {
	Ino   uint64
	Type  int
	State int // TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10)
	Name  []byte
	// VfsIno is the inode of the socket file of a path name (0 for none).
	VfsIno, VfsDev uint32
	Peer           uint64
	// Icons are the inodes of the pending connections (listeners only).
	Icons []uint64
	// Rqueue and Wqueue: for a listener the accept-queue length and the
	// backlog, else the bytes queued for reading and for writing.
	Rqueue, Wqueue uint32
	Shutdown       int
}

// Inet is what sock_diag says about one TCP or UDP socket.
type Inet struct {
	Ino    uint64
	State  int
	Rqueue uint32 // accept-queue length (listeners) or receive queue
	Wqueue uint32 // backlog (listeners) or send queue
}

// Conn is a sock_diag netlink socket bound to a network namespace.
type Conn struct{ fd int }

// InNetns runs f on an OS thread that joined the network namespace of pid
// (nsthread.Run).
func InNetns(pid int, f func() error) error {
	return nsthread.Run(pid, "net", unix.CLONE_NEWNET, f)
}

// Open returns a sock_diag socket of the network namespace of pid.
func Open(pid int) (*Conn, error) {
	var fd int
	err := InNetns(pid, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	return &Conn{fd: fd}, nil
}

// Close closes the netlink socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// dump sends a SOCK_DIAG_BY_FAMILY dump request and calls fn for each reply.
func (c *Conn) dump(req []byte, fn func(msg []byte)) error {
	hdr := make([]byte, unix.SizeofNlMsghdr)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], uint32(unix.SizeofNlMsghdr+len(req)))
	le.PutUint16(hdr[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(hdr[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(hdr[8:], 1)
	if err := unix.Sendto(c.fd, append(hdr, req...), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(le.Uint32(m.Data)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return errors.New("sock_diag: error reply")
			}
			fn(m.Data)
		}
	}
}

type attr struct {
	typ  uint16
	data []byte
}

func attrs(b []byte) []attr {
	var out []attr
	le := binary.LittleEndian
	for len(b) >= 4 {
		l := int(le.Uint16(b))
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, attr{typ: le.Uint16(b[2:]) & 0x3fff, data: b[4:l]})
		l = (l + 3) &^ 3
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out
}

// Unix attributes and show flags of <linux/unix_diag.h>.
const (
	udiagShowVFS      = 0x02
	udiagShowIcons    = 0x08
	unixDiagName      = 0
	unixDiagVFS       = 1
	unixDiagPeer      = 2
	unixDiagIcons     = 3
	unixDiagRqlen     = 4
	unixDiagShutdown  = 6
	sizeofUnixDiagMsg = 16
)

// UnixSockets returns every unix socket of the namespace by inode.
func (c *Conn) UnixSockets() (map[uint64]*UnixInfo, error) {
	req := make([]byte, 24)
	le := binary.LittleEndian
	req[0] = unix.AF_UNIX
	le.PutUint32(req[4:], 0xffffffff)                                                              // every state
	le.PutUint32(req[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRqlen) // UNIX_DIAG_SHUTDOWN comes always
	le.PutUint32(req[16:], 0xffffffff)
	le.PutUint32(req[20:], 0xffffffff)
	out := map[uint64]*UnixInfo{}
	err := c.dump(req, func(m []byte) {
		if len(m) < sizeofUnixDiagMsg {
			return
		}
		u := &UnixInfo{Type: int(m[1]), State: int(m[2]), Ino: uint64(le.Uint32(m[4:]))}
		for _, a := range attrs(m[sizeofUnixDiagMsg:]) {
			switch a.typ {
			case unixDiagName:
				u.Name = append([]byte(nil), a.data...)
			case unixDiagVFS:
				if len(a.data) >= 8 {
					u.VfsIno, u.VfsDev = le.Uint32(a.data), le.Uint32(a.data[4:])
				}
			case unixDiagPeer:
				if len(a.data) >= 4 {
					u.Peer = uint64(le.Uint32(a.data))
				}
			case unixDiagIcons:
				for i := 0; i+4 <= len(a.data); i += 4 {
					u.Icons = append(u.Icons, uint64(le.Uint32(a.data[i:])))
				}
			case unixDiagRqlen:
				if len(a.data) >= 8 {
					u.Rqueue, u.Wqueue = le.Uint32(a.data), le.Uint32(a.data[4:])
				}
			case unixDiagShutdown:
				if len(a.data) >= 1 {
					u.Shutdown = int(a.data[0])
				}
			}
		}
		out[u.Ino] = u
	})
	return out, err
}

// InetSockets returns the sockets of one family (AF_INET, AF_INET6) and
// protocol (IPPROTO_TCP, IPPROTO_UDP) by inode.
func (c *Conn) InetSockets(family, protocol int) (map[uint64]*Inet, error) {
	req := make([]byte, 56)
	le := binary.LittleEndian
	req[0], req[1] = byte(family), byte(protocol)
	le.PutUint32(req[4:], 0xffffffff)
	le.PutUint32(req[48:], 0xffffffff) // INET_DIAG_NOCOOKIE
	le.PutUint32(req[52:], 0xffffffff)
	out := map[uint64]*Inet{}
	err := c.dump(req, func(m []byte) {
		if len(m) < 72 {
			return
		}
		s := &Inet{State: int(m[1]), Rqueue: le.Uint32(m[56:]), Wqueue: le.Uint32(m[60:]), Ino: uint64(le.Uint32(m[68:]))}
		out[s.Ino] = s
	})
	return out, err
}
