package filter

import "testing"

func TestFamiliesAndProtocols(t *testing.T) {
	for _, c := range []struct {
		opts           Options
		ipv4, ipv6     bool
		tcp, udp, icmp bool
	}{
		{Options{}, true, true, true, true, true},
		{Options{Saddr: "10.0.0.1"}, true, false, true, true, true},
		{Options{Addr: "fd00::/8"}, false, true, true, true, true},
		{Options{Daddr: "::ffff:10.0.0.1"}, true, false, true, true, true},
		{Options{Proto: "udp"}, true, true, false, true, false},
		{Options{Port: "53"}, true, true, true, true, false},
		{Options{Proto: "icmp"}, true, true, false, false, true},
		{Options{Proto: "44"}, true, false, false, false, false},
	} {
		f, err := Parse(c.opts)
		if err != nil {
			t.Fatal(err)
		}
		ipv4, ipv6 := f.Families()
		got := []bool{ipv4, ipv6, f.AllowsProtocol(6), f.AllowsProtocol(17), f.AllowsProtocol(1)}
		want := []bool{c.ipv4, c.ipv6, c.tcp, c.udp, c.icmp}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%+v: ipv4, ipv6, tcp, udp, icmp = %v, want %v", c.opts, got, want)
				break
			}
		}
	}
}
