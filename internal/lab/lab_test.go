package lab

import (
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpen makes a lab and sends every kind of packet in it: through each
// device, over lo, IPv4 and IPv6, linear and with page fragments.
func TestOpen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs CAP_SYS_ADMIN and CAP_NET_ADMIN: run as root")
	}
	l, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.Private || len(l.Devices) != devices {
		t.Fatalf("lab: private %v, %d devices (fallback: %v; devices: %v); want a private one with %d devices",
			l.Private, len(l.Devices), l.Fallback, l.NoDevices, devices)
	}
	families := []bool{false, true}
	if !l.IPv6 {
		t.Log("the namespace has no IPv6: IPv4 only")
		families = families[:1]
	}
	if l.Devices[0].Index == l.Devices[1].Index || l.Devices[0].Index <= 1<<20 {
		t.Errorf("device indices %d and %d: want two unusual ones", l.Devices[0].Index, l.Devices[1].Index)
	}
	for _, via := range []*Device{nil, &l.Devices[0], &l.Devices[1]} {
		for _, ipv6 := range families {
			for _, paged := range []int{0, 100} {
				if err := l.Send(Packet{Via: via, IPv6: ipv6, Payload: 200, Paged: paged}); err != nil {
					t.Errorf("send via %v, IPv6 %v, %d paged: %v", via, ipv6, paged, err)
				}
			}
		}
	}
	if err := l.Send(Packet{Payload: 4}); err == nil {
		t.Error("a payload shorter than the magic was sent")
	}
}

// TestClosed binds a port, which is then not closed, and frees it.
func TestClosed(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	if closed(a) {
		t.Errorf("%v is bound, yet closed", a)
	}
	unix.Close(fd)
	if !closed(a) {
		t.Errorf("%v is free, yet not closed", a)
	}
}
