package progs

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/lab"
	"github.com/skbstat/skbstat/layout"
)

// A check is one filter of a proof, at one tracepoint, with the number of
// the proof's packets it must count and the layout fields its verdicts
// depend on.
type check struct {
	group  string
	name   string
	filter filter.Filter
	want   uint64
	fields string
}

// Prove runs the code skbstat generates for layout l, the filters and the
// Source that user filters get, on packets of the lab whose verdicts are
// known: every check must count exactly its packets, no more, no fewer.
// Checks go from the fewest fields to the most, so the first that fails
// names the fields to blame. Wrong counts are worse than none: a layout
// that fails is not used.
//
// The checks at one tracepoint share one program, each with its own
// counter: the kernel attaches at most 64 programs to a tracepoint through
// perf events, and other skbstat instances may be proving at the same time.
func Prove(l *layout.Layout, lb *lab.Lab) (err error) {
	packets, checks := proof(l, lb)
	rows, err := ebpf.NewMap(&ebpf.MapSpec{Name: rowsMap, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(len(checks))})
	if err != nil {
		return fmt.Errorf("proof counters: %w", err)
	}
	attached := []io.Closer{rows}
	defer func() {
		// Each perf event's detach waits for RCU grace periods: in
		// parallel, they wait for the same ones.
		for _, c := range attached {
			lb.Later(func() { c.Close() })
		}
	}()
	for _, tp := range proofTracepoints(checks) {
		closers, err := attachProof(l, rows, tp, checks)
		attached = append(attached, closers...)
		if err != nil {
			return fmt.Errorf("attach the proof program at %s:%s: %w", tp.group, tp.name, err)
		}
	}
	for _, p := range packets {
		if err := lb.Send(p); err != nil {
			return fmt.Errorf("send a proof packet: %w", err)
		}
	}
	got, err := proofCounts(rows, checks)
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

// tracepoint names one.
type tracepoint struct{ group, name string }

func proofTracepoints(checks []check) []tracepoint {
	var tps []tracepoint
	for _, c := range checks {
		if tp := (tracepoint{c.group, c.name}); !slices.Contains(tps, tp) {
			tps = append(tps, tp)
		}
	}
	return tps
}

// attachProof loads the program of the checks at tp and attaches it with the
// first of the tracepoint's hooks that works, and returns what to close.
func attachProof(l *layout.Layout, rows *ebpf.Map, tp tracepoint, checks []check) ([]io.Closer, error) {
	var errs attempts
	for _, resolve := range tracepointHooks(l, tp.group, tp.name) {
		h, err := resolve()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		insns, err := proofProgram(l, h, tp, checks)
		if err != nil {
			return nil, err
		}
		if err := insns.AssociateMap(rowsMap, rows); err != nil {
			return nil, err
		}
		spec := &ebpf.ProgramSpec{Name: "skbstat_proof", Instructions: insns, License: "GPL"}
		h.configure(spec)
		prog, err := loadProgram(spec, h.target())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: load: %w", h.mechanism(), err))
			continue
		}
		lk, err := h.attach(prog)
		if err != nil {
			prog.Close()
			errs = append(errs, fmt.Errorf("%s: attach: %w", h.mechanism(), err))
			continue
		}
		return []io.Closer{lk, prog}, nil
	}
	return nil, errs
}

// proofProgram runs each check at tp in turn: its filter, and on a match
// its counter, the row of its index.
func proofProgram(l *layout.Layout, h hook, tp tracepoint, checks []check) (asm.Instructions, error) {
	insns := prologue(tp.group+":"+tp.name, h)
	var ours []int // the indices of tp's checks, their counters
	for i, c := range checks {
		if c.group == tp.group && c.name == tp.name {
			ours = append(ours, i)
		}
	}
	for i, counter := range ours {
		c := checks[counter]
		src, err := newSkbSource(l, h.reads(), tp.name == "netif_receive_skb", c.filter)
		if err != nil {
			return nil, err
		}
		// Each check goes on at the next, the last at the exit.
		next := "exit"
		if i+1 < len(ours) {
			next = fmt.Sprintf("check%d", i+1)
		}
		match := c.filter.Instructions(src, l.ByteOrder, next)
		// A plain add: a count lost where programs nest would fail the proof,
		// never pass it wrongly.
		code := append(match, countRow(rowImmediate{}.storeRowKey(uint32(counter)), next, plainAdd)...)
		code = append(code, undecidedAsRejected(match, next)...)
		if i > 0 {
			code[0] = code[0].WithSymbol(fmt.Sprintf("check%d", i))
		}
		insns = append(insns, code...)
	}
	return append(insns, epilogue()...), nil
}

// undecidedAsRejected makes the packets that the filter code match cannot
// decide go where those it rejects go, to reject: the lab sends none.
func undecidedAsRejected(match asm.Instructions, reject string) asm.Instructions {
	var insns asm.Instructions
	for _, u := range filter.UndecidedIn(match, reject) {
		if len(insns) == 0 {
			insns = append(insns, asm.Ja.Label(reject))
		}
		insns = append(insns, asm.Ja.Label(reject).WithSymbol(filter.UndecidedLabel(reject, u)))
	}
	return insns
}

