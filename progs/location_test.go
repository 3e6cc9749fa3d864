package progs

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/lab"
	"github.com/skbstat/skbstat/kallsyms"
	"github.com/skbstat/skbstat/layout"
)

// TestCountStackLocation checks where the count key's location comes from:
// a raw tracepoint's whole 8-byte slot (also on a 32-bit kernel, whose
// big-endian slot keeps a pointer in its second half), a 32-bit perf record's
// 4-byte field (zero-extended by the load), or nowhere (0).
func TestCountStackLocation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		location layout.Field
		want     asm.Instruction
	}{
		{"raw", layout.Field{Offset: 8, Size: 8}, asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord)},
		{"perf, 32-bit", layout.Field{Offset: 12, Size: 4}, asm.LoadMem(asm.R1, asm.R6, 12, asm.Word)},
		{"none", layout.Field{}, asm.StoreImm(asm.R10, slotKey+16, 0, asm.Word)},
	} {
		h := tracepointHook{tp: layout.Tracepoint{Skb: layout.Field{Size: 8}, Location: tc.location}}
		insns := countStack(Consume, h, 1, Config{}, true)
		for _, ins := range insns {
			if ins.OpCode == asm.InvalidOpCode {
				t.Errorf("%s: an instruction asm cannot encode (an 8-byte immediate store?):\n%v", tc.name, insns)
			}
		}
		i := slices.IndexFunc(insns, func(ins asm.Instruction) bool { return ins.OpCode == tc.want.OpCode && ins.Offset == tc.want.Offset })
		if i < 0 {
			t.Errorf("%s: no %v in\n%v", tc.name, tc.want, insns)
			continue
		}
		if tc.location.Size == 0 {
			continue
		}
		if store := asm.StoreMem(asm.R10, slotKey+16, asm.R1, asm.DWord); insns[i+1].OpCode != store.OpCode || insns[i+1].Offset != store.Offset {
			t.Errorf("%s: %v after the load, want %v", tc.name, insns[i+1], store)
		}
	}
}

// openLab makes a private network namespace with addresses and a closed
// port of its own: nothing else on the machine sends what the tests count.
func openLab(t *testing.T) *lab.Lab {
	t.Helper()
	l, err := lab.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if !l.Private {
		t.Logf("no private namespace (%v): the host's loopback, with ports of the test's own", l.Fallback)
	}
	return l
}

