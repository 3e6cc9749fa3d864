package lab

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// devices is how many dummy devices the lab makes: two, so that a value
// found at some offset of one device's struct can be told from a value that
// merely happens to be there, by finding the other device's at the same
// offset.
const devices = 2

// configure brings lo up and makes the dummy devices, on the calling
// thread, which is in the lab's namespace.
func (l *Lab) configure() error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	l.IPv6 = ipv6Works()
	var r [32]byte
	for i := 0; i < len(r); i += 8 {
		binary.NativeEndian.PutUint64(r[i:], rand.Uint64())
	}
	l.Lo, l.Lo6 = netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()
	for i := 0; i < devices; i++ {
		d := newDevice(i, r)
		err := addDevice(h, d, l.IPv6, i%2 == 1)
		if errors.Is(err, errNoDeviceKind) {
			// lo alone still serves everything but -I.
			l.Devices, l.NoDevices = nil, err
			return nil
		}
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Name, err)
		}
		l.Devices = append(l.Devices, d)
	}
	l.Lo, l.Lo6 = l.Devices[0].Local, l.Devices[0].Local6
	return nil
}

var errNoDeviceKind = errors.New("the kernel makes neither dummy devices (CONFIG_DUMMY) nor veth pairs (CONFIG_VETH)")

// newDevice chooses device i's name, index and addresses from the random
// bytes r: an index above any a host would reach, a name no host has, and
// addresses of the benchmarking range 198.18.0.0/15 and of a random unique
// local IPv6 network, which exist nowhere outside the namespace.
func newDevice(i int, r [32]byte) Device {
	base := binary.BigEndian.Uint32(r[0:]) &^ 7 // a /29: one /30 per device
	v4 := func(host uint32) netip.Addr {
		a := (198<<24 | 18<<16) + base%(1<<17) + uint32(4*i) + host
		return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	}
	v6 := func(host byte) netip.Addr {
		var a [16]byte
		a[0] = 0xfd
		copy(a[1:6], r[4:9])
		a[7] = byte(i + 1)
		a[15] = host
		return netip.AddrFrom16(a)
	}
	return Device{
		Name:  "skbc" + hex.EncodeToString(r[10+3*i:13+3*i]),
		Index: 1<<20 + int(binary.BigEndian.Uint32(r[20+4*i:])%(1<<29)),
		Local: v4(1), Peer: v4(2),
		Local6: v6(1), Peer6: v6(2),
	}
}

// addDevice makes d, up with its addresses: a dummy device, which frees
// what it is given, or one end of a veth pair, whose other end drops what
// it receives, since it is addressed to another host; the kind preferred
// (veth, or dummy) where the kernel makes both, else the one it makes. Two
// devices of different kinds keep different memory around their struct
// net_device, which tells a field from a copy of its value nearby. Neither
// resolves neighbours (dummy devices are IFF_NOARP, and the veth ends are
// made so), so a packet to the peer address leaves at once.
func addDevice(h *netlink.Handle, d Device, ipv6, veth bool) error {
	kinds := []func(*netlink.Handle, Device) (netlink.Link, error){addDummy, addVeth}
	if veth {
		kinds[0], kinds[1] = kinds[1], kinds[0]
	}
	link, err := kinds[0](h, d)
	if errors.Is(err, unix.EOPNOTSUPP) {
		link, err = kinds[1](h, d)
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		return errNoDeviceKind
	}
	if err != nil {
		return err
	}
	addrs := []*netlink.Addr{{IPNet: ipNet(d.Local, 30)}}
	if ipv6 {
		// Without nodad the address is tentative, and unusable, for a
		// second or more.
		addrs = append(addrs, &netlink.Addr{IPNet: ipNet(d.Local6, 64), Flags: unix.IFA_F_NODAD})
	}
	for _, a := range addrs {
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("address %v: %w", a.IPNet, err)
		}
	}
	return h.LinkSetUp(link)
}

func addDummy(h *netlink.Handle, d Device) (netlink.Link, error) {
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: d.Name, Index: d.Index}}
	return link, h.LinkAdd(link)
}

func addVeth(h *netlink.Handle, d Device) (netlink.Link, error) {
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: d.Name, Index: d.Index}, PeerName: d.Name + "p"}
	if err := h.LinkAdd(link); err != nil {
		return nil, err
	}
	if err := upWithoutARP(h, link.PeerName); err != nil {
		return nil, err
	}
	return link, h.LinkSetARPOff(link)
}

func upWithoutARP(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := h.LinkSetARPOff(link); err != nil {
		return err
	}
	return h.LinkSetUp(link)
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}
