// Package filter turns skbstat's packet filter options (-s, -d, -N, -S, -D,
// -P, -p, -I) into a Filter, and a Filter into BPF instructions that decide,
// in the kernel, whether a packet matches. Every constant is an instruction
// immediate, and packet memory is reached only through a Source, so the same
// filter code serves every kind of probe.
//
// What a packet must satisfy:
//
//   - A Filter without conditions matches every packet, IP or not.
//   - The device condition (Ifindex) applies to every packet, IP or not.
//     With a namespace (Netns), the device must be in that network
//     namespace too: indices are numbered per namespace. A packet without
//     a device matches no device condition.
//   - The namespace condition alone (Netns, no Ifindex) is the network
//     namespace of the packet's device, else of its socket. A packet with
//     neither that satisfies every other condition is not decided: the
//     code jumps to UndecidedLabel(reject, NoNamespace).
//   - Any address, port or protocol condition matches only IPv4 and IPv6
//     packets (by the ethertype the Source reports, which for an skb is the
//     one behind up to two VLAN tags in the packet data, the IP header
//     following the tags) whose IP version field agrees with the ethertype
//     and whose fixed header (20 or 40 bytes) can be read.
//   - Address conditions compare the IP header's source and destination.
//     A prefix of length 0 still selects its family: -s 0.0.0.0/0 matches
//     every IPv4 packet.
//   - The protocol is the IPv4 protocol field or, for IPv6, the header that
//     follows the extension headers (hop-by-hop, routing, fragment,
//     destination options). A chain that cannot be read matches no protocol
//     or port condition. A chain longer than MaxExtensionHeaders is not
//     decided: the code jumps to UndecidedLabel(reject, LongChain), so that
//     the caller counts it apart instead of losing it. So for IPv6 the
//     extension header numbers 0, 43, 44 and 60 are never the protocol: a
//     protocol condition on one of them matches IPv4 packets only.
//   - A protocol condition matches fragments after the first, too: their
//     protocol is known (for IPv6, the fragment header's next header; the
//     walk stops there, because what follows is payload).
//   - Port conditions match only TCP, UDP, UDP-Lite and SCTP, and never a
//     fragment after the first (IPv4 fragment offset or IPv6 fragment header
//     offset not zero), which carries no ports. The 4 port bytes must be
//     readable, and an IPv4 header length (IHL) below 5 matches no port
//     condition; other conditions do not look at the IHL.
//   - Length fields (IPv4 total length, IPv6 payload length) are not
//     consulted: what counts is which bytes the Source can read.
package filter

import (
	"fmt"
	"github.com/cilium/ebpf/asm"
	"net/netip"
	"slices"
	"strings"
)

// Filter is a parsed packet filter: every condition that is set must hold.
// The zero value has no conditions and matches every packet.
type Filter struct {
	// Src and Dst are prefixes the packet's source and destination address
	// must lie in; Addr is one that either of them must lie in (-N). An
	// invalid (zero) Prefix is no condition.
	Src, Dst, Addr netip.Prefix
	// Sport and Dport are ranges the source and destination port must lie
	// in; Port is one that either of them must lie in (-P).
	Sport, Dport, Port PortRange
	// Proto is the upper-layer protocol (-p).
	Proto Protocol
	// Ifindex is the index of the network device the packet must be on
	// (-I); 0 is no condition. Ifname is that device's name, for messages.
	Ifindex int
	Ifname  string
	// Netns is the inode number of the network namespace the packet must
	// be in (--netns, and -I's device's); 0 is no condition.
	Netns uint32
}

// PortRange is an inclusive range of port numbers, compared in host order.
// Its zero value is no condition.
type PortRange struct {
	Lo, Hi uint16
	Set    bool
}

// Protocol is an IP protocol number (IPv4 protocol field, IPv6 next
// header). Its zero value is no condition.
type Protocol struct {
	Number uint8
	Set    bool
}

// String returns the protocol's name as -p accepts it, or its number.
func (p Protocol) String() string {
	for _, n := range protocolNames {
		if n.number == p.Number {
			return n.name
		}
	}
	return fmt.Sprint(p.Number)
}

// String returns the range as -S, -D and -P accept it: "80" or "8000-8100".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// String summarises the filter for humans, for example
// "src 10.0.0.0/8 and proto udp and src or dst port 53".
func (f Filter) String() string {
	var conds []string
	switch {
	case f.Ifindex != 0 && f.Netns != 0:
		conds = append(conds, fmt.Sprintf("dev %s (ifindex %d) in netns %d", f.Ifname, f.Ifindex, f.Netns))
	case f.Ifindex != 0:
		conds = append(conds, fmt.Sprintf("dev %s (ifindex %d)", f.Ifname, f.Ifindex))
	case f.Netns != 0:
		conds = append(conds, fmt.Sprintf("netns %d", f.Netns))
	}
	for _, a := range []struct {
		what string
		p    netip.Prefix
	}{{"src", f.Src}, {"dst", f.Dst}, {"src or dst", f.Addr}} {
		if a.p.IsValid() {
			conds = append(conds, a.what+" "+a.p.String())
		}
	}
	if f.Proto.Set {
		conds = append(conds, "proto "+f.Proto.String())
	}
	for _, p := range []struct {
		what string
		r    PortRange
	}{{"src port", f.Sport}, {"dst port", f.Dport}, {"src or dst port", f.Port}} {
		if p.r.Set {
			conds = append(conds, p.what+" "+p.r.String())
		}
	}
	if len(conds) == 0 {
		return "any packet"
	}
	return strings.Join(conds, " and ")
}