// labFilter matches the lab's datagrams over lo to its closed port, or with
// icmp, the errors that answer them.
func labFilter(t *testing.T, lb *lab.Lab, ipv6, icmp bool) filter.Filter {
	t.Helper()
	_, to := lb.Addrs(lab.Packet{IPv6: ipv6})
	o := filter.Options{Saddr: to.Addr().String(), Daddr: to.Addr().String(), Dport: strconv.Itoa(int(to.Port())), Proto: "udp"}
	if icmp {
		o.Dport, o.Proto = "", "icmp"
		if ipv6 {
			o.Proto = "icmp6"
		}
	}
	f, err := filter.Parse(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sendLab sends n datagrams over lo to the lab's closed port.
func sendLab(t *testing.T, lb *lab.Lab, ipv6 bool, n int) {
	t.Helper()
	for range n {
		if err := lb.Send(lab.Packet{IPv6: ipv6, Payload: 32}); err != nil {
			t.Fatal(err)
		}
	}
}

// readUntil waits until s's stack maps hold want events (the receiving
// softirq may still run when the sender returns), so that one Read, one
// generation, has them all; then it reads once more, so that an extra event
// would show.
func readUntil(t *testing.T, s *Set, want uint64) []StackCount {
	t.Helper()
	waitUnread(t, s, want)
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	late, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	return append(c.Stacks, late.Stacks...)
}

// waitUnread waits until s's stack maps hold want events, or 5 seconds.
func waitUnread(t *testing.T, s *Set, want uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); unread(t, s) < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// unread is how many events s's stack maps hold.
func unread(t *testing.T, s *Set) uint64 {
	t.Helper()
	var n uint64
	for g := range uint32(numGenerations) {
		held, err := generationSum(s.ageing.gens, g)
		if err != nil {
			t.Fatal(err)
		}
		n += held
	}
	return n
}

// checkLocation checks that st's location symbolizes to fn+0x..., and that a
// recorded stack has a frame in fn: the location is the traced function's
// return address in its caller.
func checkLocation(t *testing.T, syms *kallsyms.Table, st StackCount, fn string) {
	t.Helper()
	if got := syms.Symbolize(st.Location); !strings.HasPrefix(got, fn+"+0x") {
		t.Errorf("%s stack (lost: %d): location %#x is %s, want %s+0x...", st.Section, st.Lost, st.Location, got, fn)
		return
	}
	if st.Lost != 0 {
		return
	}
	caller, _ := syms.Function(st.Location)
	for _, pc := range st.PCs {
		if f, ok := syms.Function(pc); ok && f == caller {
			return
		}
	}
	t.Errorf("%s stack of %d frames has no frame in %s, the location's function", st.Section, len(st.PCs), fn)
}

func loadSymbols(t *testing.T) *kallsyms.Table {
	t.Helper()
	syms, err := kallsyms.Load()
	if err != nil {
		t.Fatal(err)
	}
	if syms.Restricted() {
		t.Skip("kptr_restrict hides kernel addresses: locations cannot be symbolized")
	}
	return syms
}

// TestLocation counts datagrams to a closed port at DROP and the ICMP
// errors that answer them at CONSUME, through each tracepoint hook: every
// drop has its location in __udp4_lib_rcv, every consume (consume_skb has a
// location since 6.3) in icmp_rcv.
func TestLocation(t *testing.T) {
	l := kernelLayout(t)
	syms := loadSymbols(t)
	for i, hk := range tracepointHookNames {
		mechanism := hk.mechanism
		for _, sec := range []struct {
			section Section
			icmp    bool
			fn      string
		}{{Drop, false, "__udp4_lib_rcv"}, {Consume, true, "icmp_rcv"}} {
			t.Run(fmt.Sprintf("%s %s", hk.name, sec.section), func(t *testing.T) {
				lb := openLab(t)
				cfg := Config{Layout: l, Filter: labFilter(t, lb, false, sec.icmp), Drop: sec.section == Drop, Consume: sec.section == Consume}
				s := loadHook(t, cfg, i, mechanism, func(t *testing.T, p *probe) {
					h, err := p.hooks[0]()
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := h.loadLocation(asm.R1); !ok {
						t.Skipf("%s has no location on this kernel (consume_skb before 6.3)", p.name)
					}
				})
				const n = 7
				sendLab(t, lb, false, n)
				var total uint64
				for _, st := range readUntil(t, s, n) {
					if st.Section != sec.section {
						t.Errorf("stack of section %s, want %s", st.Section, sec.section)
					}
					checkLocation(t, syms, st, sec.fn)
					total += st.Count
				}
				if total != n {
					t.Errorf("%d events, want %d", total, n)
				}
			})
		}
	}
}

// TestLostStackLocation makes the stack map hold one stack: the first IPv4
// drop takes it; IPv4 drops at other stacks (the first datagram's stack
// differs from the others') and all IPv6 drops of the same interval find it
// taken (-EEXIST). The lost ones are still counted, under their error, with
// their location.
func TestLostStackLocation(t *testing.T) {
	l := kernelLayout(t)
	syms := loadSymbols(t)
	defer func(stacks uint32) { stackEntries = stacks }(stackEntries)
	stackEntries = 1
	lb := openLab(t)
	if !lb.IPv6 {
		t.Skip("no IPv6 in the test namespace")
	}
	// One filter for both families: the lab's ports, the same for both.
	from, to := lb.Addrs(lab.Packet{})
	s := loadDrops(t, l, filter.Options{Sport: strconv.Itoa(int(from.Port())), Dport: strconv.Itoa(int(to.Port())), Proto: "udp"})
	const n = 5
	sendLab(t, lb, false, n)
	waitUnread(t, s, n) // all dropped before any IPv6 datagram is sent
	sendLab(t, lb, true, n)
	var v4, v6 []StackCount
	for _, st := range readUntil(t, s, 2*n) {
		if strings.HasPrefix(syms.Symbolize(st.Location), "__udp4_lib_rcv+") {
			v4 = append(v4, st)
		} else {
			v6 = append(v6, st)
		}
	}
	for _, c := range []struct {
		name   string
		stacks []StackCount
		fn     string
		// the fewest drops whose stacks are recorded and lost
		minRecorded, minLost uint64
	}{{"IPv4", v4, "__udp4_lib_rcv", 1, 0}, {"IPv6", v6, "__udp6_lib_rcv", 0, n}} {
		recorded, lost := recordedLost(c.stacks)
		for _, st := range c.stacks {
			checkLocation(t, syms, st, c.fn)
		}
		if recorded+lost != n || recorded < c.minRecorded || lost < c.minLost {
			t.Errorf("%s: %d drops recorded, %d lost; want %d in all, at least %d recorded and %d lost", c.name, recorded, lost, n, c.minRecorded, c.minLost)
		}
	}
}
