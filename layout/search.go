package layout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// This file finds struct fields in recorded kernel memory by the values
// calibration's packets put there. Every search keeps the offsets where the
// expected value stands in every sample, and a field is found only when
// exactly one offset is left: two fields that hold the same value are told
// apart by another packet that makes them differ, or by the kernel's fixed
// field order, and never by taking the first.

// A sample is one packet calibration sent, with what it knows of it, and the
// record made of it at net:net_dev_queue: window 0 is the sk_buff, window
// 1+i is what the pointer-sized member at offset i*pointer size points at.
type sample struct {
	ipv6     bool
	src, dst netip.AddrPort
	skbLen   uint32 // 14 + the IP packet's length: skb->len after the Ethernet header is pushed
	paged    uint32 // payload bytes in page fragments: skb->data_len
	ifindex  int    // its device's index; 0: lo, whose index tells nothing
	devName  string
	magic    []byte
	rec      record
}

// searcher reads recorded kernel memory as the kernel stores it.
type searcher struct {
	order   binary.ByteOrder
	ptrSize int
}

func (s searcher) ptr(b []byte, off uint32) uint64 {
	if s.ptrSize == 4 {
		return uint64(s.order.Uint32(b[off:]))
	}
	return s.order.Uint64(b[off:])
}

// skb is the sample's sk_buff window; pointee, what the member at off
// points at (nil if unreadable).
func (s searcher) skb(sm sample) []byte { return sm.rec.windows[0] }

func (s searcher) pointee(sm sample, off uint32) []byte {
	i := 1 + int(off)/s.ptrSize
	if int(off)%s.ptrSize != 0 || i >= len(sm.rec.windows) {
		return nil
	}
	return sm.rec.windows[i]
}

// offsets returns the offsets, multiples of align with size bytes from
// there within every sample's window, at which match holds for every sample.
func offsets(samples []sample, window func(sample) []byte, align, size uint32, match func(sm sample, b []byte, off uint32) bool) []uint32 {
	var found []uint32
	if len(samples) == 0 {
		return nil
	}
	for off := uint32(0); ; off += align {
		inside, all := true, true
		for _, sm := range samples {
			b := window(sm)
			if off+size > uint32(len(b)) {
				inside = false
				break
			}
			if !match(sm, b, off) {
				all = false
			}
		}
		if !inside {
			return found
		}
		if all {
			found = append(found, off)
		}
	}
}

// only returns the one offset of found, or an error naming the field.
func only(field string, found []uint32) (uint32, error) {
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return 0, fmt.Errorf("%s: no offset holds its known value", field)
	}
	return 0, fmt.Errorf("%s: %d offsets hold its known value (%s)", field, len(found), offsetList(found))
}

func offsetList(offs []uint32) string {
	s := make([]string, len(offs))
	for i, o := range offs {
		s[i] = fmt.Sprint(o)
	}
	return strings.Join(s, ", ")
}

// preferAfter settles a tie by the kernel's fixed field order: of found,
// the offset that follows prev directly (prev+gap), if it is among them.
func preferAfter(found []uint32, prev, gap uint32) []uint32 {
	if len(found) > 1 && slices.Contains(found, prev+gap) {
		return []uint32{prev + gap}
	}
	return found
}

const ethHeaderLen = 14

func ipHeaderLen(ipv6 bool) uint32 {
	if ipv6 {
		return 40
	}
	return 20
}

func ethertypeOf(ipv6 bool) []byte {
	if ipv6 {
		return []byte{0x86, 0xdd}
	}
	return []byte{0x08, 0x00}
}

