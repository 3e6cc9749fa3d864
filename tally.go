package main

import (
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/skbstat/skbstat/metrics"
	"github.com/skbstat/skbstat/output"
	"github.com/skbstat/skbstat/progs"
)

// tally is the one reader of the kernel's counters: the printed intervals
// and the metrics both take what it reads, so that a scrape between two
// intervals takes nothing from the next interval's output.
type tally struct {
	mu      sync.Mutex
	set     *progs.Set
	r       *renderer
	metrics *metrics.Counters // nil: no exporter
	pending []output.Section  // read since the last printed interval
}

// sample reads what was counted since the last read into the pending
// interval and the metrics.
func (t *tally) sample() error {
	sections, err := t.r.read(t.set)
	if err != nil {
		return err
	}
	if t.metrics != nil {
		t.metrics.Add(sections)
	}
	if t.pending == nil {
		t.pending = sections
	} else {
		for i := range t.pending {
			t.pending[i] = mergeSections(t.pending[i], sections[i])
		}
	}
	return nil
}

// interval reads and prints the interval that ends now, if w is not nil.
func (t *tally) interval(w io.Writer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.sample(); err != nil {
		return err
	}
	sections := t.pending
	t.pending = nil
	if w == nil {
		return nil
	}
	return t.r.print(w, sections)
}

// writeMetrics reads the kernel's counters, so that a scrape is never
// staler than the kernel, and writes the metrics.
func (t *tally) writeMetrics(w io.Writer) error {
	t.mu.Lock()
	err := t.sample()
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("read counters: %w", err)
	}
	return t.metrics.Write(w)
}

// mergeSections adds the counts of b to those of a, the same section read
// later.
func mergeSections(a, b output.Section) output.Section {
	for _, r := range b.Rows {
		if i := slices.IndexFunc(a.Rows, func(x output.Row) bool { return x.Name == r.Name }); i >= 0 {
			a.Rows[i].Count += r.Count
		} else {
			a.Rows = append(a.Rows, r)
		}
	}
	for _, st := range b.Stacks {
		if i := slices.IndexFunc(a.Stacks, func(x output.Stack) bool { return sameStack(x, st) }); i >= 0 {
			a.Stacks[i].Count += st.Count
		} else {
			a.Stacks = append(a.Stacks, st)
		}
	}
	for _, n := range b.Notes {
		if i := slices.IndexFunc(a.Notes, func(x output.Note) bool { return x.Cause == n.Cause }); i >= 0 {
			a.Notes[i].Count += n.Count
		} else {
			a.Notes = append(a.Notes, n)
		}
	}
	return a
}

// sameStack reports whether a and b are one entry of a section.
func sameStack(a, b output.Stack) bool {
	return a.Reason == b.Reason && a.Location == b.Location && a.LostID == b.LostID && slices.Equal(a.Frames, b.Frames)
}
