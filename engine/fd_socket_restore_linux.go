package engine

// Sockets, restore side. A socket is created, inside the task that first
// needs it, together with everything it must be created with: both ends of
// a pair (socketpair, or a client connected to the restored listener and the
// server end taken with accept4, so that names come back), a listener with
// its accepted connections and then its pending ones in queue order. The fds
// are parked above the task's restored numbers and pulled by the tasks that
// share them (pidfd_getfd), like pipes. Bind and connect of unix sockets run
// inside the task (paths resolve in its mount namespace); everything else is
// done from the engine's own copy of the socket (pidfd_getfd), which acts in
// the socket's network namespace. Queued bytes go back once every socket
// exists (finishSockets): written by the peer end, by a temporary peer that
// is then closed (a connection whose peer had closed), or sent to the
// socket's address.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/sockdiag"
)

type sockRestore struct {
	rec    *image.Sockets
	byID   map[uint64]*image.Socket
	held   map[uint64]holder
	copies map[uint64]int
	// pendingIn maps a client socket to the listener whose queue holds it.
	pendingIn map[uint64]uint64
	// writers are temporary peers (engine fds) of connections whose peer
	// had closed: they refill the queue and are then closed.
	writers map[uint64]int
	order   []uint64
	// repair are the TCP sockets still in repair mode.
	repair []uint64
	// ghosts say which task holds the restored deleted file of an inode
	// (fd_event_linux.go).
	ghosts map[uint64]holder
}

// prepareSockets reads the socket record and restores the network
// namespace's loopback (before any socket needs it).
func (r *restorer) prepareSockets() error {
	rec, err := image.ReadSockets(r.opts.ImageDir)
	if err != nil {
		return err
	}
	sr := &sockRestore{rec: rec, byID: map[uint64]*image.Socket{}, held: map[uint64]holder{}, copies: map[uint64]int{},
		pendingIn: map[uint64]uint64{}, writers: map[uint64]int{}, ghosts: map[uint64]holder{}}
	for i := range rec.Sockets {
		s := &rec.Sockets[i]
		sr.byID[s.ID] = s
		for _, p := range s.Pending {
			sr.pendingIn[p] = s.ID
		}
	}
	r.socks = sr
	if rec.Netns == nil {
		return nil
	}
	own, err := netnsIno("self")
	if err != nil {
		return err
	}
	theirs, err := netnsIno(fmt.Sprint(r.opts.Pid))
	if err != nil {
		return err
	}
	if own == theirs {
		// Restored into the engine's own namespace: its loopback is not ours to change.
		return nil
	}
	if err := restoreNetns(r.opts.Pid, rec.Netns); err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	return nil
}

// socketFd returns an fd of rt for the socket of f (see pipeEnd).
func (r *restorer) socketFd(rt *rtask, f image.Fd, base int) (uint64, bool, error) {
	sr := r.socks
	if sr.byID[f.Socket] == nil {
		return 0, false, fmt.Errorf("socket %d is not in %s", f.Socket, image.SocketsFile)
	}
	first := false
	if _, ok := sr.held[f.Socket]; !ok {
		if err := r.createSocket(rt, base, f.Socket); err != nil {
			return 0, false, fmt.Errorf("socket:[%d]: %w", f.Socket, err)
		}
		first = true
	}
	h := sr.held[f.Socket]
	if first {
		// File status flags (O_NONBLOCK) belong to the one file of the socket.
		if _, err := unix.FcntlInt(uintptr(sr.copies[f.Socket]), unix.F_SETFL, f.Flags&^unix.O_ACCMODE); err != nil {
			return 0, false, fmt.Errorf("F_SETFL: %w", err)
		}
	}
	fd, err := r.pull(rt, h, base)
	return fd, h.rt != rt, err
}

// newSocket creates a socket in rt, parks it and takes the engine's copy.
func (r *restorer) newSocket(rt *rtask, base int, s *image.Socket) (uint64, error) {
	t := rt.lead()
	fd, err := t.sys("socket", unix.SYS_SOCKET, uint64(s.Family), uint64(s.Type|unix.SOCK_CLOEXEC), uint64(s.Protocol))
	if err != nil {
		return 0, err
	}
	return r.adopt(rt, base, s, fd)
}