// isOwnFrame reports whether b starts with the sample's Ethernet frame: its
// ethertype, its IP header's version, protocol and addresses, its UDP ports
// and the magic payload.
func isOwnFrame(sm sample, b []byte) bool {
	ip := uint32(ethHeaderLen)
	udp := ip + ipHeaderLen(sm.ipv6)
	if uint32(len(b)) < udp+8+uint32(len(sm.magic)) || !bytes.Equal(b[12:14], ethertypeOf(sm.ipv6)) {
		return false
	}
	src, dst := sm.src.Addr().AsSlice(), sm.dst.Addr().AsSlice()
	if sm.ipv6 {
		if b[ip]>>4 != 6 || b[ip+6] != 17 || !bytes.Equal(b[ip+8:ip+24], src) || !bytes.Equal(b[ip+24:ip+40], dst) {
			return false
		}
	} else if b[ip] != 0x45 || b[ip+9] != 17 || !bytes.Equal(b[ip+12:ip+16], src) || !bytes.Equal(b[ip+16:ip+20], dst) {
		return false
	}
	return binary.BigEndian.Uint16(b[udp:]) == sm.src.Port() && binary.BigEndian.Uint16(b[udp+2:]) == sm.dst.Port() &&
		bytes.Equal(b[udp+8:udp+8+uint32(len(sm.magic))], sm.magic)
}

// skbHeaders is what the sk_buff search finds.
type skbHeaders struct {
	data, head, len, dataLen                Field
	protocol, transport, network, macHeader Field
}

// findSkb finds the sk_buff's packet fields. At net:net_dev_queue the
// Ethernet header has just been pushed: skb->data points at it, mac_header
// is data - head, network_header 14 bytes further, transport_header past
// the IP header.
func (s searcher) findSkb(samples []sample) (skbHeaders, error) {
	var h skbHeaders
	ptr := uint32(s.ptrSize)
	data, err := only("skb->data", offsets(samples, s.skb, ptr, ptr, func(sm sample, _ []byte, off uint32) bool {
		return isOwnFrame(sm, s.pointee(sm, off))
	}))
	if err != nil {
		return h, err
	}
	h.data = Field{data, ptr}
	// The four header fields stand together in this order in every
	// kernel; their values are fixed by data - head, which is unknown: the
	// mac_header value found here is checked against head below.
	quad, err := only("skb->protocol, transport_header, network_header, mac_header", offsets(samples, s.skb, 2, 8, func(sm sample, b []byte, off uint32) bool {
		mac := uint32(s.order.Uint16(b[off+6:]))
		return bytes.Equal(b[off:off+2], ethertypeOf(sm.ipv6)) &&
			uint32(s.order.Uint16(b[off+4:])) == mac+ethHeaderLen &&
			uint32(s.order.Uint16(b[off+2:])) == mac+ethHeaderLen+ipHeaderLen(sm.ipv6)
	}))
	if err != nil {
		return h, err
	}
	h.protocol, h.transport, h.network, h.macHeader = Field{quad, 2}, Field{quad + 2, 2}, Field{quad + 4, 2}, Field{quad + 6, 2}
	head := offsets(samples, s.skb, ptr, ptr, func(sm sample, b []byte, off uint32) bool {
		return s.ptr(b, data)-s.ptr(b, off) == uint64(s.order.Uint16(b[quad+6:]))
	})
	// head comes right before data (unsigned char *head, *data).
	off, err := only("skb->head", preferAfter(head, data-2*ptr, ptr))
	if err != nil {
		return h, err
	}
	h.head = Field{off, ptr}
	lens := offsets(samples, s.skb, 4, 4, func(sm sample, b []byte, off uint32) bool { return s.order.Uint32(b[off:]) == sm.skbLen })
	dataLens := offsets(samples, s.skb, 4, 4, func(sm sample, b []byte, off uint32) bool { return s.order.Uint32(b[off:]) == sm.paged })
	// data_len follows len (unsigned int len, data_len).
	if len(lens) > 1 {
		var next []uint32
		for _, l := range lens {
			if slices.Contains(dataLens, l+4) {
				next = append(next, l)
			}
		}
		lens = next
	}
	if off, err = only("skb->len", lens); err != nil {
		return h, err
	}
	h.len = Field{off, 4}
	if off, err = only("skb->data_len", preferAfter(dataLens, h.len.Offset, 4)); err != nil {
		return h, err
	}
	h.dataLen = Field{off, 4}
	return h, nil
}

