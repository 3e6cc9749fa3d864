package lab

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Packet is a UDP datagram the lab sends.
type Packet struct {
	// Via is the device it leaves through (to the device's peer); nil:
	// over lo to the closed port.
	Via  *Device
	IPv6 bool
	// Payload is its size in bytes, at least len(Magic); the last Paged
	// of them are put in page fragments, so that the kernel's sk_buff
	// holds them outside its linear data (data_len is Paged).
	Payload, Paged int
}

// Addrs returns p's source and destination.
func (l *Lab) Addrs(p Packet) (src, dst netip.AddrPort) {
	switch {
	case p.Via == nil && p.IPv6:
		return netip.AddrPortFrom(l.Lo6, l.LoPort), netip.AddrPortFrom(l.Lo6, l.ClosedPort)
	case p.Via == nil:
		return netip.AddrPortFrom(l.Lo, l.LoPort), netip.AddrPortFrom(l.Lo, l.ClosedPort)
	case p.IPv6:
		return netip.AddrPortFrom(p.Via.Local6, l.Port), netip.AddrPortFrom(p.Via.Peer6, l.PeerPort)
	}
	return netip.AddrPortFrom(p.Via.Local, l.Port), netip.AddrPortFrom(p.Via.Peer, l.PeerPort)
}

// sockKey names one of the lab's connected sockets by its addresses.
type sockKey struct{ src, dst netip.AddrPort }

// openSockets makes a connected UDP socket for every packet kind, in the
// lab's namespace (the calling thread's): a connected socket keeps its
// peer's address and port, which calibration looks for.
func (l *Lab) openSockets() error {
	var ps []Packet
	for i := range l.Devices {
		ps = append(ps, Packet{Via: &l.Devices[i]}, Packet{Via: &l.Devices[i], IPv6: true})
	}
	ps = append(ps, Packet{}, Packet{IPv6: true})
	for _, p := range ps {
		if p.IPv6 && !l.IPv6 {
			continue
		}
		src, dst := l.Addrs(p)
		fd, err := connectUDP(src, dst)
		if err != nil {
			return fmt.Errorf("UDP socket %v to %v: %w", src, dst, err)
		}
		l.socks[sockKey{src, dst}] = fd
	}
	return nil
}

func connectUDP(src, dst netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if src.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sockaddr(src)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Connect(fd, sockaddr(dst)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
}

// Send sends p: one datagram whose payload starts with Magic.
func (l *Lab) Send(p Packet) error {
	if p.IPv6 && !l.IPv6 {
		return errors.New("the calibration namespace has no IPv6")
	}
	if p.Payload < len(l.Magic) || p.Paged < 0 || p.Payload-p.Paged < len(l.Magic) {
		return fmt.Errorf("packet of %d bytes, %d paged: the magic must be in the linear part", p.Payload, p.Paged)
	}
	fd, err := l.Socket(p)
	if err != nil {
		return err
	}
	payload := make([]byte, p.Payload)
	copy(payload, l.Magic[:])
	for i := len(l.Magic); i < len(payload); i++ {
		payload[i] = byte(i)
	}
	linear := payload[:p.Payload-p.Paged]
	if p.Paged == 0 {
		return send(fd, linear, 0)
	}
	// Corked with MSG_MORE, the second part is appended to the same
	// datagram, in page fragments where the device can gather them.
	if err := send(fd, linear, unix.MSG_MORE); err != nil {
		return err
	}
	return send(fd, payload[len(linear):], 0)
}

// Socket returns the lab's connected UDP socket that p is sent from, for
// tests that send through system calls of their own. It stays the lab's,
// which closes it.
func (l *Lab) Socket(p Packet) (int, error) {
	src, dst := l.Addrs(p)
	fd, ok := l.socks[sockKey{src, dst}]
	if !ok {
		return -1, fmt.Errorf("no socket from %v to %v", src, dst)
	}
	return fd, nil
}

// send writes b, again if the socket had a pending error from an ICMP
// message about an earlier datagram (over lo, to the closed port): that
// error fails the first write without sending it.
func send(fd int, b []byte, flags int) error {
	err := unix.Send(fd, b, flags)
	if errors.Is(err, unix.ECONNREFUSED) {
		err = unix.Send(fd, b, flags)
	}
	return err
}
