package main

import (
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/kallsyms"
	"github.com/skbstat/skbstat/progs"
)

// x86Symbols are the symbols of the stacks below, as Linux 6.18 on x86-64
// lists them, with a module's and a loaded BPF program's.
const x86Symbols = `ffffffff814caf10 T bpf_trace_run4
ffffffff81e94f80 T sk_skb_reason_drop
ffffffff81e96310 T consume_skb
ffffffff81eb9510 t __netif_receive_skb_one_core
ffffffff81eb9800 t process_backlog
ffffffff82055cd0 T ip_protocol_deliver_rcu
ffffffff82055e90 t ip_local_deliver_finish
ffffffff820a8770 T __udp4_lib_rcv
ffffffff820b1850 T icmp_rcv
ffffffff837f26a0 T _einittext
ffffffffc0023800 t bpf_prog_6deef7357e7b4530_skbstat_drop	[bpf]
ffffffffc0a10000 t nft_do_chain	[nf_tables]
ffffffffc0a20000 t nf_hook_slow	[nf_tables]
`

// s390Symbols are those of a Debian 6.1 s390x kernel's stacks: no BPF JIT,
// so the BPF interpreter runs skbstat's program, under the tracepoint.
const s390Symbols = `0000000000284e18 t ___bpf_prog_run
0000000000287a30 t __bpf_prog_run64
00000000002b3b70 T bpf_trace_run3
0000000000a4d8f0 t __bpf_trace_kfree_skb
0000000000a4da00 t __bpf_trace_consume_skb
0000000000a50c40 T kfree_skb_reason
0000000000a51e80 T consume_skb
0000000000b6a6b8 T ip_protocol_deliver_rcu
0000000000b6a8e8 t ip_local_deliver_finish
0000000000bc3e58 T __udp4_lib_rcv
0000000000bc91a0 T icmp_rcv
`

func symbols(t *testing.T, text string) *kallsyms.Table {
	t.Helper()
	syms, err := kallsyms.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return syms
}

// Stacks as bpf_get_stackid recorded them (leaf first), with the location
// the tracepoint passed.
var (
	// A raw tracepoint on x86-64 6.18: skbstat's program and the function
	// that ran it are on top.
	x86Raw = []uint64{
		0xffffffffc00239bd, // bpf_prog_6deef7357e7b4530_skbstat_drop+0x1bd [bpf]
		0xffffffff814cb01d, // bpf_trace_run4+0x10d
		0xffffffff81e95010, // sk_skb_reason_drop+0x90
		0xffffffff820a8c2c, // __udp4_lib_rcv+0x4bc
		0xffffffff82055da8, // ip_protocol_deliver_rcu+0xd8
		0xffffffff82055f11, // ip_local_deliver_finish+0x81
		0xffffffff81eb959d, // __netif_receive_skb_one_core+0x8d
		0xffffffff81eb9883, // process_backlog+0x83
	}
	x86Location = uint64(0xffffffff820a8c2c)
	x86Want     = []string{
		"sk_skb_reason_drop+0x90",
		"__udp4_lib_rcv+0x4bc",
		"ip_protocol_deliver_rcu+0xd8",
		"ip_local_deliver_finish+0x81",
		"__netif_receive_skb_one_core+0x8d",
		"process_backlog+0x83",
	}
	// The same drop at the perf tracepoint: the kernel starts the stack at
	// the traced function.
	x86Perf = x86Raw[2:]

	s390Drop = []uint64{
		0x2851f2, // ___bpf_prog_run+0x3da
		0x287a74, // __bpf_prog_run64+0x44
		0x2b3c1e, // bpf_trace_run3+0xae
		0xa4d93a, // __bpf_trace_kfree_skb+0x4a
		0xa50d0c, // kfree_skb_reason+0xcc
		0xbc4222, // __udp4_lib_rcv+0x3ca
		0xb6a744, // ip_protocol_deliver_rcu+0x8c
		0xb6a95a, // ip_local_deliver_finish+0x72
	}
	s390Location = uint64(0xbc4222)
	s390Consume  = []uint64{
		0x2851f2, // ___bpf_prog_run+0x3da
		0x287a74, // __bpf_prog_run64+0x44
		0x2b3c1e, // bpf_trace_run3+0xae
		0xa4da36, // __bpf_trace_consume_skb+0x36
		0xa51ea6, // consume_skb+0x26
		0xbc9366, // icmp_rcv+0x1c6
		0xb6a744, // ip_protocol_deliver_rcu+0x8c
	}
)