// findDev finds skb->dev, the member that points at a struct holding the
// device's name, and net_device's ifindex, where the samples' devices have
// indices that say something (not lo's 1). ifindex.Size is 0 where none has.
func (s searcher) findDev(samples []sample) (dev, ifindex Field, err error) {
	ptr := uint32(s.ptrSize)
	off, err := only("skb->dev", offsets(samples, s.skb, ptr, ptr, func(sm sample, _ []byte, off uint32) bool {
		name := append([]byte(sm.devName), 0)
		return bytes.Contains(s.pointee(sm, off), name)
	}))
	if err != nil {
		return dev, ifindex, err
	}
	dev = Field{off, ptr}
	var known []sample
	for _, sm := range samples {
		if sm.ifindex > 1 {
			known = append(known, sm)
		}
	}
	if len(known) == 0 {
		return dev, ifindex, nil
	}
	idx, err := only("net_device->ifindex", offsets(known, func(sm sample) []byte { return s.pointee(sm, dev.Offset) }, 4, 4, func(sm sample, b []byte, off uint32) bool {
		return s.order.Uint32(b[off:]) == uint32(sm.ifindex)
	}))
	return dev, Field{idx, 4}, err
}

const (
	afInet  = 2
	afInet6 = 10
)

// findSock finds skb->sk and struct sock_common's address, port and
// family fields: the samples come from connected sockets, so the socket's
// peer is the packet's destination.
func (s searcher) findSock(samples []sample) (sk Field, sc SockCommon, err error) {
	ptr := uint32(s.ptrSize)
	var v4, v6 []sample
	for _, sm := range samples {
		if sm.ipv6 {
			v6 = append(v6, sm)
		} else {
			v4 = append(v4, sm)
		}
	}
	// The IPv4 addresses and ports stand in this order in every kernel:
	// skc_daddr, skc_rcv_saddr, (skc_hash), skc_dport, skc_num, skc_family.
	addrs := func(sm sample, b []byte, off uint32) bool {
		return bytes.Equal(b[off:off+4], sm.dst.Addr().AsSlice()) && bytes.Equal(b[off+4:off+8], sm.src.Addr().AsSlice())
	}
	ports := func(sm sample, b []byte, off uint32) bool {
		return binary.BigEndian.Uint16(b[off:]) == sm.dst.Port() && s.order.Uint16(b[off+2:]) == sm.src.Port()
	}
	hasBoth := func(b []byte, sm sample) bool {
		return len(b) > 0 && len(offsets([]sample{sm}, func(sample) []byte { return b }, 4, 8, addrs)) > 0 &&
			len(offsets([]sample{sm}, func(sample) []byte { return b }, 2, 4, ports)) > 0
	}
	off, err := only("skb->sk", offsets(v4, s.skb, ptr, ptr, func(sm sample, _ []byte, off uint32) bool {
		return hasBoth(s.pointee(sm, off), sm)
	}))
	if err != nil {
		return sk, sc, err
	}
	sk = Field{off, ptr}
	sock := func(sm sample) []byte { return s.pointee(sm, sk.Offset) }
	a, err := only("sock_common skc_daddr, skc_rcv_saddr", offsets(v4, sock, 4, 8, addrs))
	if err != nil {
		return sk, sc, err
	}
	p, err := only("sock_common skc_dport, skc_num", offsets(v4, sock, 2, 4, ports))
	if err != nil {
		return sk, sc, err
	}
	sc.Daddr, sc.RcvSaddr, sc.Dport, sc.Num = Field{a, 4}, Field{a + 4, 4}, Field{p, 2}, Field{p + 2, 2}
	family := func(sm sample, b []byte, off uint32) bool {
		want := uint16(afInet)
		if sm.ipv6 {
			want = afInet6
		}
		return s.order.Uint16(b[off:]) == want
	}
	f, err := only("sock_common skc_family", preferAfter(offsets(samples, sock, 2, 2, family), sc.Num.Offset, 2))
	if err != nil {
		return sk, sc, err
	}
	sc.Family = Field{f, 2}
	if len(v6) == 0 {
		return sk, sc, nil
	}
	// skc_v6_daddr, then skc_v6_rcv_saddr.
	a6, err := only("sock_common skc_v6_daddr, skc_v6_rcv_saddr", offsets(v6, sock, 4, 32, func(sm sample, b []byte, off uint32) bool {
		return bytes.Equal(b[off:off+16], sm.dst.Addr().AsSlice()) && bytes.Equal(b[off+16:off+32], sm.src.Addr().AsSlice())
	}))
	if err != nil {
		return sk, sc, err
	}
	sc.V6Daddr, sc.V6RcvSaddr = Field{a6, 16}, Field{a6 + 16, 16}
	return sk, sc, nil
}

