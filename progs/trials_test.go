package progs

import (
	"errors"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/filter"
)

// TestLackFoundWhileAttaching loads the INGRESS rows without first asking
// which mechanisms the kernel has, so that the concurrent attaches find out:
// a kernel that refuses fentry (as this machine's does, EPERM) must fail
// every function row with the first row's reason for fentry, as if tried
// one after another, and leave only the tracepoint rows' programs and links
// behind.
func TestLackFoundWhileAttaching(t *testing.T) {
	l := kernelLayout(t)
	f, err := filter.Parse(filter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Layout: l, Filter: f, Ingress: true, Attach: Auto}
	p, err := newPlan(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if lack := kernelLacks(Fentry, tryFentry("bpf_fentry_test1", l.KernelBTF())); lack == nil {
		t.Skip("fentry attaches on this kernel: the test needs one that refuses it")
	}
	s, err := load(cfg, p, prepareKernel(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, a := range s.Attached {
		if a.Mechanism != "tp_btf" && a.Mechanism != "raw tracepoint" && a.Mechanism != "perf tracepoint" {
			t.Errorf("%s attached as %s on a kernel that refuses fentry", a.Probe, a.Mechanism)
		}
	}
	if len(s.progs) != len(s.Attached) || len(s.links) != len(s.Attached) {
		t.Errorf("%d programs and %d links for %d attached probes", len(s.progs), len(s.links), len(s.Attached))
	}
	var first string
	funcs := 0
	for _, a := range s.Skipped {
		var tried attempts
		if !errors.As(a.Err, &tried) {
			continue // not in this kernel
		}
		funcs++
		fentry := tried[0].Error()
		if first == "" {
			first = fentry
		} else if fentry != first {
			t.Errorf("%s: %s, want the first row's reason: %s", a.Probe, fentry, first)
		}
	}
	if funcs < 10 {
		t.Fatalf("%d function rows failed, want every INGRESS function row this kernel has", funcs)
	}
	if !strings.Contains(first, "skbstat_fn0") {
		t.Errorf("the fentry reason is %q, want the first program's (skbstat_fn0)", first)
	}
	t.Logf("%d function rows: %s", funcs, first)
}
