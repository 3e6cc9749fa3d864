package progs

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/filter"
)

// TestChooseCounting checks the counter update chosen by trying against
// what is known of this kernel's JIT: off, every program is interpreted
// and the atomic add is exact; 32-bit ARM's JIT has no atomics; the JITs
// of the other architectures skbstat runs on have them.
func TestChooseCounting(t *testing.T) {
	kernelLayout(t)
	b, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable")
	if err != nil {
		t.Skipf("whether the JIT is on cannot be told: %v", err)
	}
	c, err := chooseCounting()
	if err != nil {
		t.Fatal(err)
	}
	want := atomicAdd
	if strings.TrimSpace(string(b)) != "0" && kernelArch() == "arm" {
		want = plainAdd
	}
	if c.update != want {
		t.Errorf("chose %v, want %v (JIT enabled: %s)", c, want, b)
	}
	t.Logf("%v", c)
}

// TestPlainAdd counts with the plain add, as where the JIT has no atomic
// add: the DROP probe then refuses the raw tracepoint, whose program could
// start in the middle of another's update, attaches as a perf tracepoint,
// and counts datagrams to a closed port exactly.
func TestPlainAdd(t *testing.T) {
	l := kernelLayout(t)
	defer func(find func() (Counting, error)) { findCounting = find }(findCounting)
	findCounting = func() (Counting, error) { return Counting{update: plainAdd, Why: "chosen by the test"}, nil }
	to := closedPort(t)
	s := loadDrops(t, l, filter.Options{Daddr: to.Addr().String(), Dport: strconv.Itoa(int(to.Port())), Proto: "udp"})
	if len(s.Attached) != 1 || s.Attached[0].Mechanism != "perf tracepoint" {
		t.Fatalf("attached %+v, want the perf tracepoint", s.Attached)
	}
	const n = 9
	sendUDP(t, to, n)
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, st := range c.Stacks {
		total += st.Count
	}
	if total != n || len(c.Notes) != 0 {
		t.Errorf("%d drops and notes %+v, want %d and none", total, c.Notes, n)
	}
}
