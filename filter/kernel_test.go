package filter

import (
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
)

// seedEnv overrides the differential test's random seed, to replay a run.
const seedEnv = "FILTER_TEST_SEED"

func testSeed(t *testing.T) uint64 {
	seed := rand.Uint64()
	if s := os.Getenv(seedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, seedEnv, seed)
	return seed
}

// Options, one bit each in a combination.
const (
	optSaddr = 1 << iota
	optDaddr
	optAddr
	optSport
	optDport
	optPort
	optProto
	optInterface
	optNetns
	allOptions = 1<<iota - 1
)

// randomOptions returns values for the options in combination, which
// together can match: addresses of one family, a protocol with ports where
// a port option is given, no extension header as protocol with IPv6
// addresses. It also returns the ifindex for -I and the namespace inode
// (--netns, or -I's device's).
func randomOptions(r *rand.Rand, combination int) (Options, int, uint32) {
	addrs := ipv4Options
	if r.IntN(2) == 0 {
		addrs = ipv6Options
	}
	var o Options
	value := func(bit int, from []string) string {
		if combination&bit == 0 {
			return ""
		}
		return from[r.IntN(len(from))]
	}
	o.Saddr = value(optSaddr, addrs)
	o.Daddr = value(optDaddr, addrs)
	o.Addr = value(optAddr, addrs)
	o.Sport = value(optSport, portOptions)
	o.Dport = value(optDport, portOptions)
	o.Port = value(optPort, portOptions)
	var protos []string
	for _, p := range append(append([]string{}, portProtoOptions...), otherProtoOptions...) {
		n, _ := parseProtocol(p)
		ipv6 := o.Saddr+o.Daddr+o.Addr != "" && addrs[0] == ipv6Options[0]
		ports := o.Sport+o.Dport+o.Port != ""
		if !(ports && !carriesPorts(n.Number) || ipv6 && isExtensionHeader(n.Number)) {
			protos = append(protos, p)
		}
	}
	o.Proto = value(optProto, protos)
	var ifindex int
	if combination&optInterface != 0 {
		ifindex = loIfindex
		if r.IntN(2) == 0 {
			ifindex = 2 + r.IntN(1000) // not the device the test packets come in on
		}
	}
	var netns uint32
	if combination&optNetns != 0 {
		netns = xdpNetns
		if r.IntN(2) == 0 {
			netns = xdpNetns + 1 + r.Uint32N(1000) // not the one the test Source claims
		}
	}
	return o, ifindex, netns
}

// randomArrival is where the frames of a filter come from: mostly
// loopback, sometimes nowhere (no device, no socket).
func randomArrival(r *rand.Rand) arrival {
	if r.IntN(4) == 0 {
		return nowhere
	}
	return onLoopback
}

// TestKernelMatchesReference runs every combination of options, four times
// with random values, on random frames in the kernel and compares each verdict
// with referenceMatch.
func TestKernelMatchesReference(t *testing.T) {
	requireBPF(t)
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 0))
	g := newFrameGenerator(r)
	const framesPerFilter = 300
	var runs, matches, failures int
	for combination := range allOptions + 1 {
		for range 4 {
			o, ifindex, netns := randomOptions(r, combination)
			f, err := Parse(o)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			f.Ifindex, f.Netns = ifindex, netns
			at := randomArrival(r)
			prog := loadFilter(t, f, at)
			for range framesPerFilter {
				frame := g.frame(f)
				got := runFilter(t, prog, frame)
				if want := referenceMatch(f, frame, at); got != want {
					failures++
					if failures <= 10 {
						t.Errorf("seed %d: %+v -I %d --netns %d (%s) from %+v: kernel %v, reference %v on frame\n%s",
							seed, o, ifindex, netns, f, at, got, want, hex.Dump(frame))
					}
				}
				runs++
				if got == matched {
					matches++
				}
			}
			prog.Close()
		}
	}
	t.Logf("%d frames, %d matched, %d disagreements", runs, matches, failures)
	// The generator aims at the conditions' edges: both verdicts must be common.
	if matches < runs/10 || matches > runs*9/10 {
		t.Errorf("seed %d: %d of %d frames matched: the generator misses the filters", seed, matches, runs)
	}
}

