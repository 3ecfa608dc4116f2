package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/sockdiag"
)

// unixTable collects the unix sockets of the tree at dump time. Their peers
// and shutdown state come from sock_diag (queried in the task's network
// namespace), their queued bytes from a MSG_PEEK on the engine's own copy of
// the fd, which leaves them in place.
type unixTable struct {
	byNetns map[string]map[uint32]sockdiag.UnixSocket
	socks   map[uint64]*image.UnixSocket
	order   []uint64
}

func newUnixTable() *unixTable {
	return &unixTable{byNetns: map[string]map[uint32]sockdiag.UnixSocket{}, socks: map[uint64]*image.UnixSocket{}}
}

var unixTypes = map[uint8]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "datagram", unix.SOCK_SEQPACKET: "seqpacket"}

// dump records the unix socket fd of task pid (inode ino); it returns the
// reason when the socket is of a kind the engine cannot restore yet.
func (u *unixTable) dump(pid, fd int, ino uint64) error {
	if _, ok := u.socks[ino]; ok {
		return nil
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err
	}
	diag, ok := u.byNetns[ns]
	if !ok {
		if diag, err = sockdiag.Unix(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
			return err
		}
		u.byNetns[ns] = diag
	}
	d, ok := diag[uint32(ino)]
	if !ok {
		return errors.New("not found by sock_diag")
	}
	kind := "unix " + unixTypes[d.Type]
	switch {
	case d.Name != "":
		return fmt.Errorf("(%s, bound to %q): bound and listening sockets are %w yet", kind, d.Name, ErrUnsupported)
	case d.Peer == 0:
		return fmt.Errorf("(%s, not connected): sockets are %w yet", kind, ErrUnsupported)
	}
	s := &image.UnixSocket{ID: ino, Peer: uint64(d.Peer), Type: int(d.Type), Shutdown: int(d.Shutdown)}
	if d.RQueue > 0 {
		if d.Type != unix.SOCK_STREAM {
			return fmt.Errorf("(%s): queued messages on %s sockets are %w yet", kind, unixTypes[d.Type], ErrUnsupported)
		}
		if s.Queue, err = peekSocket(pid, fd, int(d.RQueue)); err != nil {
			return fmt.Errorf("(%s): %w", kind, err)
		}
	}
	u.socks[ino] = s
	u.order = append(u.order, ino)
	return nil
}

// peekSocket reads the n bytes queued on a stream socket without taking them.
func peekSocket(pid, fd, n int) ([]byte, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)
	sfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sfd)
	buf := make([]byte, n)
	oob := make([]byte, unix.CmsgSpace(64*4))
	got, oobn, flags, _, err := unix.Recvmsg(sfd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, fmt.Errorf("peek the queue: %w", err)
	}
	if oobn > 0 || flags&unix.MSG_CTRUNC != 0 {
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, f := range fds {
						unix.Close(f)
					}
				}
			}
		}
		return nil, fmt.Errorf("queued file descriptors or credentials are %w yet", ErrUnsupported)
	}
	if got != n {
		return nil, fmt.Errorf("peeked %d of the %d queued bytes", got, n)
	}
	return buf, nil
}

// finish checks that every socket's peer is in the tree and fills the inventory.
func (u *unixTable) finish(inv *image.Inventory) error {
	for _, id := range u.order {
		s := u.socks[id]
		if _, ok := u.socks[s.Peer]; !ok {
			return fmt.Errorf("socket:[%d]: its peer socket:[%d] is outside the tree: %w", id, s.Peer, ErrUnsupported)
		}
		inv.UnixSockets = append(inv.UnixSockets, *s)
	}
	return nil
}

// unixEnd returns an fd in rt for the unix socket of f: the pair is made by
// socketpair in the first task that needs either end, its queues refilled
// and its shutdown state set from the engine; the other tasks pull.
func (r *restorer) unixEnd(rt *rtask, f image.Fd) (uint64, bool, error) {
	if h, ok := r.sockEnds[f.Socket]; ok {
		fd, err := r.pull(rt, h, rt.base)
		return fd, h.rt != rt, err
	}
	me, peer := r.unixSocks[f.Socket], (*image.UnixSocket)(nil)
	if me != nil {
		peer = r.unixSocks[me.Peer]
	}
	if me == nil || peer == nil {
		return 0, false, fmt.Errorf("unix socket %d is not in the inventory", f.Socket)
	}
	t := rt.lead()
	if _, err := t.sys("socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(me.Type)|unix.SOCK_CLOEXEC, 0, r.scratch); err != nil {
		return 0, false, err
	}
	buf := make([]byte, 8)
	if err := t.readMem(r.scratch, buf); err != nil {
		return 0, false, err
	}
	var ends [2]uint64
	for i := range ends {
		fd, err := r.park(rt, uint64(binary.LittleEndian.Uint32(buf[4*i:])), -1, rt.base)
		if err != nil {
			return 0, false, err
		}
		ends[i] = fd
		rt.temps = append(rt.temps, int(fd))
	}
	r.sockEnds[me.ID] = holder{rt, int(ends[0])}
	r.sockEnds[peer.ID] = holder{rt, int(ends[1])}
	// From the engine: what each end had queued is sent by the other end,
	// then the shutdown state.
	pidfd, err := unix.PidfdOpen(rt.hostPid, 0)
	if err != nil {
		return 0, false, err
	}
	defer unix.Close(pidfd)
	var efd [2]int
	for i := range ends {
		if efd[i], err = unix.PidfdGetfd(pidfd, int(ends[i]), 0); err != nil {
			return 0, false, err
		}
		defer unix.Close(efd[i])
	}
	socks := [2]*image.UnixSocket{me, peer}
	for i, s := range socks {
		for q := s.Queue; len(q) > 0; {
			n, err := unix.Write(efd[1-i], q)
			if err != nil {
				return 0, false, fmt.Errorf("refill unix socket %d: %w", s.ID, err)
			}
			q = q[n:]
		}
	}
	for i, s := range socks {
		if how, ok := map[int]int{1: unix.SHUT_RD, 2: unix.SHUT_WR, 3: unix.SHUT_RDWR}[s.Shutdown]; ok {
			if err := unix.Shutdown(efd[i], how); err != nil {
				return 0, false, fmt.Errorf("shutdown unix socket %d: %w", s.ID, err)
			}
		}
	}
	return ends[0], false, nil
}
