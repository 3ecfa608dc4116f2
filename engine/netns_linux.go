package engine

// The tree's network namespace. The runtime creates a fresh one at restore
// (with lo down and no address); when the tree had its own namespace the
// engine saves the state of its loopback (up or not, extra addresses) and
// puts it back inside the new namespace before any socket is restored.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/sockdiag"
)

const loIndex = 1 // the loopback is always interface 1 of a namespace

func dumpNetns(pid int) (*image.Netns, error) {
	ns := &image.Netns{}
	err := sockdiag.InNetns(pid, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
		}
		ns.LoopbackUp = ifr.Uint16()&unix.IFF_UP != 0
		rib, err := syscall.NetlinkRIB(unix.RTM_GETADDR, unix.AF_UNSPEC)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rib)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
				continue
			}
			fam, plen, index := m.Data[0], m.Data[1], binary.LittleEndian.Uint32(m.Data[4:])
			if index != loIndex {
				continue
			}
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return err
			}
			for _, a := range attrs {
				if a.Attr.Type != unix.IFA_ADDRESS {
					continue
				}
				addr, ok := netip.AddrFromSlice(a.Value)
				if !ok || fam == unix.AF_INET && !addr.Is4() {
					continue
				}
				p := netip.PrefixFrom(addr, int(plen))
				if p.String() == "127.0.0.1/8" || p.String() == "::1/128" {
					continue
				}
				ns.LoopbackAddrs = append(ns.LoopbackAddrs, p.String())
			}
		}
		return nil
	})
	return ns, err
}

// restoreNetns brings the loopback of the namespace of pid to the saved state.
func restoreNetns(pid int, ns *image.Netns) error {
	return sockdiag.InNetns(pid, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
		}
		if ns.LoopbackUp && ifr.Uint16()&unix.IFF_UP == 0 {
			ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
				return fmt.Errorf("bring lo up: %w", err)
			}
		}
		for _, a := range ns.LoopbackAddrs {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return err
			}
			if err := addAddr(loIndex, p); err != nil {
				return fmt.Errorf("add %s to lo: %w", a, err)
			}
		}
		return nil
	})
}

// addAddr adds an address to an interface with an RTM_NEWADDR request.
func addAddr(index int, p netip.Prefix) error {
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(nl)
	addr := p.Addr().AsSlice()
	fam := byte(unix.AF_INET6)
	if p.Addr().Is4() {
		fam = unix.AF_INET
	}
	attr := func(typ uint16, v []byte) []byte {
		b := make([]byte, (4+len(v)+3)&^3)
		binary.LittleEndian.PutUint16(b, uint16(4+len(v)))
		binary.LittleEndian.PutUint16(b[2:], typ)
		copy(b[4:], v)
		return b
	}
	body := []byte{fam, byte(p.Bits()), 0, unix.RT_SCOPE_HOST, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(body[4:], uint32(index))
	body = append(body, attr(unix.IFA_LOCAL, addr)...)
	body = append(body, attr(unix.IFA_ADDRESS, addr)...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.LittleEndian.PutUint32(msg, uint32(unix.SizeofNlMsghdr+len(body)))
	binary.LittleEndian.PutUint16(msg[4:], unix.RTM_NEWADDR)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	binary.LittleEndian.PutUint32(msg[8:], 1)
	msg = append(msg, body...)
	if err := unix.Sendto(nl, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(nl, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.LittleEndian.Uint32(m.Data)); e != 0 && unix.Errno(-e) != unix.EEXIST {
				return unix.Errno(-e)
			}
		}
	}
	return nil
}
