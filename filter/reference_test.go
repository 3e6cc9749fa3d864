package filter

import (
	"encoding/binary"
	"net/netip"
)

// verdict is what the filter decides about a packet.
type verdict int

const (
	rejected verdict = iota
	matched
	// undecided is the first of the verdicts of packets not decided, one
	// per reason (Undecided).
	undecided
)

// undecidedFor is the verdict on a packet not decided for reason u.
func undecidedFor(u Undecided) verdict { return undecided + verdict(u) }

func (v verdict) String() string {
	if v >= undecided {
		return "undecided: " + Undecided(v-undecided).String()
	}
	return [...]string{"rejected", "matched"}[v]
}

// matchedIf is matched where ok holds, else rejected.
func matchedIf(ok bool) verdict {
	if ok {
		return matched
	}
	return rejected
}

// referenceMatch is the filter's meaning in plain Go, written apart from the
// code generator: it decides whether an Ethernet frame that came in as at
// says matches f. The kernel's verdict must always agree with it.
func referenceMatch(f Filter, frame []byte, at arrival) verdict {
	if f.Ifindex != 0 && (at == nowhere || f.Ifindex != at.ifindex || f.Netns != 0 && f.Netns != at.netns) {
		return rejected
	}
	v := referencePacketMatch(f, frame)
	switch {
	case v != matched || f.Ifindex != 0 || f.Netns == 0:
		return v
	case at == nowhere:
		return undecidedFor(NoNamespace)
	}
	return matchedIf(f.Netns == at.netns)
}

// referencePacketMatch decides the conditions on the frame's bytes.
func referencePacketMatch(f Filter, frame []byte) verdict {
	ports := f.Sport.Set || f.Dport.Set || f.Port.Set
	if !f.Src.IsValid() && !f.Dst.IsValid() && !f.Addr.IsValid() && !f.Proto.Set && !ports {
		return matched
	}
	if len(frame) < 14 {
		return rejected
	}
	var p ipPacket
	var ok bool
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		p, ok = parseIPv4(frame[14:])
	case 0x86dd:
		p, ok = parseIPv6(frame[14:])
	}
	if !ok {
		return rejected
	}
	if f.Src.IsValid() && !f.Src.Contains(p.src) ||
		f.Dst.IsValid() && !f.Dst.Contains(p.dst) ||
		f.Addr.IsValid() && !f.Addr.Contains(p.src) && !f.Addr.Contains(p.dst) {
		return rejected
	}
	if (f.Proto.Set || ports) && p.chainTooLong {
		return undecidedFor(LongChain)
	}
	if f.Proto.Set && (!p.protoKnown || p.proto != f.Proto.Number) {
		return rejected
	}
	if !ports {
		return matched
	}
	switch {
	case !p.protoKnown, p.laterFragment, !p.transportKnown:
		return rejected
	case p.proto != 6 && p.proto != 17 && p.proto != 132 && p.proto != 136:
		return rejected
	case len(p.ip) < p.transport+4:
		return rejected
	}
	sport := binary.BigEndian.Uint16(p.ip[p.transport:])
	dport := binary.BigEndian.Uint16(p.ip[p.transport+2:])
	in := func(r PortRange, port uint16) bool { return r.Lo <= port && port <= r.Hi }
	return matchedIf((!f.Sport.Set || in(f.Sport, sport)) &&
		(!f.Dport.Set || in(f.Dport, dport)) &&
		(!f.Port.Set || in(f.Port, sport) || in(f.Port, dport)))
}

// ipPacket is what the reference learns from an IP header.
type ipPacket struct {
	ip             []byte // from the network header to the end of the frame
	src, dst       netip.Addr
	proto          uint8
	protoKnown     bool // false: extension header chain unreadable or too long
	chainTooLong   bool // more than MaxExtensionHeaders extension headers
	laterFragment  bool // a fragment after the first
	transport      int  // offset of the transport header in ip
	transportKnown bool // false: IPv4 IHL below 5
}

func parseIPv4(ip []byte) (ipPacket, bool) {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return ipPacket{}, false
	}
	ihl := int(ip[0] & 0xf)
	return ipPacket{
		ip:             ip,
		src:            netip.AddrFrom4([4]byte(ip[12:16])),
		dst:            netip.AddrFrom4([4]byte(ip[16:20])),
		proto:          ip[9],
		protoKnown:     true,
		laterFragment:  binary.BigEndian.Uint16(ip[6:])&0x1fff != 0,
		transport:      4 * ihl,
		transportKnown: ihl >= 5,
	}, true
}

func parseIPv6(ip []byte) (ipPacket, bool) {
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return ipPacket{}, false
	}
	p := ipPacket{
		ip:             ip,
		src:            netip.AddrFrom16([16]byte(ip[8:24])),
		dst:            netip.AddrFrom16([16]byte(ip[24:40])),
		transportKnown: true,
	}
	p.proto, p.transport, p.laterFragment, p.protoKnown, p.chainTooLong = walkIPv6(ip)
	return p, true
}

// walkIPv6 follows the next header fields past at most
// MaxExtensionHeaders hop-by-hop, routing, fragment and destination options
// headers. It stops at a fragment after the first, whose next header is the
// protocol but whose payload is no header. An extension header is never the
// protocol.
func walkIPv6(ip []byte) (proto uint8, off int, laterFragment, ok, tooLong bool) {
	proto, off = ip[6], 40
	for range MaxExtensionHeaders {
		switch proto {
		case 0, 43, 60:
			if len(ip) < off+8 {
				return 0, 0, false, false, false
			}
			proto, off = ip[off], off+8*(int(ip[off+1])+1)
		case 44:
			if len(ip) < off+8 {
				return 0, 0, false, false, false
			}
			proto = ip[off]
			if binary.BigEndian.Uint16(ip[off+2:])&0xfff8 != 0 {
				return proto, off + 8, true, !isExtensionHeader(proto), false
			}
			off += 8
		default:
			return proto, off, false, true, false
		}
	}
	if isExtensionHeader(proto) {
		return 0, 0, false, false, true
	}
	return proto, off, false, true, false
}
