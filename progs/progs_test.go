package progs

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/layout"
)

func kernelLayout(t *testing.T) *layout.Layout {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	l, err := layout.Kernel()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	return l
}

// closedPort returns a loopback UDP port that nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return ap
}

func sendUDP(t *testing.T, to netip.AddrPort, n int) {
	t.Helper()
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		if _, err := c.WriteToUDPAddrPort([]byte("skbstat"), to); err != nil {
			t.Fatal(err)
		}
	}
}

// loadDrops loads the DROP probe with the filter of o.
func loadDrops(t *testing.T, l *layout.Layout, o filter.Options) *Set {
	t.Helper()
	f, err := filter.Parse(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(Config{Layout: l, Filter: f, Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loadHook loads cfg's one tracepoint probe with its i-th hook only, which
// must attach as mechanism; check, where not nil, may skip the test first.
func loadHook(t *testing.T, cfg Config, i int, mechanism string, check func(*testing.T, *probe)) *Set {
	t.Helper()
	ps := tracepointProbes(cfg)
	ps[0].hooks = ps[0].hooks[i : i+1]
	if check != nil {
		check(t, ps[0])
	}
	s, err := load(cfg, plan{probes: ps}, StartKernel(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if len(s.Attached) != 1 || s.Attached[0].Mechanism != mechanism {
		t.Fatalf("attached %v, want one %s", s.Attached, mechanism)
	}
	return s
}

// tracepointHookNames names tracepointHooks' hooks, in order, and says
// which mechanism each attaches as.
var tracepointHookNames = []struct{ name, mechanism string }{
	{"tp_btf, packet loaded", "tp_btf"},
	{"tp_btf, packet copied", "tp_btf"},
	{"raw tracepoint", "raw tracepoint"},
	{"perf tracepoint", "perf tracepoint"},
}

// TestTracepointHooks loads the DROP probe through each tracepoint hook in
// turn (tp_btf, raw, then perf: the fallbacks forced) and counts datagrams
// to a closed loopback port.
func TestTracepointHooks(t *testing.T) {
	l := kernelLayout(t)
	reasons, err := l.DropReasons()
	if err != nil {
		t.Fatal(err)
	}
	for i, hk := range tracepointHookNames {
		mechanism := hk.mechanism
		t.Run(hk.name, func(t *testing.T) {
			to := closedPort(t)
			f, err := filter.Parse(filter.Options{Daddr: to.Addr().String(), Dport: strconv.Itoa(int(to.Port())), Proto: "udp"})
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Layout: l, Filter: f, Drop: true}
			s := loadHook(t, cfg, i, mechanism, nil)
			const n = 7
			sendUDP(t, to, n)
			c, err := s.Read()
			if err != nil {
				t.Fatal(err)
			}
			var total uint64
			for _, st := range c.Stacks {
				if st.Section != Drop || !st.HasReason || layout.ReasonName(reasons, st.Reason) != "NO_SOCKET" || st.Lost != 0 {
					t.Errorf("unexpected stack count %+v", st)
				}
				total += st.Count
			}
			if total != n {
				t.Errorf("%d drops, want %d", total, n)
			}
			// Counts are deltas: nothing new, nothing counted.
			if c, err := s.Read(); err != nil || len(c.Stacks) != 0 {
				t.Errorf("second read: %+v, %v; want nothing", c.Stacks, err)
			}
		})
	}
}

// TestOverflow makes the maps too small on purpose: a stack that finds the
// stack map's one bucket taken is still counted, under its error; an event
// that finds the count map full is counted as uncounted. Neither is lost or
// given to another stack. Both with preallocated count maps and, where the
// kernel allows it, with maps that allocate on insert.
func TestOverflow(t *testing.T) {
	l := kernelLayout(t)
	allocations := []Allocation{{Why: "chosen by the test"}}
	if a := chooseAllocation(); a.onDemand {
		allocations = append(allocations, a)
	} else {
		t.Logf("not tried allocated on insert: %v", a)
	}
	for _, c := range []struct {
		name     string
		counters uint32
	}{{"lost stack", 2}, {"count map full", 1}} {
		for _, a := range allocations {
			t.Run(fmt.Sprintf("%s, %s", c.name, a.how()), func(t *testing.T) { overflow(t, l, c.counters, a) })
		}
	}
}

func overflow(t *testing.T, l *layout.Layout, counters uint32, a Allocation) {
	defer func(find func() Allocation) { findAllocation = find }(findAllocation)
	findAllocation = func() Allocation { return a }
	defer func(counters, stacks uint32) { countEntries, stackEntries = counters, stacks }(countEntries, stackEntries)
	countEntries, stackEntries = counters, 1
	v4 := closedPort(t)
	s := loadDrops(t, l, filter.Options{Dport: strconv.Itoa(int(v4.Port())), Proto: "udp"})
	// IPv4 and IPv6 drops have different stacks; only one fits.
	const n = 5
	sendUDP(t, v4, n)
	sendUDP(t, netip.AddrPortFrom(netip.IPv6Loopback(), v4.Port()), n)
	cnt, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	recorded, lost := recordedLost(cnt.Stacks)
	got := []uint64{recorded, lost, cnt.Noted(Drop, CountMapFull)}
	want := []uint64{n, n, 0}
	if counters == 1 {
		want = []uint64{n, 0, n}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recorded, lost, uncounted = %v, want %v (%+v)", got, want, cnt)
	}
}

// recordedLost sums the counts of the stacks the kernel recorded, and of
// those it lost.
func recordedLost(stacks []StackCount) (recorded, lost uint64) {
	for _, st := range stacks {
		if st.Lost != 0 {
			lost += st.Count
		} else {
			recorded += st.Count
		}
	}
	return recorded, lost
}