// A netSample is what the second calibration pass read for one packet.
type netSample struct {
	inode    uint64   // the namespace's inode number
	sock     []byte   // the socket's window from the first pass
	dev      []byte   // the net_device, zeros where it could not be read
	pointees [][]byte // what each pointer-sized member of sock points at; nil: unreadable
}

// findNet finds the socket's and the device's pointer to their network
// namespace (skc_net, net_device's nd_net) and the namespace's inode number
// in struct net (ns.inum): the socket member whose pointee holds the known
// inode number, and the device member that holds the same pointer. The
// device's window runs past the struct, into memory that may hold the same
// pointer (32-bit ARM's 6.1 showed it 33 times past the struct): where
// several offsets do, nd_net is the first after ifindex, which every
// kernel's net_device has before it.
func (s searcher) findNet(samples []netSample, ifindex Field) (skcNet, ndNet, inum Field, err error) {
	ptr := uint32(s.ptrSize)
	var members, inums []uint32
	for i := range samples[0].pointees {
		var common []uint32
		for j, sm := range samples {
			var here []uint32
			b := sm.pointees[i]
			for q := uint32(0); q+4 <= uint32(len(b)); q += 4 {
				if uint64(s.order.Uint32(b[q:])) == sm.inode {
					here = append(here, q)
				}
			}
			if j == 0 {
				common = here
			} else {
				common = intersect(common, here)
			}
		}
		for _, q := range common {
			members, inums = append(members, uint32(i)*ptr), append(inums, q)
		}
	}
	if _, err := only("sock_common skc_net", members); err != nil {
		return skcNet, ndNet, inum, err
	}
	skcNet, inum = Field{members[0], ptr}, Field{inums[0], 4}
	var nd []uint32
	for j, sm := range samples {
		net := s.ptr(sm.sock, skcNet.Offset)
		var here []uint32
		for off := uint32(0); off+ptr <= uint32(len(sm.dev)); off += ptr {
			if s.ptr(sm.dev, off) == net {
				here = append(here, off)
			}
		}
		if j == 0 {
			nd = here
		} else {
			nd = intersect(nd, here)
		}
	}
	off, err := only("net_device nd_net", firstAfter(nd, ifindex.Offset))
	return skcNet, Field{off, ptr}, inum, err
}

// firstAfter narrows several offsets to the first after prev.
func firstAfter(found []uint32, prev uint32) []uint32 {
	if len(found) < 2 {
		return found
	}
	for _, off := range slices.Sorted(slices.Values(found)) {
		if off > prev {
			return []uint32{off}
		}
	}
	return found
}

func intersect(a, b []uint32) []uint32 {
	var both []uint32
	for _, x := range a {
		if slices.Contains(b, x) {
			both = append(both, x)
		}
	}
	return both
}