// adopt parks fd of rt as the socket s, sets its options and returns the
// parked fd.
func (r *restorer) adopt(rt *rtask, base int, s *image.Socket, fd uint64) (uint64, error) {
	fd, err := r.park(rt, fd, -1, base)
	if err != nil {
		return 0, err
	}
	rt.temps = append(rt.temps, int(fd))
	c, err := getfd(rt.hostPid, int(fd))
	if err != nil {
		return 0, err
	}
	sr := r.socks
	sr.held[s.ID] = holder{rt, int(fd)}
	sr.copies[s.ID] = c
	sr.order = append(sr.order, s.ID)
	if err := setSockopts(c, s); err != nil {
		return 0, fmt.Errorf("socket options: %w", err)
	}
	return fd, nil
}

func (r *restorer) socketpair(rt *rtask, base int, a, b *image.Socket) ([2]uint64, error) {
	t := rt.lead()
	if _, err := t.sys("socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(a.Type|unix.SOCK_CLOEXEC), 0, r.scratch); err != nil {
		return [2]uint64{}, err
	}
	buf := make([]byte, 8)
	if err := t.readMem(r.scratch, buf); err != nil {
		return [2]uint64{}, err
	}
	fds := [2]uint64{uint64(binary.LittleEndian.Uint32(buf)), uint64(binary.LittleEndian.Uint32(buf[4:]))}
	var err error
	if fds[0], err = r.adopt(rt, base, a, fds[0]); err != nil {
		return fds, err
	}
	if b != nil {
		fds[1], err = r.adopt(rt, base, b, fds[1])
	}
	return fds, err
}

// writeSockaddr writes a sockaddr_un for name into the task's scratch memory.
func (r *restorer) writeSockaddr(t *tracee, name []byte) (uint64, uint64, error) {
	addr := r.scratch + 2048
	buf := make([]byte, 2+len(name))
	binary.LittleEndian.PutUint16(buf, unix.AF_UNIX)
	copy(buf[2:], name)
	return addr, uint64(len(buf)), t.writeMem(addr, buf)
}

// bindUnix binds fd of rt to name, removing the stale socket file a path
// name left behind (the dumped socket's).
func (r *restorer) bindUnix(rt *rtask, fd uint64, name []byte) error {
	t := rt.lead()
	if name[0] == '/' {
		p := string(name)
		if i := strings.IndexByte(p, 0); i >= 0 {
			p = p[:i]
		}
		host := fmt.Sprintf("/proc/%d/root%s", rt.hostPid, p)
		var st unix.Stat_t
		if err := unix.Lstat(host, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			if err := unix.Unlink(host); err != nil {
				return fmt.Errorf("remove stale socket file %s: %w", p, err)
			}
		}
	}
	addr, n, err := r.writeSockaddr(t, name)
	if err != nil {
		return err
	}
	if _, err := t.sys("bind", unix.SYS_BIND, fd, addr, n); err != nil {
		return fmt.Errorf("bind to %q: %w", name, err)
	}
	return nil
}

func (r *restorer) connectUnix(rt *rtask, fd uint64, name []byte) error {
	t := rt.lead()
	addr, n, err := r.writeSockaddr(t, name)
	if err != nil {
		return err
	}
	if _, err := t.sys("connect", unix.SYS_CONNECT, fd, addr, n); err != nil {
		return fmt.Errorf("connect to %q: %w", name, err)
	}
	return nil
}

// createSocket creates socket id (and what must be created with it) in rt.
func (r *restorer) createSocket(rt *rtask, base int, id uint64) error {
	sr := r.socks
	if _, ok := sr.held[id]; ok {
		return nil
	}
	s := sr.byID[id]
	if s.Family == unix.AF_UNIX {
		return r.createUnix(rt, base, s)
	}
	return r.createInet(rt, base, s)
}

