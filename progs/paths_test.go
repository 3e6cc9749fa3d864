package progs

import (
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/filter"
)

// TestShortestRunThrough counts the instructions of known runs: a jump by
// label, a hop by offset over a two-slot instruction, and a loop back.
func TestShortestRunThrough(t *testing.T) {
	insns := asm.Instructions{
		/* 0 */ asm.Mov.Imm(asm.R0, 0),
		/* 1 */ asm.JEq.Imm(asm.R1, 0, "exit"),
		/* 2 */ {OpCode: asm.JEq.Op(asm.ImmSource), Dst: asm.R1, Constant: 1, Offset: 2}, // over 3's two slots, to 4
		/* 3 */ asm.LoadImm(asm.R2, 1<<40, asm.DWord),
		/* 4 */ asm.JEq.Imm(asm.R1, 2, "exit"),
		/* 5 */ asm.Ja.Label("back"),
		/* 6 */ asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		/* 7 */ asm.Return(),
		/* 8 */ asm.Ja.Label("exit").WithSymbol("back"),
	}
	g := newInstructionGraph(insns)
	for _, c := range []struct{ via, want int }{
		{1, 4}, // 0 1 6 7
		{3, 7}, // 0 1 2 3 4 6 7
		{4, 6}, // 0 1 2 4 6 7: the hop skips 3
		{8, 8}, // 0 1 2 4 5 8 6 7
	} {
		if got := g.shortestRunThrough(c.via); got != c.want {
			t.Errorf("shortest run through %d: %d instructions, want %d", c.via, got, c.want)
		}
	}
}

// TestIPv4SkipsIPv6Code checks, in every program of a filter for both
// families, that an IPv4 packet runs none of the IPv6 header's code (its
// extension header walk included): only the family dispatch jumps into it,
// at its start, and no other instruction leads into it.
func TestIPv4SkipsIPv6Code(t *testing.T) {
	l := kernelLayout(t)
	f, err := filter.Parse(filter.Options{Proto: "udp", Dport: "53"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Layout: l, Filter: f, Drop: true, Consume: true, Ingress: true, Egress: true}
	pl, err := newPlan(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	rows := numberRows(pl.probes)
	for _, p := range pl.probes {
		h, err := firstHook(p)
		if err != nil {
			continue // not on this kernel: newPlan said so
		}
		g, err := program(p, h, cfg, rows)
		if err != nil {
			t.Fatal(err)
		}
		start, end := -1, -1
		for i, ins := range g.insns {
			switch ins.Symbol() {
			case "exit_filter_ipv6":
				start = i
			case "exit_filter_transport":
				end = i
			}
		}
		if start < 0 || end < start {
			t.Fatalf("%s: no IPv6 code before the transport's (%d, %d):\n%v", p.name, start, end, g.insns)
		}
		var entries []int
		for i, next := range newInstructionGraph(g.insns) {
			for _, n := range next {
				if (i < start || i >= end) && n >= start && n < end {
					entries = append(entries, i)
					if n != start || g.insns[i].Reference() != "exit_filter_ipv6" {
						t.Errorf("%s: instruction %d (%v) leads into the IPv6 code at %d", p.name, i, g.insns[i], n)
					}
				}
			}
		}
		if len(entries) != 1 {
			t.Errorf("%s: %d ways into the IPv6 code (instructions %v), want the family dispatch alone", p.name, len(entries), entries)
		}
	}
}

// TestOneReadForHeaderAndPorts checks, at every tracepoint hook this kernel
// offers, that a packet reaches the port condition with one read for its
// IP header and ports together (none where the program loads the packet
// directly), after one copy of the sk_buff's fields where loads are not
// typed: the fewest bpf_probe_read_kernel calls of any run to it.
func TestOneReadForHeaderAndPorts(t *testing.T) {
	l := kernelLayout(t)
	f, err := filter.Parse(filter.Options{Daddr: "10.9.9.9", Proto: "udp", Dport: "53"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Layout: l, Filter: f, Drop: true, Ingress: true, Egress: true}
	pl, err := newPlan(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	rows := numberRows(pl.probes)
	for _, p := range pl.probes {
		for _, resolve := range p.hooks {
			h, err := resolve()
			if err != nil {
				continue // not offered here
			}
			g, err := program(p, h, cfg, rows)
			if err != nil {
				t.Fatal(err)
			}
			tp := h.(tracepointHook)
			want := 0
			if !tp.typed {
				want++ // the sk_buff's fields
			}
			if !tp.packet {
				want++ // the header and ports
			}
			ports := slices.IndexFunc(g.insns, func(ins asm.Instruction) bool {
				return ins.Source() != nil && strings.Contains(ins.Source().String(), "filter: ports")
			})
			if ports < 0 {
				t.Fatalf("%s, %s: no port condition:\n%v", p.name, h.mechanism(), g.insns)
			}
			if got := fewestReads(g.insns, ports); got != want {
				t.Errorf("%s, %s: %d bpf_probe_read_kernel calls to the port condition, want %d:\n%v", p.name, h.mechanism(), got, want, g.insns)
			}
		}
	}
}

// fewestReads is the fewest bpf_probe_read_kernel calls of any run from the
// first instruction to instruction to (a 0-1 breadth-first search).
func fewestReads(insns asm.Instructions, to int) int {
	g := newInstructionGraph(insns)
	reads := make([]int, len(g))
	for i := range reads {
		reads[i] = -1
	}
	weight := func(i int) int {
		if insns[i].IsBuiltinCall() && asm.BuiltinFunc(insns[i].Constant) == asm.FnProbeReadKernel {
			return 1
		}
		return 0
	}
	reads[0] = weight(0)
	for deque := []int{0}; len(deque) > 0; {
		i := deque[0]
		deque = deque[1:]
		for _, n := range g[i] {
			if r := reads[i] + weight(n); reads[n] < 0 || r < reads[n] {
				reads[n] = r
				if weight(n) == 0 {
					deque = append([]int{n}, deque...)
				} else {
					deque = append(deque, n)
				}
			}
		}
	}
	return reads[to]
}
