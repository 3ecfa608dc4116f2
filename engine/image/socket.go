package image

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// SocketsFile holds the Sockets record: every socket the tree's fds refer
// to, and what the engine saved of the network namespace. It is absent when
// the tree holds no socket and runs in the engine's own network namespace.
const SocketsFile = "sockets.json"

// FdSocket is the kind of an fd that refers to Sockets.Sockets[i] with
// ID == Fd.Socket.
const FdSocket = "socket"

// Socket families and types, as in <sys/socket.h> (x86-64).
const (
	AfUnix  = 1
	AfInet  = 2
	AfInet6 = 10

	SockStream    = 1
	SockDgram     = 2
	SockSeqpacket = 5
)

// Sockets is the record of every socket of the tree.
type Sockets struct {
	Header
	Sockets []Socket `json:"sockets,omitempty"`
	// Netns describes the tree's network namespace when it was not the
	// engine's own; restore rebuilds it inside the namespace the runtime made.
	Netns *Netns `json:"netns,omitempty"`
}

// Netns is what the engine saves of a network namespace: its loopback.
type Netns struct {
	LoopbackUp bool `json:"loopback_up"`
	// LoopbackAddrs are the addresses of lo as "addr/prefix", besides the
	// 127.0.0.1/8 and ::1/128 the kernel adds when lo comes up.
	LoopbackAddrs []string `json:"loopback_addrs,omitempty"`
}

// Socket is one socket object (shared by every fd that refers to it).
type Socket struct {
	// ID is the socket inode at dump time.
	ID       uint64 `json:"id"`
	Family   int    `json:"family"`
	Type     int    `json:"type"`
	Protocol int    `json:"protocol,omitempty"`

	// Name is the bound unix address (sun_path bytes, a leading NUL for the
	// abstract namespace), empty when unbound.
	Name []byte `json:"name,omitempty"`
	// Peer is the ID of the unix socket this one is connected to, when it is
	// in the tree; PeerName is the address of the peer (whether in the tree
	// or not).
	Peer     uint64 `json:"peer,omitempty"`
	PeerName []byte `json:"peer_name,omitempty"`
	// Listener is the ID of the listening unix socket this connection was
	// accepted from (the server end), when that listener is in the tree.
	Listener uint64 `json:"listener,omitempty"`
	// Pending are the IDs of the client sockets whose connections wait in
	// this listener's queue, in queue order.
	Pending []uint64 `json:"pending,omitempty"`
	// Connected says a unix socket was connected (to Peer, to PeerName, or
	// to a peer that closed since: then Peer and PeerName are empty).
	Connected bool `json:"connected,omitempty"`
	// Shutdown are the kernel's sk_shutdown bits (1 receive, 2 send).
	Shutdown int `json:"shutdown,omitempty"`

	// Local and Remote are the inet addresses ("ip:port", "[ip6]:port").
	Local  string `json:"local,omitempty"`
	Remote string `json:"remote,omitempty"`

	Listening bool `json:"listening,omitempty"`
	Backlog   int  `json:"backlog,omitempty"`

	// Queue is what was waiting in the receive queue: one element per
	// message for datagram and seqpacket sockets, a single element for a
	// stream. For TCP, TCP.RecvQueue and TCP.SendQueue are used instead.
	Queue [][]byte `json:"queue,omitempty"`
	// QueueFrom are the sender addresses of the datagrams of a UDP Queue.
	QueueFrom []string `json:"queue_from,omitempty"`

	Opts SocketOpts `json:"opts"`
	TCP  *TCPState  `json:"tcp,omitempty"`
}

// SocketOpts are the socket options the engine saves (the values getsockopt
// returned; buffer sizes are the doubled values the kernel reports).
type SocketOpts struct {
	ReuseAddr bool `json:"reuseaddr,omitempty"`
	ReusePort bool `json:"reuseport,omitempty"`
	KeepAlive bool `json:"keepalive,omitempty"`
	Broadcast bool `json:"broadcast,omitempty"`
	PassCred  bool `json:"passcred,omitempty"`
	PassSec   bool `json:"passsec,omitempty"`
	OOBInline bool `json:"oobinline,omitempty"`
	RcvBuf    int  `json:"rcvbuf,omitempty"`
	SndBuf    int  `json:"sndbuf,omitempty"`
	RcvLowat  int  `json:"rcvlowat,omitempty"`
	Priority  int  `json:"priority,omitempty"`
	Mark      int  `json:"mark,omitempty"`
	// PeekOff is SO_PEEK_OFF (-1 when unused).
	PeekOff int `json:"peek_off,omitempty"`
	// Linger is SO_LINGER: LingerOn and the time in seconds.
	LingerOn bool  `json:"linger_on,omitempty"`
	Linger   int   `json:"linger,omitempty"`
	RcvTimeo int64 `json:"rcvtimeo_us,omitempty"`
	SndTimeo int64 `json:"sndtimeo_us,omitempty"`
	// V6Only is IPV6_V6ONLY (set before bind).
	V6Only bool `json:"v6only,omitempty"`
	TOS    int  `json:"tos,omitempty"`
	TTL    int  `json:"ttl,omitempty"`

	NoDelay     bool   `json:"nodelay,omitempty"`
	Cork        bool   `json:"cork,omitempty"`
	KeepIdle    int    `json:"keepidle,omitempty"`
	KeepIntvl   int    `json:"keepintvl,omitempty"`
	KeepCnt     int    `json:"keepcnt,omitempty"`
	UserTimeout int    `json:"user_timeout,omitempty"`
	Congestion  string `json:"congestion,omitempty"`
}