func (r *restorer) createUnix(rt *rtask, base int, s *image.Socket) error {
	sr := r.socks
	if s.Listening {
		return r.createListener(rt, base, s)
	}
	if l, ok := sr.pendingIn[s.ID]; ok {
		return r.createListener(rt, base, sr.byID[l])
	}
	if s.Listener != 0 {
		return r.createListener(rt, base, sr.byID[s.Listener])
	}
	if s.Peer != 0 {
		p := sr.byID[s.Peer]
		if p.Listener != 0 {
			return r.createListener(rt, base, sr.byID[p.Listener])
		}
		if s.Type != unix.SOCK_DGRAM || p.Peer == s.ID && len(s.Name) == 0 && len(p.Name) == 0 {
			fds, err := r.socketpair(rt, base, s, p)
			if err != nil {
				return err
			}
			for i, k := range []*image.Socket{s, p} {
				if len(k.Name) > 0 {
					if err := r.bindUnix(rt, fds[i], k.Name); err != nil {
						return err
					}
				}
			}
			return nil
		}
		// A datagram socket connected to a named one.
		fd, err := r.newSocket(rt, base, s)
		if err != nil {
			return err
		}
		if len(s.Name) > 0 {
			if err := r.bindUnix(rt, fd, s.Name); err != nil {
				return err
			}
		}
		if err := r.createSocket(rt, base, p.ID); err != nil {
			return err
		}
		return r.connectUnix(rt, fd, s.PeerName)
	}
	if s.Connected && len(s.PeerName) == 0 {
		// The peer had closed: a pair whose other end refills the queue
		// and is closed (finishSockets).
		fds, err := r.socketpair(rt, base, s, nil)
		if err != nil {
			return err
		}
		w, err := getfd(rt.hostPid, int(fds[1]))
		if err != nil {
			return err
		}
		sr.writers[s.ID] = w
		_, err = rt.lead().sys("close", unix.SYS_CLOSE, fds[1])
		return err
	}
	fd, err := r.newSocket(rt, base, s)
	if err != nil {
		return err
	}
	if len(s.Name) > 0 {
		if err := r.bindUnix(rt, fd, s.Name); err != nil {
			return err
		}
	}
	if s.Connected {
		// Outside the tree (--ext-unix-sk): reconnect by name.
		if err := r.connectUnix(rt, fd, s.PeerName); err != nil {
			return fmt.Errorf("reconnect to the external socket: %w", err)
		}
	}
	return nil
}

