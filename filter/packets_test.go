package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
)

// Frame builders. Every field is set as the caller says, valid or not.

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
	etherVLAN = 0x8100
	etherLLDP = 0x88cc
)

func ethernet(ethertype uint16, payload []byte) []byte {
	frame := make([]byte, 12, 14+len(payload))
	for i := range frame {
		frame[i] = byte(0x20 + i) // any MAC addresses
	}
	frame = binary.BigEndian.AppendUint16(frame, ethertype)
	return append(frame, payload...)
}

// ipv4 is an IPv4 header with options (its IHL counts them) and frag as
// the flags and fragment offset field.
func ipv4(src, dst netip.Addr, proto uint8, frag uint16, options []byte) []byte {
	h := make([]byte, 20, 20+len(options))
	h[0] = 0x40 | byte((20+len(options))/4)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = 64
	h[9] = proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	return append(h, options...)
}

func ipv6(src, dst netip.Addr, next uint8) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	h[6] = next
	h[7] = 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return h
}

// extension is an IPv6 hop-by-hop, routing or destination options header
// of 8*(units+1) bytes.
func extension(next, units uint8) []byte {
	h := make([]byte, 8*(int(units)+1))
	h[0], h[1] = next, units
	for i := 2; i < len(h); i++ {
		h[i] = byte(i) // option bytes: as good as any
	}
	return h
}

// fragment is an IPv6 fragment header; offset counts 8-byte units.
func fragment(next uint8, offset uint16, more bool) []byte {
	h := make([]byte, 8)
	h[0] = next
	field := offset << 3
	if more {
		field |= 1
	}
	binary.BigEndian.PutUint16(h[2:], field)
	binary.BigEndian.PutUint32(h[4:], 0x12345678)
	return h
}

func ports(sport, dport uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), dport)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Pools of option values. Their edges make the packets' addresses and ports.
var (
	ipv4Options = []string{
		"0.0.0.0/0", "128.0.0.0/1", "10.0.0.0/8", "200.0.0.0/8", "192.168.1.7/31",
		"10.1.2.3", "255.255.255.255", "172.16.5.4/12", "10.20.31.0/23",
		"::ffff:203.0.113.0/120", "::ffff:192.0.2.1", "224.0.0.0/4",
	}
	ipv6Options = []string{
		"::/0", "8000::/1", "fd00::/64", "ff02::/16", "2001:db8::1/127", "::1",
		"2001:db8:a:b:c:d:e:f/128", "fe80::/10", "2001:db8:ffff:ffff::/63",
		"ff02::1:ff00:0/104", "::ffff:0:0/95", "fd00:0:0:1::/127",
	}
	portOptions = []string{
		"80", "0", "65535", "0-1023", "1024-65535", "8000-8100", "0-65535", "53",
		"1-65534", "443-444", "32768-32768",
	}
	portProtoOptions  = []string{"tcp", "udp", "sctp", "udplite", "6", "UDP"}
	otherProtoOptions = []string{"icmp", "icmp6", "ipv6-icmp", "icmpv6", "gre", "esp", "ah", "0", "44", "59", "255", "4"}
	// protocols of generated packets
	packetProtos = []uint8{6, 17, 132, 136, 1, 58, 47, 50, 51, 4, 41, 59, 0, 255}
)

func mustPrefix(s string) netip.Prefix {
	p, err := parsePrefix("-s", s)
	if err != nil {
		panic(err)
	}
	return p
}

func mustPorts(s string) PortRange {
	r, err := parsePortRange("-P", s)
	if err != nil {
		panic(err)
	}
	return r
}

// frameGenerator makes random frames for a filter. A third of them are
// random, built from the edges of every pool value; the rest aim at the
// filter: they satisfy every condition, or every condition but one, which
// gets a random edge instead. So matches and near misses are both common.
type frameGenerator struct {
	r          *rand.Rand
	ipv4, ipv6 []netip.Addr // edges of every pool prefix
	ports      []uint16     // edges of every pool range
}

func newFrameGenerator(r *rand.Rand) *frameGenerator {
	g := &frameGenerator{r: r}
	for _, s := range append(append([]string{}, ipv4Options...), ipv6Options...) {
		for _, a := range g.prefixEdges(mustPrefix(s), false) {
			if a.Is4() {
				g.ipv4 = append(g.ipv4, a)
			} else {
				g.ipv6 = append(g.ipv6, a)
			}
		}
	}
	for _, s := range portOptions {
		g.ports = append(g.ports, portEdges(mustPorts(s), false)...)
	}
	return g
}

