package engine

// Sockets, dump side. A socket fd is recorded as FdSocket with the socket's
// inode; the socket objects themselves are described once, in sockets.json,
// after every task's fds are known (so that peers, listeners and pending
// connections can be matched within the tree). The engine reads a socket
// through its own copy of the fd (pidfd_getfd): options with getsockopt,
// queued bytes with MSG_PEEK (and SO_PEEK_OFF to walk past the first
// message), TCP state in repair mode (fd_tcp_linux.go); the relations between
// unix sockets come from sock_diag, asked inside the tree's network namespace.

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/sockdiag"
)

// sockRef is the first fd of the tree found for a socket.
type sockRef struct {
	pid, nspid, fd int // host pid, pid in the namespace, fd number
	ino            uint64
	copy           int // the engine's own fd of the socket (pidfd_getfd)
}

func (s *sockRef) where() string {
	return fmt.Sprintf("pid %d: fd %d: socket:[%d]", s.nspid, s.fd, s.ino)
}

// sockTable collects the sockets of a dump.
type sockTable struct {
	refs  map[uint64]*sockRef
	order []uint64
	// repaired are engine copies of TCP sockets put in repair mode.
	repaired []int
}

// dumpSocket records a socket fd; the socket itself is described by dumpSockets.
func (ft *fileTable) dumpSocket(t *dtask, fd int, out *image.Fd, st *unix.Stat_t) (*image.Fd, error) {
	if ft.socks == nil {
		ft.socks = &sockTable{refs: map[uint64]*sockRef{}}
	}
	out.Kind, out.Socket, out.Pos = image.FdSocket, st.Ino, 0
	if _, ok := ft.socks.refs[st.Ino]; !ok {
		c, err := getfd(t.pid, fd)
		if err != nil {
			return nil, fmt.Errorf("socket:[%d]: %w", st.Ino, err)
		}
		ft.socks.refs[st.Ino] = &sockRef{pid: t.pid, nspid: t.nspid, fd: fd, ino: st.Ino, copy: c}
		ft.socks.order = append(ft.socks.order, st.Ino)
	}
	return out, nil
}

// getfd returns the engine's own copy of fd of pid.
func getfd(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	c, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return c, nil
}

// netnsIno returns the inode of the network namespace of pid ("self" too).
func netnsIno(pid string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// dumpSockets describes every socket of the tree and the tree's network
// namespace, and writes sockets.json when there is anything to say.
func (d *dumper) dumpSockets() error {
	root := d.tasks[0]
	rec := image.Sockets{Header: image.NewHeader()}
	own, err := netnsIno("self")
	if err != nil {
		return err
	}
	theirs, err := netnsIno(fmt.Sprint(root.pid))
	if err != nil {
		return err
	}
	if own != theirs {
		if rec.Netns, err = dumpNetns(root.pid); err != nil {
			return fmt.Errorf("network namespace: %w", err)
		}
	}
	st := d.files.socks
	if st != nil && len(st.order) > 0 {
		diag, err := sockdiag.Open(root.pid)
		if err != nil {
			return err
		}
		defer diag.Close()
		ds := &sockDumper{d: d, st: st, diag: diag}
		for _, ino := range st.order {
			ref := st.refs[ino]
			if n, err := netnsIno(fmt.Sprint(ref.pid)); err != nil || n != theirs {
				return fmt.Errorf("%s: %w: the socket's process is in another network namespace than the root task", ref.where(), ErrUnsupported)
			}
			s, err := ds.dump(ref)
			if err != nil {
				return fmt.Errorf("%s%s: %w", ref.where(), socketKind(ref.pid, ref.fd), err)
			}
			rec.Sockets = append(rec.Sockets, *s)
		}
		if err := ds.link(rec.Sockets); err != nil {
			return err
		}
	}
	if len(rec.Sockets) == 0 && rec.Netns == nil {
		return nil
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("sockets: %w", err)
	}
	if err := image.WriteFile(d.opts.ImageDir, image.SocketsFile, &rec); err != nil {
		return fmt.Errorf("write %s: %w", image.SocketsFile, err)
	}
	d.result.RecordFiles = append(d.result.RecordFiles, image.SocketsFile)
	return nil
}

// releaseSockets takes TCP sockets out of repair mode when the tree goes on
// running (a failed dump, or LeaveRunning). When the tree is killed they stay
// in repair mode, so that closing them sends nothing to their peers (the
// restored connection takes over).
func (ft *fileTable) releaseSockets(kill bool) error {
	if ft.socks == nil {
		return nil
	}
	var errs []error
	if !kill {
		for _, c := range ft.socks.repaired {
			if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
				errs = append(errs, err)
			}
			if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
				errs = append(errs, fmt.Errorf("leave tcp repair mode: %w", err))
			}
		}
	}
	ft.socks.repaired = nil
	return errors.Join(errs...)
}