// createListener creates a listening unix socket, then every connection
// accepted from it (client connect + accept4), then the pending ones.
func (r *restorer) createListener(rt *rtask, base int, l *image.Socket) error {
	sr := r.socks
	if _, ok := sr.held[l.ID]; ok {
		return nil
	}
	t := rt.lead()
	lfd, err := r.newSocket(rt, base, l)
	if err != nil {
		return err
	}
	if err := r.bindUnix(rt, lfd, l.Name); err != nil {
		return err
	}
	if _, err := t.sys("listen", unix.SYS_LISTEN, lfd, uint64(max(l.Backlog, len(l.Pending)+1))); err != nil {
		return err
	}
	for i := range sr.rec.Sockets {
		srv := &sr.rec.Sockets[i]
		if srv.Listener != l.ID {
			continue
		}
		cl := sr.byID[srv.Peer]
		if _, ok := sr.held[cl.ID]; ok {
			return fmt.Errorf("client socket %d of listener %d created before it", cl.ID, l.ID)
		}
		cfd, err := r.newSocket(rt, base, cl)
		if err != nil {
			return err
		}
		if len(cl.Name) > 0 {
			if err := r.bindUnix(rt, cfd, cl.Name); err != nil {
				return err
			}
		}
		if err := r.connectUnix(rt, cfd, l.Name); err != nil {
			return err
		}
		afd, err := t.sys("accept4", unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		if _, err := r.adopt(rt, base, srv, afd); err != nil {
			return err
		}
	}
	for _, p := range l.Pending {
		ps := sr.byID[p]
		pfd, err := r.newSocket(rt, base, ps)
		if err != nil {
			return err
		}
		if len(ps.Name) > 0 {
			if err := r.bindUnix(rt, pfd, ps.Name); err != nil {
				return err
			}
		}
		if err := r.connectUnix(rt, pfd, l.Name); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) createInet(rt *rtask, base int, s *image.Socket) error {
	sr := r.socks
	if s.TCP != nil {
		// Listeners on the same port first: they could not bind next to
		// a connection that holds the port.
		port := func(a string) uint16 { ap, _ := netip.ParseAddrPort(a); return ap.Port() }
		for i := range sr.rec.Sockets {
			l := &sr.rec.Sockets[i]
			if l.Listening && l.Family == s.Family && l.Type == s.Type && port(l.Local) == port(s.Local) {
				if err := r.createSocket(rt, base, l.ID); err != nil {
					return err
				}
			}
		}
	}
	if _, err := r.newSocket(rt, base, s); err != nil {
		return err
	}
	c := sr.copies[s.ID]
	if s.TCP != nil {
		if err := restoreTCP(c, s); err != nil {
			return err
		}
		sr.repair = append(sr.repair, s.ID)
		return nil
	}
	if s.Local != "" {
		sa, err := sockaddrOf(s.Family, s.Local)
		if err != nil {
			return err
		}
		if err := unix.Bind(c, sa); err != nil {
			return fmt.Errorf("bind to %s: %w", s.Local, err)
		}
	}
	if s.Listening {
		if err := unix.Listen(c, s.Backlog); err != nil {
			return fmt.Errorf("listen on %s: %w", s.Local, err)
		}
	}
	if s.Remote != "" {
		sa, err := sockaddrOf(s.Family, s.Remote)
		if err != nil {
			return err
		}
		if err := unix.Connect(c, sa); err != nil {
			return fmt.Errorf("connect to %s: %w", s.Remote, err)
		}
	}
	return nil
}

func restoreTCP(c int, s *image.Socket) error {
	tcp := s.TCP
	set := func(what string, opt, v int) error {
		if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, opt, v); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := set("TCP_REPAIR", unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	for _, q := range []struct {
		queue int
		seq   uint32
	}{{tcpSendQueue, tcp.SendSeq}, {tcpRecvQueue, tcp.RecvSeq}} {
		if err := set("TCP_REPAIR_QUEUE", unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return err
		}
		if err := set("TCP_QUEUE_SEQ", unix.TCP_QUEUE_SEQ, int(int32(q.seq))); err != nil {
			return err
		}
	}
	local, err := sockaddrOf(s.Family, s.Local)
	if err != nil {
		return err
	}
	remote, err := sockaddrOf(s.Family, s.Remote)
	if err != nil {
		return err
	}
	if err := unix.Bind(c, local); err != nil {
		return fmt.Errorf("bind to %s: %w", s.Local, err)
	}
	// The repair connect sizes the segments (mss_cache) from the MSS
	// clamp it knows then, 536 without a SYN; TCP_REPAIR_OPTIONS below
	// only moves the clamp, so the connection would go on in 524-byte
	// segments. A user MSS during the connect makes it size them from the
	// saved clamp (at most 32767, the kernel's limit for TCP_MAXSEG); it is
	// unset again right after.
	userMSS := tcp.MSS >= 88
	if userMSS {
		if err := set("TCP_MAXSEG", unix.TCP_MAXSEG, int(min(tcp.MSS, 32767))); err != nil {
			return err
		}
	}
	if err := unix.Connect(c, remote); err != nil {
		return fmt.Errorf("connect (repair) to %s: %w", s.Remote, err)
	}
	if userMSS {
		if err := set("TCP_MAXSEG", unix.TCP_MAXSEG, 0); err != nil {
			return err
		}
	}
	var opts []byte
	le := binary.LittleEndian
	add := func(code, val uint32) {
		opts = le.AppendUint32(opts, code)
		opts = le.AppendUint32(opts, val)
	}
	add(unix.TCPOPT_MAXSEG, tcp.MSS)
	if tcp.SndWscale != 0 || tcp.RcvWscale != 0 {
		add(unix.TCPOPT_WINDOW, uint32(tcp.SndWscale)|uint32(tcp.RcvWscale)<<16)
	}
	if tcp.SackOK {
		add(unix.TCPOPT_SACK_PERMITTED, 0)
	}
	if tcp.Timestamps {
		add(unix.TCPOPT_TIMESTAMP, 0)
	}
	if err := setsockoptBytes(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if tcp.Timestamps {
		if err := set("TCP_TIMESTAMP", unix.TCP_TIMESTAMP, int(int32(tcp.Timestamp))); err != nil {
			return err
		}
	}
	sent := tcp.SendQueue[:len(tcp.SendQueue)-tcp.Unsent]
	for _, q := range []struct {
		queue int
		data  []byte
	}{{tcpRecvQueue, tcp.RecvQueue}, {tcpSendQueue, sent}} {
		if len(q.data) == 0 {
			continue
		}
		if err := set("TCP_REPAIR_QUEUE", unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return err
		}
		if err := sendAll(c, q.data); err != nil {
			return fmt.Errorf("refill queue %d: %w", q.queue, err)
		}
	}
	if err := set("TCP_REPAIR_QUEUE", unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return err
	}
	w := make([]byte, 20)
	for i, v := range []uint32{tcp.SndWl1, tcp.SndWnd, tcp.MaxWindow, tcp.RcvWnd, tcp.RcvWup} {
		le.PutUint32(w[4*i:], v)
	}
	if err := setsockoptBytes(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, w); err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	return nil
}

func sendAll(c int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.SendmsgN(c, data[:min(len(data), 1<<16)], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// finishSockets refills the queues, restores shutdown states, takes TCP
// sockets out of repair mode and drops the engine's copies.
func (r *restorer) finishSockets() error {
	sr := r.socks
	if sr == nil {
		return nil
	}
	defer r.dropSockets()
	for _, id := range sr.order {
		s := sr.byID[id]
		if err := r.refill(s); err != nil {
			return fmt.Errorf("socket:[%d]: refill its queue: %w", id, err)
		}
	}
	for _, id := range sr.order {
		s := sr.byID[id]
		if s.Family != unix.AF_UNIX || s.Type == unix.SOCK_DGRAM {
			continue
		}
		c := sr.copies[id]
		if w, ok := sr.writers[id]; ok {
			unix.Close(w)
			delete(sr.writers, id)
			continue
		}
		if s.Shutdown&2 != 0 {
			if err := unix.Shutdown(c, unix.SHUT_WR); err != nil {
				return fmt.Errorf("socket:[%d]: shutdown: %w", id, err)
			}
		}
		if s.Shutdown&1 != 0 && (s.Peer == 0 || sr.byID[s.Peer].Shutdown&2 == 0) {
			if err := unix.Shutdown(c, unix.SHUT_RD); err != nil {
				return fmt.Errorf("socket:[%d]: shutdown: %w", id, err)
			}
		}
	}
	for _, id := range sr.repair {
		s := sr.byID[id]
		c := sr.copies[id]
		if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
			return fmt.Errorf("socket:[%d]: leave tcp repair mode: %w", id, err)
		}
		if unsent := s.TCP.SendQueue[len(s.TCP.SendQueue)-s.TCP.Unsent:]; len(unsent) > 0 {
			if err := sendAll(c, unsent); err != nil {
				return fmt.Errorf("socket:[%d]: send the unsent bytes: %w", id, err)
			}
		}
		if !s.Opts.ReuseAddr {
			if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 0); err != nil {
				return err
			}
		}
	}
	sr.repair = nil
	return nil
}

// dropSockets closes the engine's copies of the restored sockets.
func (r *restorer) dropSockets() {
	sr := r.socks
	if sr == nil {
		return
	}
	for _, c := range sr.copies {
		unix.Close(c)
	}
	for _, w := range sr.writers {
		unix.Close(w)
	}
	sr.copies, sr.writers = nil, nil
}

// refill puts back what waited in the receive queue of s.
func (r *restorer) refill(s *image.Socket) error {
	if len(s.Queue) == 0 {
		return nil
	}
	sr := r.socks
	if s.Family != unix.AF_UNIX {
		return refillUDP(r.opts.Pid, s)
	}
	w, ok := sr.writers[s.ID]
	if !ok && s.Peer != 0 {
		w, ok = sr.copies[s.Peer]
	}
	if !ok {
		if s.Type != unix.SOCK_DGRAM || len(s.Name) == 0 {
			return fmt.Errorf("%w: %d queued messages and no peer to send them from", ErrUnsupported, len(s.Queue))
		}
		// Datagrams sent to a named socket: send them again from a new
		// unnamed socket of the task's namespaces (the senders' names are lost).
		return r.sendToName(s)
	}
	for _, m := range s.Queue {
		if s.Type == unix.SOCK_STREAM {
			if err := sendAll(w, m); err != nil {
				return err
			}
			continue
		}
		if err := unix.Sendmsg(w, m, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != nil {
			return err
		}
	}
	return nil
}

// sendToName sends the queued datagrams of s to its name from a temporary socket.
func (r *restorer) sendToName(s *image.Socket) error {
	h := r.socks.held[s.ID]
	name := string(s.Name)
	if s.Name[0] == '/' {
		name = fmt.Sprintf("/proc/%d/root%s", h.rt.hostPid, strings.TrimRight(name, "\x00"))
	}
	return sockdiag.InNetns(h.rt.hostPid, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrUnix{Name: name}
		if s.Name[0] == 0 {
			to.Name = "@" + name[1:]
		}
		for _, m := range s.Queue {
			if err := unix.Sendmsg(fd, m, nil, to, unix.MSG_DONTWAIT); err != nil {
				return err
			}
		}
		return nil
	})
}

// refillUDP sends the queued datagrams of a UDP socket again, from their
// original senders: a raw IPv4 socket of the namespace writes the packets
// with the saved source address and port.
func refillUDP(pid int, s *image.Socket) error {
	if s.Family != unix.AF_INET {
		return fmt.Errorf("%w: queued datagrams of an IPv6 UDP socket", ErrUnsupported)
	}
	dst, err := netip.ParseAddrPort(s.Local)
	if err != nil {
		return err
	}
	if dst.Addr().IsUnspecified() {
		dst = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port())
	}
	return sockdiag.InNetns(pid, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for i, m := range s.Queue {
			src, err := netip.ParseAddrPort(s.QueueFrom[i])
			if err != nil {
				return err
			}
			if !src.Addr().Is4() {
				return errors.New("IPv4 socket with an IPv6 sender")
			}
			pkt := make([]byte, 28+len(m))
			be := binary.BigEndian
			pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
			be.PutUint16(pkt[2:], uint16(len(pkt)))
			sa, da := src.Addr().As4(), dst.Addr().As4()
			copy(pkt[12:], sa[:])
			copy(pkt[16:], da[:])
			be.PutUint16(pkt[20:], src.Port())
			be.PutUint16(pkt[22:], dst.Port())
			be.PutUint16(pkt[24:], uint16(8+len(m)))
			copy(pkt[28:], m)
			if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: da}); err != nil {
				return fmt.Errorf("resend datagram from %s: %w", src, err)
			}
		}
		return nil
	})
}

