package progs

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/lab"
	"github.com/skbstat/skbstat/layout"
)

// A check is one filter of a proof, at one tracepoint, with the number of
// the proof's packets it must count and the layout fields its verdicts
// depend on.
type check struct {
	section Section
	group   string
	name    string
	filter  filter.Filter
	want    uint64
	fields  string
}

// Prove runs the programs skbstat generates for layout l, as they would
// run for the user's filters, on packets of the lab whose verdicts are
// known: every check must count exactly its packets, no more, no fewer.
// Checks go from the fewest fields to the most, so the first that fails
// names the fields to blame. Wrong counts are worse than none: a layout
// that fails is not used.
func Prove(l *layout.Layout, lb *lab.Lab) error {
	packets, checks := proof(l, lb)
	cfg := Config{Layout: l, Drop: true}
	var ps []*probe
	for i, c := range checks {
		f := c.filter
		ps = append(ps, &probe{section: c.section, name: fmt.Sprintf("check%d", i), prog: "skbstat_proof",
			fromData: c.name == "netif_receive_skb", filter: &f, hooks: tracepointHooks(l, c.group, c.name)})
	}
	set, err := load(cfg, plan{probes: ps})
	if err != nil {
		return fmt.Errorf("load the proof programs: %w", err)
	}
	defer lb.Later(func() { set.Close() })
	if len(set.Skipped) > 0 {
		return fmt.Errorf("attach the proof programs: %s: %v", set.Skipped[0].Probe, set.Skipped[0].Err)
	}
	for _, p := range packets {
		if err := lb.Send(p); err != nil {
			return fmt.Errorf("send a proof packet: %w", err)
		}
	}
	got, err := proofCounts(set, checks)
	if err != nil {
		return err
	}
	for i, c := range checks {
		if got[i] != c.want {
			return fmt.Errorf("calibrated layout failed its proof: %s at %s:%s counted %d of the lab's packets, not %d: wrong offset of %s",
				c.filter, c.group, c.name, got[i], c.want, c.fields)
		}
	}
	return nil
}

// proofCounts reads until every check has counted what it must, or for
// at most a second (the lab's packets are handled before their send
// returns, except where a softirq runs them on another CPU).
func proofCounts(set *Set, checks []check) ([]uint64, error) {
	got := make([]uint64, len(checks))
	deadline := time.Now().Add(time.Second)
	for {
		c, err := set.Read()
		if err != nil {
			return nil, err
		}
		for _, r := range c.Rows {
			var i int
			fmt.Sscanf(r.Name, "check%d", &i)
			got[i] += r.Count
		}
		for _, st := range c.Stacks {
			for i, ch := range checks {
				if ch.section == st.Section {
					got[i] += st.Count
				}
			}
		}
		done := true
		for i, ch := range checks {
			done = done && got[i] >= ch.want
		}
		if done || time.Now().After(deadline) {
			// One more read: a check that counts more than it must
			// would show it now.
			time.Sleep(10 * time.Millisecond)
			return got, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	skbFields  = "skb->head, skb->data, skb->network_header, skb->protocol, skb->len or skb->data_len"
	pagedProof = 64
)

// proof returns the packets a proof sends and its checks.
func proof(l *layout.Layout, lb *lab.Lab) ([]lab.Packet, []check) {
	var packets []lab.Packet
	var checks []check
	add := func(c check) { checks = append(checks, c) }
	prefix := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	ports := func(p uint16) filter.PortRange { return filter.PortRange{Lo: p, Hi: p, Set: true} }
	udp := filter.Protocol{Number: protoUDP, Set: true}
	size := func(ipv6 bool) int { return 64 + 16*btoi(ipv6) }
	if len(lb.Devices) > 0 {
		a, b := &lb.Devices[0], &lb.Devices[1]
		packets = append(packets,
			lab.Packet{Via: a, Payload: size(false)},
			lab.Packet{Via: a, Payload: size(false) + pagedProof, Paged: pagedProof},
			lab.Packet{Via: b, Payload: size(false)})
		if l.NetDevice.Ifindex.Size != 0 {
			// With an address too: the kernel sends packets of its own through
			// the devices (IPv6 neighbour discovery, MLD reports).
			dev := func(d *lab.Device, src netip.Addr) filter.Filter {
				return filter.Filter{Ifindex: d.Index, Ifname: d.Name, Src: prefix(src)}
			}
			add(check{Egress, "net", "net_dev_queue", dev(a, a.Local), 2, "skb->dev, net_device ifindex"})
			add(check{Egress, "net", "net_dev_queue", dev(b, b.Local), 1, "skb->dev, net_device ifindex"})
			add(check{Egress, "net", "net_dev_queue", dev(b, a.Local), 0, "skb->dev, net_device ifindex"})
		}
		// The packet over lo is from a.Local, too.
		add(check{Egress, "net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Proto: udp}, 3, skbFields})
		add(check{Egress, "net", "net_dev_queue", filter.Filter{Dst: prefix(b.Peer)}, 1, skbFields})
		add(check{Egress, "net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Sport: ports(lb.Port), Dport: ports(lb.PeerPort)}, 2, skbFields})
		add(check{Egress, "net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Dport: ports(lb.PeerPort + 1)}, 0, skbFields})
		if lb.IPv6 {
			packets = append(packets, lab.Packet{Via: a, IPv6: true, Payload: size(true)})
			add(check{Egress, "net", "net_dev_queue", filter.Filter{Addr: prefix(a.Peer6), Proto: udp, Dport: ports(lb.PeerPort)}, 1, skbFields + " (IPv6)"})
		}
	}
	packets = append(packets, lab.Packet{Payload: size(false)})
	lo := func(a netip.Addr) filter.Filter {
		return filter.Filter{Dst: prefix(a), Sport: ports(lb.LoPort), Dport: ports(lb.ClosedPort), Proto: udp}
	}
	add(check{Egress, "net", "net_dev_queue", lo(lb.Lo), 1, skbFields})
	rx := lo(lb.Lo)
	if lb.Private && l.NetDevice.Ifindex.Size != 0 {
		rx.Ifindex, rx.Ifname = 1, "lo" // the lab namespace's own lo
	}
	add(check{Ingress, "net", "netif_receive_skb", rx, 1, skbFields + " (at net:netif_receive_skb)"})
	drops := filter.Filter{Sport: ports(lb.LoPort), Dport: ports(lb.ClosedPort), Proto: udp}
	if lb.IPv6 {
		packets = append(packets, lab.Packet{IPv6: true, Payload: size(true)})
		add(check{Ingress, "net", "netif_receive_skb", lo(lb.Lo6), 1, skbFields + " (IPv6, at net:netif_receive_skb)"})
	}
	add(check{Drop, "skb", "kfree_skb", drops, 1 + uint64(btoi(lb.IPv6)), skbFields + " (at skb:kfree_skb)"})
	return packets, checks
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