// TCPState is what TCP_REPAIR tells of an established connection.
type TCPState struct {
	// State is the TCP state (1 established; others refused at dump).
	State int `json:"state"`
	// SendSeq is the sequence number of the first byte of SendQueue (snd_una);
	// RecvSeq that of the first byte of RecvQueue.
	SendSeq uint32 `json:"send_seq"`
	RecvSeq uint32 `json:"recv_seq"`
	// SendQueue holds the bytes sent but not acknowledged and the bytes not
	// sent yet; Unsent is how many of them (at its end) were never sent.
	SendQueue []byte `json:"send_queue,omitempty"`
	Unsent    int    `json:"unsent,omitempty"`
	RecvQueue []byte `json:"recv_queue,omitempty"`

	MSS        uint32 `json:"mss"`
	SndWscale  int    `json:"snd_wscale,omitempty"`
	RcvWscale  int    `json:"rcv_wscale,omitempty"`
	Timestamps bool   `json:"timestamps,omitempty"`
	SackOK     bool   `json:"sack_ok,omitempty"`
	// Timestamp is TCP_TIMESTAMP (the current tsval).
	Timestamp uint32 `json:"timestamp,omitempty"`
	// Window is struct tcp_repair_window.
	SndWl1    uint32 `json:"snd_wl1"`
	SndWnd    uint32 `json:"snd_wnd"`
	MaxWindow uint32 `json:"max_window"`
	RcvWnd    uint32 `json:"rcv_wnd"`
	RcvWup    uint32 `json:"rcv_wup"`
}

// Validate checks a Sockets record.
func (s *Sockets) Validate() error {
	ids := map[uint64]bool{}
	for i := range s.Sockets {
		k := &s.Sockets[i]
		if k.ID == 0 || ids[k.ID] {
			return bad("socket %d: id invalid or repeated", k.ID)
		}
		ids[k.ID] = true
		switch k.Family {
		case AfUnix:
			if k.Type != SockStream && k.Type != SockDgram && k.Type != SockSeqpacket {
				return bad("unix socket %d: type %d", k.ID, k.Type)
			}
			if len(k.Name) > 108 || len(k.PeerName) > 108 {
				return bad("unix socket %d: address longer than sun_path", k.ID)
			}
		case AfInet, AfInet6:
			if k.Type != SockStream && k.Type != SockDgram {
				return bad("inet socket %d: type %d", k.ID, k.Type)
			}
			for _, a := range []string{k.Local, k.Remote} {
				if a == "" {
					continue
				}
				if _, err := netip.ParseAddrPort(a); err != nil {
					return bad("inet socket %d: address %q", k.ID, a)
				}
			}
			if k.TCP != nil && (k.Type != SockStream || k.Local == "" || k.Remote == "" || k.TCP.Unsent < 0 || k.TCP.Unsent > len(k.TCP.SendQueue)) {
				return bad("tcp socket %d: inconsistent repair state", k.ID)
			}
		default:
			return bad("socket %d: family %d", k.ID, k.Family)
		}
		if k.Backlog < 0 || k.Shutdown&^3 != 0 {
			return bad("socket %d: backlog %d shutdown %d", k.ID, k.Backlog, k.Shutdown)
		}
		for _, a := range k.QueueFrom {
			if _, err := netip.ParseAddrPort(a); err != nil {
				return bad("socket %d: sender %q", k.ID, a)
			}
		}
		if len(k.QueueFrom) != 0 && len(k.QueueFrom) != len(k.Queue) {
			return bad("socket %d: %d senders for %d datagrams", k.ID, len(k.QueueFrom), len(k.Queue))
		}
	}
	for _, k := range s.Sockets {
		for _, ref := range append([]uint64{k.Peer, k.Listener}, k.Pending...) {
			if ref != 0 && !ids[ref] {
				return bad("socket %d refers to socket %d, which is not in the record", k.ID, ref)
			}
		}
	}
	if s.Netns != nil {
		for _, a := range s.Netns.LoopbackAddrs {
			if _, err := netip.ParsePrefix(a); err != nil {
				return bad("loopback address %q", a)
			}
		}
	}
	return nil
}

// ReadSockets decodes dir/sockets.json; a missing file is an empty record.
func ReadSockets(dir string) (*Sockets, error) {
	f, err := os.Open(filepath.Join(dir, SocketsFile))
	if errors.Is(err, os.ErrNotExist) {
		return &Sockets{Header: NewHeader()}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var s Sockets
	if err := readAll(f, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", SocketsFile, err)
	}
	if err := s.Header.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", SocketsFile, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", SocketsFile, err)
	}
	return &s, nil
}