// setSockopts sets the saved options on a new socket (before bind).
func setSockopts(c int, s *image.Socket) error {
	o := &s.Opts
	var errs []error
	seti := func(what string, level, opt, v int) {
		if err := unix.SetsockoptInt(c, level, opt, v); err != nil {
			errs = append(errs, fmt.Errorf("%s %d: %w", what, v, err))
		}
	}
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	for _, x := range []struct {
		what string
		opt  int
		on   bool
	}{{"SO_REUSEADDR", unix.SO_REUSEADDR, o.ReuseAddr}, {"SO_REUSEPORT", unix.SO_REUSEPORT, o.ReusePort},
		{"SO_KEEPALIVE", unix.SO_KEEPALIVE, o.KeepAlive}, {"SO_BROADCAST", unix.SO_BROADCAST, o.Broadcast},
		{"SO_PASSCRED", unix.SO_PASSCRED, o.PassCred}, {"SO_PASSSEC", unix.SO_PASSSEC, o.PassSec},
		{"SO_OOBINLINE", unix.SO_OOBINLINE, o.OOBInline}} {
		if x.on {
			seti(x.what, unix.SOL_SOCKET, x.opt, 1)
		}
	}
	// The kernel reports twice the size asked for. Above net.core.[rw]mem_max
	// the *FORCE variants are needed; they take CAP_NET_ADMIN, which the
	// engine has (CAP_SYS_RESOURCE is not needed for them).
	for _, x := range []struct {
		what       string
		opt, force int
		v          int
	}{{"SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, o.SndBuf}, {"SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, o.RcvBuf}} {
		if x.v <= 0 {
			continue
		}
		if cur, err := unix.GetsockoptInt(c, unix.SOL_SOCKET, x.opt); err == nil && cur == x.v {
			continue
		}
		if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, x.force, x.v/2); err != nil {
			seti(x.what, unix.SOL_SOCKET, x.opt, x.v/2)
		}
	}
	if o.RcvLowat > 1 {
		seti("SO_RCVLOWAT", unix.SOL_SOCKET, unix.SO_RCVLOWAT, o.RcvLowat)
	}
	if o.Priority != 0 {
		seti("SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, o.Priority)
	}
	if o.Mark != 0 {
		seti("SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, o.Mark)
	}
	if o.PeekOff > 0 {
		seti("SO_PEEK_OFF", unix.SOL_SOCKET, unix.SO_PEEK_OFF, o.PeekOff)
	}
	if o.LingerOn {
		if err := unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(o.Linger)}); err != nil {
			errs = append(errs, fmt.Errorf("SO_LINGER: %w", err))
		}
	}
	for _, x := range []struct {
		opt int
		us  int64
	}{{unix.SO_RCVTIMEO, o.RcvTimeo}, {unix.SO_SNDTIMEO, o.SndTimeo}} {
		if x.us != 0 {
			tv := unix.NsecToTimeval(x.us * 1000)
			if err := unix.SetsockoptTimeval(c, unix.SOL_SOCKET, x.opt, &tv); err != nil {
				errs = append(errs, err)
			}
		}
	}
	switch s.Family {
	case unix.AF_INET:
		if o.TOS != 0 {
			seti("IP_TOS", unix.IPPROTO_IP, unix.IP_TOS, o.TOS)
		}
		if o.TTL != 0 && o.TTL != 64 {
			seti("IP_TTL", unix.IPPROTO_IP, unix.IP_TTL, o.TTL)
		}
	case unix.AF_INET6:
		seti("IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b(o.V6Only))
		if o.TOS != 0 {
			seti("IPV6_TCLASS", unix.IPPROTO_IPV6, unix.IPV6_TCLASS, o.TOS)
		}
	}
	if s.Protocol == unix.IPPROTO_TCP {
		if o.NoDelay {
			seti("TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		}
		if o.Cork {
			seti("TCP_CORK", unix.IPPROTO_TCP, unix.TCP_CORK, 1)
		}
		for _, x := range []struct {
			what string
			opt  int
			v    int
		}{{"TCP_KEEPIDLE", unix.TCP_KEEPIDLE, o.KeepIdle}, {"TCP_KEEPINTVL", unix.TCP_KEEPINTVL, o.KeepIntvl},
			{"TCP_KEEPCNT", unix.TCP_KEEPCNT, o.KeepCnt}, {"TCP_USER_TIMEOUT", unix.TCP_USER_TIMEOUT, o.UserTimeout}} {
			if x.v > 0 {
				seti(x.what, unix.IPPROTO_TCP, x.opt, x.v)
			}
		}
		if o.Congestion != "" {
			if err := unix.SetsockoptString(c, unix.IPPROTO_TCP, unix.TCP_CONGESTION, o.Congestion); err != nil {
				errs = append(errs, fmt.Errorf("TCP_CONGESTION %s: %w", o.Congestion, err))
			}
		}
	}
	return errors.Join(errs...)
}
