package filter

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Options holds the filter options as given on the command line; an empty
// string is an absent option. -I is not here: the caller resolves the device
// name and sets Filter.Ifindex and Filter.Ifname.
type Options struct {
	Saddr, Daddr, Addr string // -s, -d, -N
	Sport, Dport, Port string // -S, -D, -P
	Proto              string // -p
}

// OptionError is a filter option that Parse refused.
type OptionError struct {
	Option string // "-s"
	Value  string // as given
	// OtherOption and OtherValue name a second option when the two
	// together are the problem; otherwise they are empty.
	OtherOption, OtherValue string
	Reason                  string
}

func (e *OptionError) Error() string {
	s := e.Option + " " + e.Value
	if e.OtherOption != "" {
		s += " " + e.OtherOption + " " + e.OtherValue
	}
	return s + ": " + e.Reason
}

// Parse checks the filter options and returns the Filter they describe.
//
// An address option takes an IPv4 or IPv6 address (a /32 or /128) or a
// prefix; host bits are masked off, so 10.0.0.1/24 is 10.0.0.0/24. An
// IPv4-mapped IPv6 address, ::ffff:a.b.c.d, means the IPv4 address a.b.c.d:
// dual-stack sockets show IPv4 peers that way, and their packets are IPv4 on
// the wire. Likewise a mapped prefix ::ffff:a.b.c.d/n with n >= 96 means the
// IPv4 prefix a.b.c.d/(n-96), so ::ffff:0:0/96 is every IPv4 address. A
// shorter prefix reaches outside the mapped range and stays IPv6.
//
// A port option takes a port or an inclusive range LO-HI within 0-65535.
// -p takes a protocol name (tcp, udp, icmp, icmp6 alias ipv6-icmp or
// icmpv6, sctp, udplite, gre, esp, ah; any case) or a number 0-255.
//
// Options that no packet could satisfy together (an IPv4 and an IPv6
// address, ports with a protocol that has none, an IPv6 address with an
// extension header as protocol) are refused. Every error is an
// *OptionError.
func Parse(o Options) (Filter, error) {
	var f Filter
	var err error
	addrs := []struct {
		option, value string
		dst           *netip.Prefix
	}{{"-s", o.Saddr, &f.Src}, {"-d", o.Daddr, &f.Dst}, {"-N", o.Addr, &f.Addr}}
	for _, a := range addrs {
		if a.value == "" {
			continue
		}
		if *a.dst, err = parsePrefix(a.option, a.value); err != nil {
			return Filter{}, err
		}
	}
	for i, a := range addrs {
		for _, b := range addrs[i+1:] {
			if a.dst.IsValid() && b.dst.IsValid() && a.dst.Addr().Is4() != b.dst.Addr().Is4() {
				return Filter{}, &OptionError{a.option, a.value, b.option, b.value,
					a.option + " is " + family(*a.dst) + " and " + b.option + " is " + family(*b.dst) + ", so no packet can match"}
			}
		}
	}

	ports := []struct {
		option, value string
		dst           *PortRange
	}{{"-S", o.Sport, &f.Sport}, {"-D", o.Dport, &f.Dport}, {"-P", o.Port, &f.Port}}
	for _, p := range ports {
		if p.value == "" {
			continue
		}
		if *p.dst, err = parsePortRange(p.option, p.value); err != nil {
			return Filter{}, err
		}
	}

	if o.Proto == "" {
		return f, nil
	}
	if f.Proto, err = parseProtocol(o.Proto); err != nil {
		return Filter{}, err
	}
	if !carriesPorts(f.Proto.Number) {
		for _, p := range ports {
			if p.value != "" {
				return Filter{}, &OptionError{"-p", o.Proto, p.option, p.value,
					"protocol " + f.Proto.String() + " has no ports, so no packet can match"}
			}
		}
	}
	if isExtensionHeader(f.Proto.Number) {
		for _, a := range addrs {
			if a.dst.IsValid() && a.dst.Addr().Is6() {
				return Filter{}, &OptionError{"-p", o.Proto, a.option, a.value,
					"protocol " + f.Proto.String() + " is an IPv6 extension header, which is walked past, so no packet can match"}
			}
		}
	}
	return f, nil
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parsePrefix parses an address or prefix, masks its host bits and turns
// IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix length >= 96) into IPv4.
func parsePrefix(option, value string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(value, "/") {
		var err error
		if p, err = netip.ParsePrefix(value); err != nil {
			return netip.Prefix{}, &OptionError{Option: option, Value: value, Reason: "not an IP address or prefix"}
		}
	} else {
		a, err := netip.ParseAddr(value)
		if err != nil {
			return netip.Prefix{}, &OptionError{Option: option, Value: value, Reason: "not an IP address or prefix"}
		}
		if a.Zone() != "" {
			return netip.Prefix{}, &OptionError{Option: option, Value: value, Reason: "an address with a zone cannot be matched (use -I for the device)"}
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// parsePortRange parses "PORT" or "LO-HI".
func parsePortRange(option, value string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(value, "-")
	if !isRange {
		hi = lo
	}
	l, err := parsePort(option, value, lo)
	if err != nil {
		return PortRange{}, err
	}
	h, err := parsePort(option, value, hi)
	if err != nil {
		return PortRange{}, err
	}
	if l > h {
		return PortRange{}, &OptionError{Option: option, Value: value, Reason: "range is reversed"}
	}
	return PortRange{Lo: l, Hi: h, Set: true}, nil
}

func parsePort(option, value, port string) (uint16, error) {
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, &OptionError{Option: option, Value: value, Reason: "port out of range 0-65535"}
	case err != nil:
		return 0, &OptionError{Option: option, Value: value, Reason: "not a port or a range LO-HI"}
	}
	return uint16(n), nil
}

// protocolNames are the names -p accepts; the first name of a number is the
// one String prints.
var protocolNames = []struct {
	name   string
	number uint8
}{
	{"icmp", 1},
	{"tcp", protoTCP},
	{"udp", protoUDP},
	{"gre", 47},
	{"esp", 50},
	{"ah", 51},
	{"icmp6", 58},
	{"ipv6-icmp", 58},
	{"icmpv6", 58},
	{"sctp", protoSCTP},
	{"udplite", protoUDPLite},
}

func parseProtocol(value string) (Protocol, error) {
	for _, n := range protocolNames {
		if strings.EqualFold(value, n.name) {
			return Protocol{Number: n.number, Set: true}, nil
		}
	}
	n, err := strconv.ParseUint(value, 10, 8)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return Protocol{}, &OptionError{Option: "-p", Value: value, Reason: "protocol out of range 0-255"}
	case err != nil:
		return Protocol{}, &OptionError{Option: "-p", Value: value, Reason: "unknown protocol (a name such as tcp, or a number 0-255)"}
	}
	return Protocol{Number: uint8(n), Set: true}, nil
}