// proofCounts reads until every check has counted what it must, or for
// at most a second (the lab's packets are handled before their send
// returns, except where a softirq runs them on another CPU).
func proofCounts(rows *ebpf.Map, checks []check) ([]uint64, error) {
	got := make([]uint64, len(checks))
	per := make([]uint64, ebpf.MustPossibleCPU())
	read := func() (done bool, err error) {
		done = true
		for i, c := range checks {
			if err := rows.Lookup(uint32(i), &per); err != nil {
				return false, fmt.Errorf("read proof counter: %w", err)
			}
			got[i] = sumCPUs(per)
			done = done && got[i] >= c.want
		}
		return done, nil
	}
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		done, err := read()
		if err != nil {
			return nil, err
		}
		if done || time.Now().After(deadline) {
			break
		}
	}
	// Once more: a check that counts more than it must would show it now.
	time.Sleep(10 * time.Millisecond)
	_, err := read()
	return got, err
}

const (
	netFields  = "net_device nd_net, net ns.inum"
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
		// The packet over lo is from a.Local, too.
		add(check{"net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Proto: udp}, 3, skbFields})
		add(check{"net", "net_dev_queue", filter.Filter{Dst: prefix(b.Peer)}, 1, skbFields})
		add(check{"net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Sport: ports(lb.Port), Dport: ports(lb.PeerPort)}, 2, skbFields})
		add(check{"net", "net_dev_queue", filter.Filter{Src: prefix(a.Local), Dport: ports(lb.PeerPort + 1)}, 0, skbFields})
		if lb.IPv6 {
			packets = append(packets, lab.Packet{Via: a, IPv6: true, Payload: size(true)})
			add(check{"net", "net_dev_queue", filter.Filter{Addr: prefix(a.Peer6), Proto: udp, Dport: ports(lb.PeerPort)}, 1, skbFields + " (IPv6)"})
		}
		if l.NetDevice.Ifindex.Size != 0 {
			// With an address too, which the checks above proved: the
			// kernel sends packets of its own through the devices (IPv6
			// neighbour discovery, MLD reports).
			dev := func(d *lab.Device, src netip.Addr) filter.Filter {
				return filter.Filter{Ifindex: d.Index, Ifname: d.Name, Src: prefix(src)}
			}
			add(check{"net", "net_dev_queue", dev(a, a.Local), 2, "skb->dev, net_device ifindex"})
			add(check{"net", "net_dev_queue", dev(b, b.Local), 1, "skb->dev, net_device ifindex"})
			add(check{"net", "net_dev_queue", dev(b, a.Local), 0, "skb->dev, net_device ifindex"})
		}
		if l.NetDevice.Ifindex.Size != 0 && l.NetDevice.Net.Size != 0 {
			inDev := func(netns uint64) filter.Filter {
				return filter.Filter{Ifindex: a.Index, Ifname: a.Name, Netns: uint32(netns), Src: prefix(a.Local)}
			}
			in := func(netns uint64) filter.Filter {
				return filter.Filter{Netns: uint32(netns), Src: prefix(a.Local), Proto: udp}
			}
			add(check{"net", "net_dev_queue", inDev(lb.NetnsInode), 2, netFields})
			add(check{"net", "net_dev_queue", inDev(lb.NetnsInode + 1), 0, netFields})
			add(check{"net", "net_dev_queue", in(lb.NetnsInode), 3, netFields})
			add(check{"net", "net_dev_queue", in(lb.NetnsInode + 1), 0, netFields})
		}
	}
	packets = append(packets, lab.Packet{Payload: size(false)})
	lo := func(a netip.Addr) filter.Filter {
		return filter.Filter{Dst: prefix(a), Sport: ports(lb.LoPort), Dport: ports(lb.ClosedPort), Proto: udp}
	}
	add(check{"net", "net_dev_queue", lo(lb.Lo), 1, skbFields})
	rx := lo(lb.Lo)
	if lb.Private && l.NetDevice.Ifindex.Size != 0 {
		rx.Ifindex, rx.Ifname = 1, "lo" // the lab namespace's own lo
	}
	add(check{"net", "netif_receive_skb", rx, 1, skbFields + " (at net:netif_receive_skb)"})
	drops := filter.Filter{Sport: ports(lb.LoPort), Dport: ports(lb.ClosedPort), Proto: udp}
	if lb.IPv6 {
		packets = append(packets, lab.Packet{IPv6: true, Payload: size(true)})
		add(check{"net", "netif_receive_skb", lo(lb.Lo6), 1, skbFields + " (IPv6, at net:netif_receive_skb)"})
	}
	add(check{"skb", "kfree_skb", drops, 1 + uint64(btoi(lb.IPv6)), skbFields + " (at skb:kfree_skb)"})
	return packets, checks
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