// TestKernelCases states the semantics case by case, for both the kernel
// and the reference.
func TestKernelCases(t *testing.T) {
	requireBPF(t)
	a := netip.MustParseAddr
	v4 := func(src, dst string, proto uint8, frag uint16, rest ...[]byte) []byte {
		return ethernet(etherIPv4, cat(append([][]byte{ipv4(a(src), a(dst), proto, frag, nil)}, rest...)...))
	}
	v6 := func(src, dst string, next uint8, rest ...[]byte) []byte {
		return ethernet(etherIPv6, cat(append([][]byte{ipv6(a(src), a(dst), next)}, rest...)...))
	}
	udp := v4("10.0.0.1", "200.1.2.3", 17, 0, ports(1234, 53))
	udp6 := v6("fd00::1", "ff02::1", 17, ports(1234, 53))
	ipv4Options := ethernet(etherIPv4, cat(ipv4(a("10.0.0.1"), a("10.0.0.2"), 6, 0, make([]byte, 8)), ports(1234, 80)))
	ihl4 := v4("10.0.0.1", "10.0.0.2", 6, 0, ports(1234, 80))
	ihl4[ethHeaderLen] = 0x44
	version6 := append([]byte{}, udp...)
	version6[ethHeaderLen] = 0x65
	chain := func(n int, proto uint8) []byte {
		var exts []byte
		for i := range n {
			next := uint8(60)
			if i+1 == n {
				next = proto
			}
			exts = append(exts, extension(next, 1)...)
		}
		first := proto
		if n > 0 {
			first = 60
		}
		return v6("fd00::1", "fd00::2", first, exts, ports(1234, 53))
	}
	cases := []struct {
		name  string
		o     Options
		frame []byte
		want  verdict
	}{
		{"no condition, ARP", Options{}, ethernet(etherARP, make([]byte, 28)), matched},
		{"no condition, bare Ethernet header", Options{}, ethernet(etherIPv4, nil), matched},
		{"any condition, ARP", Options{Proto: "udp"}, ethernet(etherARP, make([]byte, 28)), rejected},
		{"header cut short", Options{Proto: "udp"}, udp[:ethHeaderLen+19], rejected},
		{"high-bit IPv4 prefix", Options{Daddr: "200.0.0.0/8"}, udp, matched},
		{"high-bit IPv4 address", Options{Daddr: "200.1.2.3"}, udp, matched},
		{"high-bit IPv4 prefix, miss", Options{Daddr: "201.0.0.0/8"}, udp, rejected},
		{"IPv4 prefix, IPv6 packet", Options{Saddr: "0.0.0.0/0"}, udp6, rejected},
		{"high-bit IPv6 prefix", Options{Daddr: "ff02::/16"}, udp6, matched},
		{"-N matches the destination", Options{Addr: "ff02::1"}, udp6, matched},
		{"-N matches the source", Options{Addr: "fd00::/8"}, udp6, matched},
		{"-N matches neither", Options{Addr: "fe80::/10"}, udp6, rejected},
		{"mapped IPv4 address", Options{Saddr: "::ffff:10.0.0.1"}, udp, matched},
		{"-P matches the destination", Options{Port: "50-60"}, udp, matched},
		{"-P matches neither", Options{Port: "54-1233"}, udp, rejected},
		// 8270 is 0x204e; the original, comparing network order, took it for 0x4e20.
		{"port range compared in host order", Options{Dport: "8000-8100"}, v4("1.1.1.1", "2.2.2.2", 6, 0, ports(1, 8270)), rejected},
		{"port range compared in host order, inside", Options{Dport: "8000-8100"}, v4("1.1.1.1", "2.2.2.2", 6, 0, ports(1, 8001)), matched},
		{"port condition, ICMP", Options{Dport: "53"}, v4("10.0.0.1", "200.1.2.3", 1, 0, ports(1234, 53)), rejected},
		{"port condition, UDP-Lite", Options{Dport: "53"}, v4("10.0.0.1", "200.1.2.3", 136, 0, ports(1234, 53)), matched},
		{"port condition, first fragment", Options{Dport: "53"}, v4("10.0.0.1", "200.1.2.3", 17, 0x2000, ports(1234, 53)), matched},
		{"port condition, later fragment", Options{Dport: "53"}, v4("10.0.0.1", "200.1.2.3", 17, 0x0001, ports(1234, 53)), rejected},
		{"protocol condition, later fragment", Options{Proto: "udp"}, v4("10.0.0.1", "200.1.2.3", 17, 0x0001), matched},
		{"IPv4 options", Options{Dport: "80"}, ipv4Options, matched},
		{"IHL 4, port condition", Options{Dport: "80"}, ihl4, rejected},
		{"IHL 4, protocol condition", Options{Proto: "tcp"}, ihl4, matched},
		{"version 6 in an IPv4 ethertype", Options{Proto: "udp"}, version6, rejected},
		{"IPv6, five extension headers", Options{Proto: "udp", Dport: "53"}, chain(5, 17), matched},
		{"IPv6, six extension headers", Options{Proto: "udp", Dport: "53"}, chain(6, 17), matched},
		{"IPv6, seven extension headers", Options{Proto: "udp"}, chain(7, 17), matched},
		{"IPv6, as many extension headers as are walked", Options{Proto: "udp", Dport: "53"}, chain(MaxExtensionHeaders, 17), matched},
		{"IPv6, one extension header more", Options{Proto: "udp"}, chain(MaxExtensionHeaders+1, 17), undecidedFor(LongChain)},
		{"IPv6, one extension header more, port condition", Options{Dport: "53"}, chain(MaxExtensionHeaders+1, 17), undecidedFor(LongChain)},
		{"IPv6, one extension header more, address only", Options{Saddr: "fd00::1"}, chain(MaxExtensionHeaders+1, 17), matched},
		{"IPv6, one extension header more, other address", Options{Saddr: "fd00::9", Proto: "udp"}, chain(MaxExtensionHeaders+1, 17), rejected},
		{"IPv6 extension header cut short", Options{Proto: "udp"}, chain(2, 17)[:ethHeaderLen+40+8+12], rejected},
		{"IPv6 later fragment, port condition", Options{Dport: "53"}, v6("fd00::1", "fd00::2", 44, fragment(17, 1, false), ports(1234, 53)), rejected},
		{"IPv6 later fragment, protocol condition", Options{Proto: "udp"}, v6("fd00::1", "fd00::2", 44, fragment(17, 1, false)), matched},
		{"IPv6 first fragment, port condition", Options{Dport: "53"}, v6("fd00::1", "fd00::2", 44, fragment(17, 0, true), ports(1234, 53)), matched},
		{"IPv6 extension header as protocol", Options{Proto: "60"}, chain(1, 17), rejected},
		{"extension header as protocol, IPv4", Options{Proto: "60"}, v4("10.0.0.1", "10.0.0.2", 60, 0), matched},
		{"ICMPv6", Options{Proto: "icmp6"}, v6("fd00::1", "fd00::2", 58, make([]byte, 8)), matched},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := referenceMatch(f, c.frame, onLoopback); got != c.want {
				t.Errorf("reference: %q matched %v, want %v", f, got, c.want)
			}
			prog := loadFilter(t, f, onLoopback)
			defer prog.Close()
			if got := runFilter(t, prog, c.frame); got != c.want {
				t.Errorf("kernel: %q matched %v, want %v\n%v", f, got, c.want, xdpProgram(f, onLoopback))
			}
		})
	}
}