// prefixEdges are the first and last address of p and one inside at
// random; unless inside, also the addresses just outside p.
func (g *frameGenerator) prefixEdges(p netip.Prefix, inside bool) []netip.Addr {
	first := p.Masked().Addr()
	b, random := first.AsSlice(), first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
		if g.r.IntN(2) == 0 {
			random[i/8] |= 0x80 >> (i % 8)
		}
	}
	last, _ := netip.AddrFromSlice(b)
	in, _ := netip.AddrFromSlice(random)
	edges := []netip.Addr{first, last, in}
	if inside {
		return edges
	}
	for _, a := range []netip.Addr{first.Prev(), last.Next()} {
		if a.IsValid() {
			edges = append(edges, a)
		}
	}
	return edges
}

// portEdges are LO, HI and, unless inside, LO-1, HI+1, 0 and 65535.
func portEdges(r PortRange, inside bool) []uint16 {
	if inside {
		return []uint16{r.Lo, r.Hi}
	}
	return []uint16{r.Lo - 1, r.Lo, r.Hi, r.Hi + 1, 0, 65535} // wrapping is fine
}

func (g *frameGenerator) chance(percent int) bool { return g.r.IntN(100) < percent }

func pick[T any](g *frameGenerator, from []T) T { return from[g.r.IntN(len(from))] }

// Parts of a frame that a generated frame may aim at the filter.
const (
	aimFamily = 1 << iota
	aimSrc
	aimDst
	aimSport
	aimDport
	aimProto
	aimShape // well formed: IP, no later fragment, a walkable chain, whole
	aimAll   = 1<<iota - 1
)

// aims chooses the parts of the next frame that satisfy the filter.
func (g *frameGenerator) aims() int {
	switch n := g.r.IntN(3); n {
	case 0:
		return 0
	case 1:
		return aimAll
	}
	return aimAll &^ (1 << g.r.IntN(7))
}

// address is one for a header field that must lie in every valid prefix of
// conds when aimed.
func (g *frameGenerator) address(ipv6, aimed bool, conds ...netip.Prefix) netip.Addr {
	var valid []netip.Prefix
	for _, p := range conds {
		if p.IsValid() && p.Addr().Is6() == ipv6 {
			valid = append(valid, p)
		}
	}
	switch {
	case aimed && len(valid) > 0:
		narrowest := valid[0]
		for _, p := range valid {
			if p.Bits() > narrowest.Bits() {
				narrowest = p
			}
		}
		return pick(g, g.prefixEdges(narrowest, true))
	case len(valid) > 0 && g.chance(60):
		return pick(g, g.prefixEdges(pick(g, valid), false))
	case ipv6:
		return pick(g, g.ipv6)
	}
	return pick(g, g.ipv4)
}

// port is one for a header field that must lie in every set range of
// conds when aimed.
func (g *frameGenerator) port(aimed bool, conds ...PortRange) uint16 {
	var set []PortRange
	both := PortRange{Lo: 0, Hi: 65535}
	for _, r := range conds {
		if r.Set {
			set = append(set, r)
			both.Lo, both.Hi = max(both.Lo, r.Lo), min(both.Hi, r.Hi)
		}
	}
	switch {
	case aimed && len(set) > 0 && both.Lo <= both.Hi:
		if g.chance(30) {
			return both.Lo + uint16(g.r.IntN(int(both.Hi-both.Lo)+1))
		}
		return pick(g, portEdges(both, true))
	case len(set) > 0 && g.chance(60):
		return pick(g, portEdges(pick(g, set), false))
	case g.chance(10):
		return uint16(g.r.Uint32())
	}
	return pick(g, g.ports)
}

func (g *frameGenerator) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

// frame makes one Ethernet frame for testing f.
func (g *frameGenerator) frame(f Filter) []byte {
	aims := g.aims()
	shaped := aims&aimShape != 0
	ipv6 := g.chance(50)
	if aims&aimFamily != 0 {
		for _, p := range []netip.Prefix{f.Src, f.Dst, f.Addr} {
			if p.IsValid() {
				ipv6 = p.Addr().Is6()
			}
		}
	}
	var frame []byte
	switch {
	case !shaped && g.chance(15):
		frame = ethernet(pick(g, []uint16{etherARP, etherVLAN, etherLLDP, uint16(g.r.Uint32())}), g.bytes(g.r.IntN(80)))
	case ipv6:
		frame = ethernet(etherIPv6, g.ipv6Packet(f, aims))
	default:
		frame = ethernet(etherIPv4, g.ipv4Packet(f, aims))
	}
	if !shaped && len(frame) > ethHeaderLen && g.chance(10) {
		// a version that disagrees with the ethertype
		frame[ethHeaderLen] = byte(g.r.IntN(16))<<4 | frame[ethHeaderLen]&0xf
	}
	if !shaped && g.chance(30) {
		frame = frame[:ethHeaderLen+g.r.IntN(len(frame)-ethHeaderLen+1)]
	}
	return frame
}