// MaxExtensionHeaders is how many IPv6 extension headers the protocol and
// port conditions walk past. RFC 8200's recommended order has at most five
// of the walked kinds, but the kernel's own walk has no limit, so longer
// chains are walked too, up to a bound that keeps the verifier's work
// small; a packet with more is counted as undecided.
const MaxExtensionHeaders = 64

// Undecided is why the filter code could not decide whether a packet
// matches. Such a packet is neither counted nor rejected: the code jumps to
// UndecidedLabel, where the caller counts it apart.
type Undecided int

// The reasons a packet can be undecided.
const (
	// LongChain: an IPv6 extension header chain longer than
	// MaxExtensionHeaders hides the protocol and ports.
	LongChain Undecided = iota
	// NoNamespace: a namespace condition, and neither the packet's device
	// nor its socket tells its network namespace.
	NoNamespace
	NumUndecided
)

var undecidedText = [NumUndecided]string{
	LongChain:   fmt.Sprintf("IPv6 header chain longer than %d", MaxExtensionHeaders),
	NoNamespace: "no device or socket to tell the network namespace",
}

func (u Undecided) String() string { return undecidedText[u] }

// Key names u for machines, in JSON and metrics: "ipv6_chain".
func (u Undecided) Key() string { return [NumUndecided]string{"ipv6_chain", "namespace"}[u] }

// UndecidedLabel is the label that the code of a filter with reject label
// reject jumps to for packets it cannot decide for reason u. The caller
// defines it, after the filter's code, wherever the code refers to it.
func UndecidedLabel(reject string, u Undecided) string {
	return fmt.Sprintf("%s_undecided_%d", reject, u)
}

// UndecidedIn returns the reasons whose UndecidedLabel insns, code of a
// filter with reject label reject, jumps to: the labels its caller must
// define, and only those (the verifier refuses unreachable code).
func UndecidedIn(insns asm.Instructions, reject string) []Undecided {
	var found []Undecided
	for u := range NumUndecided {
		label := UndecidedLabel(reject, u)
		if slices.ContainsFunc(insns, func(ins asm.Instruction) bool { return ins.Reference() == label }) {
			found = append(found, u)
		}
	}
	return found
}

// IP protocol numbers the filter treats specially.
const (
	protoHopByHop = 0
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDstOpts  = 60
	protoSCTP     = 132
	protoUDPLite  = 136
)

// carriesPorts reports whether protocol n starts with 16-bit source and
// destination ports.
func carriesPorts(n uint8) bool {
	switch n {
	case protoTCP, protoUDP, protoSCTP, protoUDPLite:
		return true
	}
	return false
}

// isExtensionHeader reports whether n is an IPv6 extension header that the
// protocol walk passes over.
func isExtensionHeader(n uint8) bool {
	switch n {
	case protoHopByHop, protoRouting, protoFragment, protoDstOpts:
		return true
	}
	return false
}

// hasPortCondition reports whether any of -S, -D, -P is given.
func (f Filter) hasPortCondition() bool {
	return f.Sport.Set || f.Dport.Set || f.Port.Set
}

// hasIPCondition reports whether any condition needs the IP header.
func (f Filter) hasIPCondition() bool {
	return f.Src.IsValid() || f.Dst.IsValid() || f.Addr.IsValid() || f.Proto.Set || f.hasPortCondition()
}

// Families reports which IP versions can satisfy the filter's address and
// protocol conditions.
func (f Filter) Families() (ipv4, ipv6 bool) {
	ipv4, ipv6 = true, true
	for _, p := range []netip.Prefix{f.Src, f.Dst, f.Addr} {
		if p.IsValid() {
			ipv4 = ipv4 && p.Addr().Is4()
			ipv6 = ipv6 && p.Addr().Is6()
		}
	}
	if f.Proto.Set && isExtensionHeader(f.Proto.Number) {
		ipv6 = false
	}
	return ipv4, ipv6
}

// AllowsProtocol reports whether a packet of upper-layer protocol n can
// satisfy the filter's protocol and port conditions.
func (f Filter) AllowsProtocol(n uint8) bool {
	if f.Proto.Set {
		return f.Proto.Number == n
	}
	return !f.hasPortCondition() || carriesPorts(n)
}

// satisfiable reports whether any packet at all can match.
func (f Filter) satisfiable() bool {
	if f.Ifindex < 0 || int64(f.Ifindex) > 1<<31-1 {
		return false // the kernel's ifindex is a positive int
	}
	if f.hasPortCondition() && f.Proto.Set && !carriesPorts(f.Proto.Number) {
		return false
	}
	ipv4, ipv6 := f.Families()
	return ipv4 || ipv6
}
