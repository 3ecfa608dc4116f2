package engine

// TCP and UDP sockets. A listening TCP socket is saved as its address,
// backlog and options. An established connection is saved only with
// DumpOptions.TCPEstablished (runc's --tcp-established), through TCP_REPAIR:
// in repair mode the kernel tells the sequence numbers, lets the engine peek
// at the send queue (sent but unacknowledged bytes, then unsent ones) and the
// receive queue, the negotiated options (MSS, window scaling, SACK,
// timestamps) and the window state; at restore a new socket in repair mode is
// given all of it, bound and "connected" without a handshake, its queues
// refilled, and repair mode is left only once every socket of the tree is
// back, so that neither end of a connection inside the tree probes a peer
// that does not exist yet. The dumped sockets stay in repair mode when the
// tree is killed after the dump, so that closing them sends no FIN or RST.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/sockdiag"
)

// TCP_REPAIR_QUEUE values.
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// tcp_info option bits.
const (
	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4
)

func getsockoptBytes(fd, level, opt, size int) ([]byte, error) {
	buf := make([]byte, size)
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return nil, e
	}
	return buf[:l], nil
}

func setsockoptBytes(fd, level, opt int, b []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func (ds *sockDumper) inetDiag(family int) (map[uint64]*sockdiag.Inet, error) {
	return ds.diag.InetSockets(family, unix.IPPROTO_TCP)
}

// dumpMPTCP records a Multipath TCP socket: a listening or unconnected one
// (TCP_REPAIR does not exist for MPTCP, so connections are refused). Its
// accept queue is checked with poll, as inet_diag lists its TCP subflows,
// not the MPTCP socket; the backlog, which only sock_diag shows, is restored
// as SOMAXCONN (the kernel caps any backlog to net.core.somaxconn anyway).
func (ds *sockDumper) dumpMPTCP(ref *sockRef, s *image.Socket) error {
	c := ref.copy
	if sa, err := unix.Getsockname(c); err == nil {
		s.Local = inetAddr(sa)
	}
	listening, err := unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("SO_ACCEPTCONN: %w", err)
	}
	if _, err := unix.Getpeername(c); err == nil {
		return fmt.Errorf("%w: established MPTCP connection on %s (no TCP_REPAIR for MPTCP)", ErrUnsupported, s.Local)
	}
	if listening != 1 {
		return nil
	}
	p := []unix.PollFd{{Fd: int32(c), Events: unix.POLLIN}}
	if n, _ := unix.Poll(p, 0); n > 0 && p[0].Revents&unix.POLLIN != 0 {
		return fmt.Errorf("%w: MPTCP listener on %s with connections not accepted yet", ErrUnsupported, s.Local)
	}
	s.Listening, s.Backlog = true, unix.SOMAXCONN
	return nil
}

func (ds *sockDumper) dumpTCP(ref *sockRef, s *image.Socket) error {
	c := ref.copy
	info, err := getsockoptBytes(c, unix.IPPROTO_TCP, unix.TCP_INFO, 232)
	if err != nil || len(info) < 8 {
		return fmt.Errorf("TCP_INFO: %v", err)
	}
	state := int(info[0])
	if sa, err := unix.Getsockname(c); err == nil {
		s.Local = inetAddr(sa)
	}
	switch state {
	case tcpClose:
		return nil
	case tcpListen:
		diag, err := ds.inetDiag(s.Family)
		if err != nil {
			return err
		}
		di := diag[ref.ino]
		if di == nil {
			return fmt.Errorf("sock_diag does not know the listening socket")
		}
		if di.Rqueue > 0 {
			return fmt.Errorf("%w: listening on %s with %d connections not accepted yet", ErrUnsupported, s.Local, di.Rqueue)
		}
		s.Listening, s.Backlog = true, int(di.Wqueue)
		return nil
	case tcpEstablished:
	default:
		return fmt.Errorf("%w: TCP socket %s in state %s (only listening, established and unconnected ones are)", ErrUnsupported, s.Local, tcpStateNames[state])
	}
	sa, err := unix.Getpeername(c)
	if err != nil {
		return fmt.Errorf("getpeername: %w", err)
	}
	s.Remote = inetAddr(sa)
	if !ds.d.opts.TCPEstablished {
		return fmt.Errorf("%w: established TCP connection %s -> %s; checkpoint with --tcp-established to save it", ErrUnsupported, s.Local, s.Remote)
	}
	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("enter tcp repair mode: %w", err)
	}
	ds.st.repaired = append(ds.st.repaired, c)
	tcp := &image.TCPState{State: state}
	s.TCP = tcp
	opts := info[5]
	tcp.Timestamps = opts&tcpiOptTimestamps != 0
	tcp.SackOK = opts&tcpiOptSack != 0
	if opts&tcpiOptWscale != 0 {
		tcp.SndWscale, tcp.RcvWscale = int(info[6]&0xf), int(info[6]>>4)
	}
	// Send queue: sent-but-unacknowledged bytes, then unsent ones.
	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	wseq, err := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return fmt.Errorf("send TCP_QUEUE_SEQ: %w", err)
	}
	outq, err := unix.IoctlGetInt(c, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("SIOCOUTQ: %w", err)
	}
	if tcp.Unsent, err = unix.IoctlGetInt(c, unix.SIOCOUTQNSD); err != nil {
		return fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	if tcp.SendQueue, err = peekTCP(c, outq); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	tcp.SendSeq = uint32(wseq) - uint32(outq)
	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	rseq, err := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return fmt.Errorf("receive TCP_QUEUE_SEQ: %w", err)
	}
	inq, err := unix.IoctlGetInt(c, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("SIOCINQ: %w", err)
	}
	if tcp.RecvQueue, err = peekTCP(c, inq); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	tcp.RecvSeq = uint32(rseq) - uint32(inq)
	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	mss, err := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("TCP_MAXSEG: %w", err)
	}
	tcp.MSS = uint32(mss)
	if tcp.Timestamps {
		ts, err := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
		tcp.Timestamp = uint32(ts)
	}
	w, err := getsockoptBytes(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, 20)
	if err != nil || len(w) != 20 {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %v", err)
	}
	le := binary.LittleEndian
	tcp.SndWl1, tcp.SndWnd, tcp.MaxWindow, tcp.RcvWnd, tcp.RcvWup = le.Uint32(w), le.Uint32(w[4:]), le.Uint32(w[8:]), le.Uint32(w[12:]), le.Uint32(w[16:])
	return nil
}

// peekTCP peeks at exactly n bytes of the queue selected by TCP_REPAIR_QUEUE.
func peekTCP(c, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(c, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("peeked %d bytes, %d are queued", got, n)
	}
	return buf[:n], nil
}

func (ds *sockDumper) dumpUDP(ref *sockRef, s *image.Socket) error {
	c := ref.copy
	if sa, err := unix.Getsockname(c); err == nil {
		s.Local = inetAddr(sa)
	}
	if sa, err := unix.Getpeername(c); err == nil {
		s.Remote = inetAddr(sa)
	}
	old, err := unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	buf := make([]byte, 1<<16)
	for {
		n, from, err := unix.Recvfrom(c, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return fmt.Errorf("receive queue: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("%w: an empty datagram is queued", ErrUnsupported)
		}
		src := inetAddr(from)
		if src == "" {
			return fmt.Errorf("queued datagram without a sender address")
		}
		s.Queue = append(s.Queue, append([]byte(nil), buf[:n]...))
		s.QueueFrom = append(s.QueueFrom, src)
	}
	return nil
}