func TestPlaceFrames(t *testing.T) {
	x86, s390 := symbols(t, x86Symbols), symbols(t, s390Symbols)
	unlisted := symbols(t, strings.Replace(x86Symbols, "ffffffffc0023800 t bpf_prog_6deef7357e7b4530_skbstat_drop\t[bpf]\n", "", 1))
	restricted := symbols(t, regexp.MustCompile(`(?m)^[0-9a-f]+`).ReplaceAllString(x86Symbols, "0000000000000000"))
	for _, tc := range []struct {
		name     string
		syms     *kallsyms.Table
		pcs      []uint64
		location uint64
		want     []string
	}{
		{"raw tracepoint", x86, x86Raw, x86Location, x86Want},
		{"perf tracepoint", x86, x86Perf, x86Location, x86Want},
		// Where kallsyms does not list the program (bpf_jit_kallsyms=0),
		// its frame reads as the last kernel symbol's; by position it goes.
		{"unlisted BPF program", unlisted, x86Raw, x86Location, x86Want},
		{"s390x interpreter", s390, s390Drop, s390Location, []string{
			"kfree_skb_reason+0xcc", "__udp4_lib_rcv+0x3ca", "ip_protocol_deliver_rcu+0x8c", "ip_local_deliver_finish+0x72",
		}},
		{"location in a module", x86, []uint64{0xffffffffc00239bd, 0xffffffff814cb01d, 0xffffffff81e95010, 0xffffffffc0a1003a, 0xffffffffc0a20044},
			0xffffffffc0a1003a, []string{"sk_skb_reason_drop+0x90", "nft_do_chain+0x3a [nf_tables]", "nf_hook_slow+0x44 [nf_tables]"}},
		// The caller is known by its function: another return address in
		// it is found too.
		{"location elsewhere in the caller", x86, x86Raw, x86Location + 0x10, x86Want},
		{"caller is the leaf", x86, x86Raw[3:], x86Location, x86Want[1:]},

		// Without a location (consume_skb before 6.3), or with one in no
		// frame, the machinery is known by its names.
		{"s390x consume_skb without location", s390, s390Consume, 0, []string{
			"consume_skb+0x26", "icmp_rcv+0x1c6", "ip_protocol_deliver_rcu+0x8c",
		}},
		{"location in no frame", x86, x86Raw, 0xffffffff820b1900, x86Want},
		{"restricted kallsyms", restricted, x86Perf, x86Location, []string{
			"0xffffffff81e95010", "0xffffffff820a8c2c", "0xffffffff82055da8",
			"0xffffffff82055f11", "0xffffffff81eb959d", "0xffffffff81eb9883",
		}},

		// No usable stack: the location is the place.
		{"lost (MIPS: -EFAULT)", x86, nil, x86Location, []string{"__udp4_lib_rcv+0x4bc"}},
		{"one frame (32-bit ARM)", x86, x86Raw[:1], x86Location, []string{"__udp4_lib_rcv+0x4bc"}},
		{"lost, restricted kallsyms", restricted, nil, x86Location, []string{"0xffffffff820a8c2c"}},
		{"lost, no location", x86, nil, 0, nil},
		{"one frame, no location", s390, s390Consume[:1], 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := placeFrames(tc.syms, tc.pcs, tc.location); !slices.Equal(got, tc.want) {
				t.Errorf("placeFrames =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestFramesByStack: stack ids are reused from interval to interval, so
// frames are cached by the stack's addresses, and for one interval only.
func TestFramesByStack(t *testing.T) {
	r := &renderer{syms: symbols(t, x86Symbols)}
	udp := progs.StackCount{PCs: x86Raw, Location: x86Location}
	other := progs.StackCount{PCs: s390Consume} // what a reused id may name next
	if got := r.entryFrames([]progs.StackCount{udp}); !slices.Equal(got[0], x86Want) {
		t.Errorf("first interval: %q, want %q", got[0], x86Want)
	}
	if got := r.entryFrames([]progs.StackCount{other}); slices.Equal(got[0], x86Want) || len(r.frames) != 1 {
		t.Errorf("second interval: %q from %d cached stacks, want another stack's frames and one cached", got[0], len(r.frames))
	}
	if _, ok := r.frames[newFrameKey(udp)]; ok {
		t.Error("a stack absent from the last interval is still cached")
	}
}

// learnings is a Symbols that records what it is told to learn.
type learnings struct {
	kallsyms.Symbols
	told [][]uint64
}

func (l *learnings) Learn(addrs []uint64) error {
	l.told = append(l.told, addrs)
	return nil
}

// An interval learns the frames of the stacks it has not printed before,
// and the locations; one with nothing new does not ask the symbols at all
// (they may still be in the making).
func TestLearnOnlyNew(t *testing.T) {
	syms := &learnings{Symbols: symbols(t, x86Symbols)}
	r := &renderer{sections: []progs.Section{progs.Drop, progs.Consume}, warn: io.Discard, syms: syms}
	stack := progs.StackCount{Section: progs.Drop, PCs: x86Raw, Count: 3}
	located := progs.StackCount{Section: progs.Consume, PCs: x86Raw, Location: x86Location, Count: 1}
	for i, step := range []struct {
		stacks []progs.StackCount
		want   [][]uint64
	}{
		{[]progs.StackCount{stack}, [][]uint64{x86Raw}},
		{[]progs.StackCount{stack}, nil}, // printed in the interval before
		{nil, nil},
		{[]progs.StackCount{stack}, [][]uint64{x86Raw}}, // forgotten after an interval without it
		{[]progs.StackCount{located}, [][]uint64{append([]uint64{x86Location}, x86Raw...)}},
		{[]progs.StackCount{located}, [][]uint64{{x86Location}}},
	} {
		syms.told = nil
		r.sectionsOf(progs.Counts{Stacks: step.stacks})
		if !slices.EqualFunc(syms.told, step.want, slices.Equal) {
			t.Errorf("interval %d learnt %x, want %x", i+1, syms.told, step.want)
		}
	}
}