// addresses returns a source and a destination address.
func (g *frameGenerator) addresses(f Filter, aims int, ipv6 bool) (src, dst netip.Addr) {
	// -N holds when either side lies in f.Addr: aim one of them at it.
	srcAddr, dstAddr := f.Addr, f.Addr
	if aims&(aimSrc|aimDst) == aimSrc|aimDst {
		if g.chance(50) {
			srcAddr = netip.Prefix{}
		} else {
			dstAddr = netip.Prefix{}
		}
	}
	return g.address(ipv6, aims&aimSrc != 0, f.Src, srcAddr), g.address(ipv6, aims&aimDst != 0, f.Dst, dstAddr)
}

func (g *frameGenerator) protocol(f Filter, aims int) uint8 {
	switch {
	case aims&aimProto == 0:
		if f.Proto.Set && g.chance(30) {
			return f.Proto.Number
		}
		return pick(g, packetProtos)
	case f.Proto.Set:
		return f.Proto.Number
	case f.hasPortCondition():
		return pick(g, []uint8{6, 17, 132, 136})
	}
	return pick(g, packetProtos)
}

// transport is what follows the IP headers: ports and a payload.
func (g *frameGenerator) transport(f Filter, aims int) []byte {
	portOnSrc := g.chance(50) // -P holds when either port lies in f.Port
	srcPort, dstPort := f.Port, f.Port
	if portOnSrc {
		dstPort = PortRange{}
	} else {
		srcPort = PortRange{}
	}
	sport := g.port(aims&aimSport != 0, f.Sport, srcPort)
	dport := g.port(aims&aimDport != 0, f.Dport, dstPort)
	return append(ports(sport, dport), g.bytes(g.r.IntN(24))...)
}

// fragmentOffsets are offsets (in 8-byte units) of later fragments: the
// edges of the 13-bit field and one at random.
func fragmentOffsets(g *frameGenerator) []uint16 {
	return []uint16{1, 0x1000, 0x1fff, uint16(1 + g.r.IntN(0x1fff))}
}

func (g *frameGenerator) ipv4Packet(f Filter, aims int) []byte {
	shaped := aims&aimShape != 0
	src, dst := g.addresses(f, aims, false)
	var frag uint16
	switch n := g.r.IntN(100); {
	case n < 15:
		frag = 0x2000 // more fragments: the first
	case n < 30 && !shaped:
		frag = pick(g, fragmentOffsets(g)) | pick(g, []uint16{0, 0x2000}) // a later one
	case n < 40:
		frag = pick(g, []uint16{0x4000, 0x8000, 0xa000}) // don't fragment; reserved flag
	}
	var options []byte
	if g.chance(15) {
		options = g.bytes(4 * (1 + g.r.IntN(10)))
	}
	h := ipv4(src, dst, g.protocol(f, aims), frag, options)
	if !shaped && g.chance(10) {
		h[0] = 0x40 | byte(g.r.IntN(5)) // IHL below 5
	}
	return append(h, g.transport(f, aims)...)
}

func (g *frameGenerator) ipv6Packet(f Filter, aims int) []byte {
	shaped := aims&aimShape != 0
	src, dst := g.addresses(f, aims, true)
	var chain []uint8
	switch n := g.r.IntN(100); {
	case n < 40:
	case n < 75 || shaped:
		chain = make([]uint8, 1+g.r.IntN(8))
	case n < 85:
		chain = make([]uint8, MaxExtensionHeaders-1+g.r.IntN(2)) // at the limit
	default:
		chain = make([]uint8, MaxExtensionHeaders+1+g.r.IntN(2)) // past the limit
	}
	for i := range chain {
		chain[i] = pick(g, []uint8{0, 43, 44, 60})
	}
	proto := g.protocol(f, aims)
	var exts []byte
	big := len(chain) > 8 // at most one long header, to stay within a page
	for i, kind := range chain {
		next := proto
		if i+1 < len(chain) {
			next = chain[i+1]
		}
		switch {
		case kind == 44:
			var offset uint16
			if !shaped && g.chance(30) {
				offset = pick(g, fragmentOffsets(g))
			}
			h := fragment(next, offset, g.chance(50))
			h[3] |= byte(g.r.IntN(4)) << 1 // reserved bits
			exts = append(exts, h...)
		case !big && g.chance(3):
			big = true
			exts = append(exts, extension(next, uint8(200+g.r.IntN(56)))...)
		default:
			exts = append(exts, extension(next, uint8(g.r.IntN(3)))...)
		}
	}
	first := proto
	if len(chain) > 0 {
		first = chain[0]
	}
	return cat(ipv6(src, dst, first), exts, g.transport(f, aims))
}