// TestKernelDevice checks -I and --netns on IP and non-IP packets, from a
// device in the namespace the test Source claims and from nowhere (no
// device, no socket).
func TestKernelDevice(t *testing.T) {
	requireBPF(t)
	arp := ethernet(etherARP, make([]byte, 28))
	udp := ethernet(etherIPv4, cat(ipv4(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 17, 0, nil), ports(1, 2)))
	const otherNetns = xdpNetns + 1
	for _, c := range []struct {
		ifindex int
		netns   uint32
		proto   string
		at      arrival
		frame   []byte
		want    verdict
	}{
		{loIfindex, 0, "", onLoopback, arp, matched},
		{loIfindex + 1, 0, "", onLoopback, arp, rejected},
		{loIfindex, 0, "udp", onLoopback, udp, matched},
		{loIfindex + 1, 0, "udp", onLoopback, udp, rejected},
		{loIfindex, 0, "tcp", onLoopback, udp, rejected},
		{loIfindex, 0, "", nowhere, arp, rejected},
		// -I: the device's index in its namespace.
		{loIfindex, xdpNetns, "", onLoopback, arp, matched},
		{loIfindex, otherNetns, "", onLoopback, arp, rejected},
		{loIfindex, xdpNetns, "udp", onLoopback, udp, matched},
		{loIfindex, otherNetns, "udp", onLoopback, udp, rejected},
		{loIfindex, xdpNetns, "tcp", onLoopback, udp, rejected},
		{loIfindex, xdpNetns, "", nowhere, arp, rejected},
		// --netns alone: nowhere is undecided where all else matches.
		{0, xdpNetns, "", onLoopback, arp, matched},
		{0, otherNetns, "", onLoopback, arp, rejected},
		{0, xdpNetns, "udp", onLoopback, udp, matched},
		{0, otherNetns, "udp", onLoopback, udp, rejected},
		{0, xdpNetns, "", nowhere, arp, undecidedFor(NoNamespace)},
		{0, xdpNetns, "udp", nowhere, udp, undecidedFor(NoNamespace)},
		{0, xdpNetns, "tcp", nowhere, udp, rejected},
		{0, xdpNetns, "udp", nowhere, arp, rejected},
	} {
		f, err := Parse(Options{Proto: c.proto})
		if err != nil {
			t.Fatal(err)
		}
		f.Ifindex, f.Netns = c.ifindex, c.netns
		if got := referenceMatch(f, c.frame, c.at); got != c.want {
			t.Errorf("reference: %q from %+v: %v, want %v", f, c.at, got, c.want)
		}
		prog := loadFilter(t, f, c.at)
		if got := runFilter(t, prog, c.frame); got != c.want {
			t.Errorf("kernel: %q from %+v: %v, want %v", f, c.at, got, c.want)
		}
		prog.Close()
	}
}
