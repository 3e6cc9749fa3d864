package progs

import (
	"strings"
	"testing"

	"github.com/skbstat/skbstat/filter"
)

// TestWantedFuncs checks that the filter chooses the function rows as the
// original did.
func TestWantedFuncs(t *testing.T) {
	for _, c := range []struct {
		opts     filter.Options
		ifindex  int
		in, out  bool
		want     []string // rows that must be chosen
		not      []string // rows that must not
		excluded []string
	}{
		{in: true, want: []string{"ip_rcv", "ipv6_rcv", "tcp_v4_rcv", "udpv6_rcv", "icmp_rcv", "tcp_recvmsg"}, not: []string{"ip_output"}},
		{out: true, want: []string{"ip_output", "ip6_finish_output2", "udp_sendmsg", "tcp_sendmsg"}, not: []string{"ip_rcv"}},
		{opts: filter.Options{Saddr: "10.0.0.1"}, in: true, out: true,
			want: []string{"ip_rcv", "udp_rcv", "ip_local_out", "tcp_recvmsg"}, not: []string{"ipv6_rcv", "udpv6_rcv", "__ip6_local_out"}},
		{opts: filter.Options{Addr: "fd00::/8"}, in: true,
			want: []string{"ipv6_rcv", "tcp_v6_rcv", "tcp_recvmsg"}, not: []string{"ip_rcv", "udp_recvmsg"}},
		{opts: filter.Options{Proto: "udp"}, in: true, out: true,
			want: []string{"udp_rcv", "udpv6_rcv", "udp_recvmsg", "udp_sendmsg", "ip_rcv"}, not: []string{"tcp_v4_rcv", "icmp_rcv", "tcp_sendmsg", "icmpv6_rcv"}},
		{opts: filter.Options{Port: "53"}, in: true,
			want: []string{"udp_rcv", "tcp_v4_rcv"}, not: []string{"icmp_rcv", "icmpv6_rcv"}},
		{ifindex: 2, in: true, out: true, want: []string{"ip_rcv"}, not: []string{"tcp_recvmsg", "udp_sendmsg"},
			excluded: []string{"tcp_recvmsg", "udp_recvmsg", "tcp_sendmsg", "udp_sendmsg"}},
	} {
		f, err := filter.Parse(c.opts)
		if err != nil {
			t.Fatal(err)
		}
		f.Ifindex = c.ifindex
		fns, excluded := wantedFuncs(Config{Filter: f, Ingress: c.in, Egress: c.out})
		chosen := map[string]bool{}
		for _, k := range fns {
			chosen[k.name] = true
		}
		for _, name := range c.want {
			if !chosen[name] {
				t.Errorf("%+v: %s not chosen", c.opts, name)
			}
		}
		for _, name := range c.not {
			if chosen[name] {
				t.Errorf("%+v: %s chosen", c.opts, name)
			}
		}
		var names []string
		for _, a := range excluded {
			names = append(names, a.Probe)
		}
		if strings.Join(names, " ") != strings.Join(c.excluded, " ") {
			t.Errorf("%+v: excluded %v, want %v", c.opts, names, c.excluded)
		}
	}
}
