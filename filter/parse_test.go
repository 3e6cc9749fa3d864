package filter

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseRejects(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Saddr: "300.1.1.1"}, "-s 300.1.1.1: not an IP address or prefix"},
		{Options{Daddr: "10.0.0.0/33"}, "-d 10.0.0.0/33: not an IP address or prefix"},
		{Options{Addr: "fd00::/129"}, "-N fd00::/129: not an IP address or prefix"},
		{Options{Saddr: "10.0.0.0/"}, "-s 10.0.0.0/: not an IP address or prefix"},
		{Options{Saddr: "10.0.0.0/-1"}, "-s 10.0.0.0/-1: not an IP address or prefix"},
		{Options{Saddr: "host.example"}, "-s host.example: not an IP address or prefix"},
		{Options{Saddr: " 10.0.0.1"}, "-s  10.0.0.1: not an IP address or prefix"},
		{Options{Saddr: "fe80::1%eth0/64"}, "-s fe80::1%eth0/64: not an IP address or prefix"},
		{Options{Saddr: "fe80::1%eth0"}, "-s fe80::1%eth0: an address with a zone cannot be matched (use -I for the device)"},
		{Options{Saddr: "10.0.0.0/8", Daddr: "fd00::1"}, "-s 10.0.0.0/8 -d fd00::1: -s is IPv4 and -d is IPv6, so no packet can match"},
		{Options{Saddr: "fd00::1", Addr: "10.0.0.1"}, "-s fd00::1 -N 10.0.0.1: -s is IPv6 and -N is IPv4, so no packet can match"},
		{Options{Daddr: "::ffff:10.0.0.1", Addr: "::1"}, "-d ::ffff:10.0.0.1 -N ::1: -d is IPv4 and -N is IPv6, so no packet can match"},
		{Options{Sport: "70000"}, "-S 70000: port out of range 0-65535"},
		{Options{Dport: "1-65536"}, "-D 1-65536: port out of range 0-65535"},
		{Options{Port: "99999999999999999999999"}, "-P 99999999999999999999999: port out of range 0-65535"},
		{Options{Port: "9-3"}, "-P 9-3: range is reversed"},
		{Options{Sport: "http"}, "-S http: not a port or a range LO-HI"},
		{Options{Sport: "-1"}, "-S -1: not a port or a range LO-HI"},
		{Options{Sport: "80-"}, "-S 80-: not a port or a range LO-HI"},
		{Options{Sport: "1-2-3"}, "-S 1-2-3: not a port or a range LO-HI"},
		{Options{Sport: "+80"}, "-S +80: not a port or a range LO-HI"},
		{Options{Sport: "0x50"}, "-S 0x50: not a port or a range LO-HI"},
		{Options{Proto: "foo"}, "-p foo: unknown protocol (a name such as tcp, or a number 0-255)"},
		{Options{Proto: "-1"}, "-p -1: unknown protocol (a name such as tcp, or a number 0-255)"},
		{Options{Proto: "256"}, "-p 256: protocol out of range 0-255"},
		{Options{Proto: "icmp", Dport: "80"}, "-p icmp -D 80: protocol icmp has no ports, so no packet can match"},
		{Options{Proto: "47", Sport: "1-2", Port: "3"}, "-p 47 -S 1-2: protocol gre has no ports, so no packet can match"},
		{Options{Proto: "44", Daddr: "fd00::/8"}, "-p 44 -d fd00::/8: protocol 44 is an IPv6 extension header, which is walked past, so no packet can match"},
	} {
		_, err := Parse(c.o)
		var oerr *OptionError
		if !errors.As(err, &oerr) {
			t.Errorf("%+v: error %v, want an *OptionError", c.o, err)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%+v:\n got %s\nwant %s", c.o, err, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	p := netip.MustParsePrefix
	for _, c := range []struct {
		o    Options
		want Filter
	}{
		{Options{}, Filter{}},
		{Options{Saddr: "10.0.0.1"}, Filter{Src: p("10.0.0.1/32")}},
		{Options{Saddr: "10.0.0.1/24"}, Filter{Src: p("10.0.0.0/24")}},
		{Options{Daddr: "fd00::1:2/64"}, Filter{Dst: p("fd00::/64")}},
		{Options{Addr: "::1"}, Filter{Addr: p("::1/128")}},
		{Options{Saddr: "0.0.0.0/0", Daddr: "200.0.0.0/8"}, Filter{Src: p("0.0.0.0/0"), Dst: p("200.0.0.0/8")}},
		// IPv4-mapped IPv6 is IPv4 down to /96; shorter prefixes stay IPv6.
		{Options{Saddr: "::ffff:1.2.3.4"}, Filter{Src: p("1.2.3.4/32")}},
		{Options{Saddr: "::ffff:1.2.3.4/120"}, Filter{Src: p("1.2.3.0/24")}},
		{Options{Saddr: "::ffff:0:0/96"}, Filter{Src: p("0.0.0.0/0")}},
		{Options{Saddr: "::ffff:0:0/95"}, Filter{Src: p("::fffe:0:0/95")}},
		{Options{Saddr: "::ffff:1.2.3.4", Daddr: "10.0.0.0/8"}, Filter{Src: p("1.2.3.4/32"), Dst: p("10.0.0.0/8")}},
		{Options{Sport: "80"}, Filter{Sport: PortRange{80, 80, true}}},
		{Options{Dport: "8000-8100"}, Filter{Dport: PortRange{8000, 8100, true}}},
		{Options{Port: "0-65535"}, Filter{Port: PortRange{0, 65535, true}}},
		{Options{Port: "0"}, Filter{Port: PortRange{0, 0, true}}},
		{Options{Port: "053"}, Filter{Port: PortRange{53, 53, true}}},
		{Options{Proto: "tcp"}, Filter{Proto: Protocol{6, true}}},
		{Options{Proto: "UDP"}, Filter{Proto: Protocol{17, true}}},
		{Options{Proto: "icmp"}, Filter{Proto: Protocol{1, true}}},
		{Options{Proto: "icmp6"}, Filter{Proto: Protocol{58, true}}},
		{Options{Proto: "ipv6-icmp"}, Filter{Proto: Protocol{58, true}}},
		{Options{Proto: "icmpv6"}, Filter{Proto: Protocol{58, true}}},
		{Options{Proto: "sctp"}, Filter{Proto: Protocol{132, true}}},
		{Options{Proto: "udplite"}, Filter{Proto: Protocol{136, true}}},
		{Options{Proto: "gre"}, Filter{Proto: Protocol{47, true}}},
		{Options{Proto: "esp"}, Filter{Proto: Protocol{50, true}}},
		{Options{Proto: "ah"}, Filter{Proto: Protocol{51, true}}},
		{Options{Proto: "0"}, Filter{Proto: Protocol{0, true}}},
		{Options{Proto: "255"}, Filter{Proto: Protocol{255, true}}},
		{Options{Proto: "44", Saddr: "10.0.0.1"}, Filter{Src: p("10.0.0.1/32"), Proto: Protocol{44, true}}},
		{Options{Proto: "udplite", Port: "53"}, Filter{Proto: Protocol{136, true}, Port: PortRange{53, 53, true}}},
	} {
		got, err := Parse(c.o)
		if err != nil {
			t.Errorf("%+v: %v", c.o, err)
			continue
		}
		if got != c.want {
			t.Errorf("%+v: got %+v, want %+v", c.o, got, c.want)
		}
	}
}

func TestFilterString(t *testing.T) {
	f, err := Parse(Options{Saddr: "10.0.0.1/8", Addr: "10.1.0.0/16", Proto: "udp", Dport: "53", Port: "1000-2000"})
	if err != nil {
		t.Fatal(err)
	}
	f.Ifindex, f.Ifname = 2, "eth0"
	const want = "dev eth0 (ifindex 2) and src 10.0.0.0/8 and src or dst 10.1.0.0/16 and proto udp and dst port 53 and src or dst port 1000-2000"
	if got := f.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := (Filter{}).String(); got != "any packet" {
		t.Errorf("empty filter: %s", got)
	}
}