// closeSockets closes the engine's copies (after the tree was released).
func (ft *fileTable) closeSockets() {
	if ft.socks == nil {
		return
	}
	for _, ref := range ft.socks.refs {
		if ref.copy >= 0 {
			unix.Close(ref.copy)
			ref.copy = -1
		}
	}
}

type sockDumper struct {
	d    *dumper
	st   *sockTable
	diag *sockdiag.Conn
	unix map[uint64]*sockdiag.UnixInfo
	// pendingIn maps a client socket to the listener whose queue holds its connection.
	pendingIn map[uint64]uint64
}

func (ds *sockDumper) dump(ref *sockRef) (*image.Socket, error) {
	c := ref.copy
	s := &image.Socket{ID: ref.ino}
	var err error
	if s.Family, err = unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, err
	}
	if s.Type, err = unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return nil, err
	}
	if s.Protocol, err = unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return nil, err
	}
	switch s.Family {
	case unix.AF_UNIX:
		if s.Type != unix.SOCK_STREAM && s.Type != unix.SOCK_DGRAM && s.Type != unix.SOCK_SEQPACKET {
			return nil, fmt.Errorf("%w: unix socket type %d", ErrUnsupported, s.Type)
		}
		err = ds.dumpUnix(ref, s)
	case unix.AF_INET, unix.AF_INET6:
		switch {
		case s.Type == unix.SOCK_STREAM && s.Protocol == unix.IPPROTO_TCP:
			err = ds.dumpTCP(ref, s)
		case s.Type == unix.SOCK_STREAM && s.Protocol == unix.IPPROTO_MPTCP:
			// Go (1.24+) listens with MPTCP by default where the kernel has it.
			err = ds.dumpMPTCP(ref, s)
		case s.Type == unix.SOCK_DGRAM && s.Protocol == unix.IPPROTO_UDP:
			err = ds.dumpUDP(ref, s)
		default:
			return nil, fmt.Errorf("%w: inet socket type %d protocol %d (only TCP and UDP are)", ErrUnsupported, s.Type, s.Protocol)
		}
	default:
		name, ok := map[int]string{unix.AF_NETLINK: "netlink", unix.AF_PACKET: "packet", unix.AF_VSOCK: "vsock", unix.AF_ALG: "AF_ALG"}[s.Family]
		if !ok {
			name = fmt.Sprintf("family %d", s.Family)
		}
		return nil, fmt.Errorf("%s sockets are %w", name, ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	if err := dumpSockopts(c, s); err != nil {
		return nil, fmt.Errorf("socket options: %w", err)
	}
	return s, nil
}

func (ds *sockDumper) dumpUnix(ref *sockRef, s *image.Socket) error {
	if ds.unix == nil {
		var err error
		if ds.unix, err = ds.diag.UnixSockets(); err != nil {
			return err
		}
		ds.pendingIn = map[uint64]uint64{}
		for ino, u := range ds.unix {
			if u.State == tcpListen {
				for _, c := range u.Icons {
					ds.pendingIn[c] = ino
				}
			}
		}
	}
	u := ds.unix[ref.ino]
	if u == nil {
		return fmt.Errorf("sock_diag does not know the socket")
	}
	s.Name = u.Name
	if len(s.Name) > 0 && s.Name[0] != 0 && s.Name[0] != '/' {
		return fmt.Errorf("%w: unix socket bound to the relative path %q", ErrUnsupported, s.Name)
	}
	s.Shutdown = u.Shutdown
	switch u.State {
	case tcpListen:
		s.Listening, s.Backlog = true, int(u.Wqueue)
		if len(s.Name) == 0 {
			return fmt.Errorf("%w: listening unix socket without a name", ErrUnsupported)
		}
		// Pending are filled by link, once every socket of the tree is known.
		return nil
	case tcpEstablished:
		s.Connected = true
	}
	if s.Connected {
		if sa, err := unix.Getpeername(ref.copy); err == nil {
			if ua, ok := sa.(*unix.SockaddrUnix); ok && ua.Name != "" {
				s.PeerName = unixNameBytes(ua.Name)
			}
		}
		s.Peer = u.Peer
		if l, ok := ds.pendingIn[ref.ino]; ok {
			// A connection waiting in a listener's queue: the peer is the
			// embryo socket the listener will hand out on accept.
			s.Peer = 0
			if ds.st.refs[l] == nil {
				return fmt.Errorf("%w: connection pending on a listening socket outside the tree", ErrUnsupported)
			}
			if n, err := unix.IoctlGetInt(ref.copy, unix.SIOCOUTQ); err == nil && n > 0 {
				return fmt.Errorf("%w: %d bytes sent on a connection that the listener has not accepted yet", ErrUnsupported, n)
			}
		}
	}
	q, err := peekQueue(ref.copy, s.Type == unix.SOCK_STREAM)
	if err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	s.Queue = q
	return nil
}

// link resolves the relations between the unix sockets of the tree: peers,
// the listener an accepted connection came from, pending connections.
func (ds *sockDumper) link(socks []image.Socket) error {
	byID := map[uint64]*image.Socket{}
	for i := range socks {
		byID[socks[i].ID] = &socks[i]
	}
	listeners := map[string]*image.Socket{}
	for i := range socks {
		s := &socks[i]
		if s.Family == unix.AF_UNIX && s.Listening {
			listeners[string(s.Name)] = s
			for _, c := range ds.unix[s.ID].Icons {
				if byID[c] == nil {
					return fmt.Errorf("socket:[%d]: %w: a connection from outside the tree waits in the listener's queue", s.ID, ErrUnsupported)
				}
				s.Pending = append(s.Pending, c)
			}
		}
	}
	for i := range socks {
		s := &socks[i]
		if s.Family != unix.AF_UNIX || !s.Connected {
			continue
		}
		ref := ds.st.refs[s.ID]
		if _, pending := ds.pendingIn[s.ID]; pending {
			continue
		}
		if s.Peer != 0 && byID[s.Peer] == nil {
			// The peer is not in the tree: a closed peer (its queue keeps
			// what it sent) is fine; a live one is outside the tree.
			if _, known := ds.unix[s.Peer]; !known || s.Shutdown == 3 && s.Type != unix.SOCK_DGRAM {
				s.Peer, s.PeerName = 0, nil
				continue
			}
			if !ds.d.opts.ExtUnixSockets {
				return fmt.Errorf("%s%s: %w: connected to socket:[%d] (%q) outside the tree; checkpoint with --ext-unix-sk to reconnect it by name at restore", ref.where(), socketKind(ref.pid, ref.fd), ErrUnsupported, s.Peer, s.PeerName)
			}
			if len(s.PeerName) == 0 {
				return fmt.Errorf("%s: %w: connected to the unnamed socket:[%d] outside the tree, which cannot be reconnected", ref.where(), ErrUnsupported, s.Peer)
			}
			s.Peer = 0
			continue
		}
		if s.Type != unix.SOCK_DGRAM && s.Peer != 0 && len(s.Name) > 0 {
			if l := listeners[string(s.Name)]; l != nil && l.Type == s.Type && l.ID != s.ID {
				s.Listener = l.ID
			}
		}
	}
	return nil
}

// peekQueue reads what waits in a socket's receive queue without taking it
// out: MSG_PEEK, with SO_PEEK_OFF moved along so that each call returns the
// next message (datagrams) or the next bytes (streams).
func peekQueue(c int, stream bool) ([][]byte, error) {
	old, err := unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	var out [][]byte
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*253))
	var all []byte
	for {
		n, oobn, _, _, err := unix.Recvmsg(c, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := checkRights(oob[:oobn]); err != nil {
			return nil, err
		}
		if n == 0 {
			if stream {
				break // end of stream
			}
			return nil, fmt.Errorf("%w: an empty datagram is queued", ErrUnsupported)
		}
		if stream {
			all = append(all, buf[:n]...)
		} else {
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
	if stream && len(all) > 0 {
		out = [][]byte{all}
	}
	return out, nil
}

// checkRights refuses queued messages that carry file descriptors (which
// MSG_PEEK has just installed in the engine: they are closed).
func checkRights(oob []byte) error {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_RIGHTS {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("%w: file descriptors in flight (SCM_RIGHTS) in the receive queue", ErrUnsupported)
		}
	}
	return nil
}

// unixNameBytes turns a Go unix address name ("@x" for abstract) into sun_path bytes.
func unixNameBytes(name string) []byte {
	if name[0] == '@' {
		return append([]byte{0}, name[1:]...)
	}
	return []byte(name)
}

// Kernel socket states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

var tcpStateNames = map[int]string{1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1", 5: "fin-wait2",
	6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen", 11: "closing", 12: "new-syn-recv"}

// dumpSockopts saves the socket options that matter for behaviour.
func dumpSockopts(c int, s *image.Socket) error {
	o := &s.Opts
	b := func(level, opt int) bool {
		v, err := unix.GetsockoptInt(c, level, opt)
		return err == nil && v != 0
	}
	i := func(level, opt int) int {
		v, _ := unix.GetsockoptInt(c, level, opt)
		return v
	}
	o.ReuseAddr = b(unix.SOL_SOCKET, unix.SO_REUSEADDR)
	o.ReusePort = b(unix.SOL_SOCKET, unix.SO_REUSEPORT)
	o.KeepAlive = b(unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	o.Broadcast = b(unix.SOL_SOCKET, unix.SO_BROADCAST)
	o.PassCred = b(unix.SOL_SOCKET, unix.SO_PASSCRED)
	o.PassSec = b(unix.SOL_SOCKET, unix.SO_PASSSEC)
	o.OOBInline = b(unix.SOL_SOCKET, unix.SO_OOBINLINE)
	o.RcvBuf = i(unix.SOL_SOCKET, unix.SO_RCVBUF)
	o.SndBuf = i(unix.SOL_SOCKET, unix.SO_SNDBUF)
	o.RcvLowat = i(unix.SOL_SOCKET, unix.SO_RCVLOWAT)
	o.Priority = i(unix.SOL_SOCKET, unix.SO_PRIORITY)
	o.Mark = i(unix.SOL_SOCKET, unix.SO_MARK)
	o.PeekOff = i(unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if l, err := unix.GetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER); err == nil {
		o.LingerOn, o.Linger = l.Onoff != 0, int(l.Linger)
	}
	if tv, err := unix.GetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO); err == nil {
		o.RcvTimeo = tv.Sec*1e6 + tv.Usec
	}
	if tv, err := unix.GetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_SNDTIMEO); err == nil {
		o.SndTimeo = tv.Sec*1e6 + tv.Usec
	}
	switch s.Family {
	case unix.AF_INET:
		o.TOS = i(unix.IPPROTO_IP, unix.IP_TOS)
		o.TTL = i(unix.IPPROTO_IP, unix.IP_TTL)
	case unix.AF_INET6:
		o.V6Only = b(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		o.TOS = i(unix.IPPROTO_IPV6, unix.IPV6_TCLASS)
		o.TTL = i(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
	}
	if s.Protocol == unix.IPPROTO_TCP {
		o.NoDelay = b(unix.IPPROTO_TCP, unix.TCP_NODELAY)
		o.Cork = b(unix.IPPROTO_TCP, unix.TCP_CORK)
		o.KeepIdle = i(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		o.KeepIntvl = i(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		o.KeepCnt = i(unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		o.UserTimeout = i(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if cc, err := unix.GetsockoptString(c, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err == nil {
			o.Congestion = cc
		}
	}
	return nil
}

// inetAddr converts a socket address to "ip:port" ("" for none or port 0 and any address).
func inetAddr(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ap := netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		if a.Port == 0 && ap.Addr().IsUnspecified() {
			return ""
		}
		return ap.String()
	case *unix.SockaddrInet6:
		ap := netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
		if a.Port == 0 && ap.Addr().IsUnspecified() {
			return ""
		}
		return ap.String()
	}
	return ""
}

// sockaddrOf is the reverse of inetAddr for a socket of family.
func sockaddrOf(family int, s string) (unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	if family == unix.AF_INET {
		if !ap.Addr().Is4() {
			return nil, fmt.Errorf("address %s in an IPv4 socket", s)
		}
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, nil
}
