package progs

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Set is the loaded and attached programs of one skbstat run.
type Set struct {
	probes []*probe
	rows   uint32
	maps   map[string]*ebpf.Map
	progs  []*ebpf.Program
	links  []link.Link
	missed []*missCounter // the kernel's counts of skipped runs

	// Counting is how the programs update their counters, and why.
	Counting Counting
	// Allocation is how the stack counters get memory for their entries;
	// zero without DROP and CONSUME.
	Allocation Allocation

	// Attached says, per probe, how it was attached; Skipped, why not.
	Attached []Attachment
	Skipped  []Attachment

	// dropReasons: the DROP probe reads the drop reason.
	dropReasons bool
	prevRows    map[uint32]uint64
	// ageing drains the stack generations; nil without stacks.
	ageing *ageing
	// drained is the sum of every stack count drained so far.
	drained uint64
	// ended: the programs are detached, and none still runs.
	ended bool
}

// Attachment is the outcome for one probe.
type Attachment struct {
	Section   Section
	Probe     string
	Mechanism string // how it was attached
	Err       error  // why it was not
}

// Detach detaches every program, so that nothing more is counted, and
// returns once no program can still be running on another CPU: then the
// counters hold their final values, for a last Read that misses nothing.
func (s *Set) Detach() error {
	// Links close in parallel: each fentry link waits for the kernel to
	// retire its trampoline, and one after another those waits add up.
	errs := make([]error, len(s.links))
	var wg sync.WaitGroup
	for i, l := range s.links {
		wg.Go(func() {
			for _, c := range s.missed {
				if c.link == l {
					c.freeze()
				}
			}
			errs[i] = l.Close()
		})
	}
	wg.Wait()
	s.links = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	if err := s.settle(); err != nil {
		return err
	}
	s.ended = true
	return nil
}

// settle waits until the counters stop changing: a program that a CPU was
// running as its link closed ends within microseconds, so two sums of
// every counter a millisecond apart that agree mean that none runs.
func (s *Set) settle() error {
	if err := untilUnchanged(s.total); err != nil {
		return fmt.Errorf("after detaching: %w", err)
	}
	return nil
}

// total sums every counter of every CPU, rows and both generations of
// stacks, and what was drained from them: all counted since Load.
func (s *Set) total() (uint64, error) {
	per := make([]uint64, ebpf.MustPossibleCPU())
	var sum uint64
	for key := uint32(0); key < noteRow(s.rows, numSections, 0); key++ {
		if err := s.maps[rowsMap].Lookup(key, &per); err != nil {
			return 0, err
		}
		sum += sumCPUs(per)
	}
	if s.ageing == nil {
		return sum, nil
	}
	sum += s.drained
	for g := range uint32(numGenerations) {
		n, err := generationSum(s.ageing.gens, g)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

// Close detaches (if Detach has not) and unloads everything.
func (s *Set) Close() error {
	var errs []error
	if len(s.links) > 0 {
		errs = append(errs, s.Detach())
	}
	for _, p := range s.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range s.maps {
		errs = append(errs, m.Close())
	}
	s.progs, s.maps = nil, nil
	return errors.Join(errs...)
}

// attached reports whether probe p was attached.
func (s *Set) attached(p *probe) bool {
	for _, a := range s.Attached {
		if a.Section == p.section && a.Probe == p.name {
			return true
		}
	}
	return false
}

// RowCount is how often a row's probe matched in an interval: every
// attached probe's, zero included.
type RowCount struct {
	Section Section
	Name    string
	Rank    int
	Count   uint64
}

// StackCount is how often a section's probe matched at one kernel stack (and
// drop reason, and location) in an interval.
type StackCount struct {
	Section Section
	// PCs is the kernel stack, leaf first; nil where it is Lost.
	PCs []uint64
	// Lost is -errno where the kernel could not record the stack, else 0.
	Lost      int32
	Reason    uint32
	HasReason bool
	// Location is the return address, in its caller, of the function that
	// freed the skb (kfree_skb's location argument, and consume_skb's since
	// Linux 6.3); 0 where the tracepoint has none.
	Location uint64
	Count    uint64
}

// Note is a number of a section's events in an interval that its rows and
// stacks do not count, and why.
type Note struct {
	Section Section
	Cause   Cause
	Count   uint64
}

// Counts is one interval's worth of counts.
type Counts struct {
	Rows   []RowCount
	Stacks []StackCount
	Notes  []Note // in the order of sections, then causes; none zero
}

// Noted is the count of section s's note of cause c.
func (c Counts) Noted(s Section, cause Cause) uint64 {
	for _, n := range c.Notes {
		if n.Section == s && n.Cause == cause {
			return n.Count
		}
	}
	return 0
}

// Read returns what was counted since the previous Read (or Load).
func (s *Set) Read() (Counts, error) {
	var c Counts
	rows := s.maps[rowsMap]
	per := make([]uint64, ebpf.MustPossibleCPU())
	total := func(key uint32) (uint64, error) {
		if err := rows.Lookup(key, &per); err != nil {
			return 0, fmt.Errorf("read counter %d: %w", key, err)
		}
		return delta(s.prevRows, key, per), nil
	}
	for _, p := range s.probes {
		if p.stacks() {
			continue
		}
		n, err := total(p.row)
		if err != nil {
			return c, err
		}
		if n > 0 || s.attached(p) {
			c.Rows = append(c.Rows, RowCount{p.section, p.name, p.rank, n})
		}
	}
	for sec := Section(0); sec < numSections; sec++ {
		for cause := Cause(0); cause < numNoted; cause++ {
			n, err := total(noteRow(s.rows, sec, cause))
			if err != nil {
				return c, err
			}
			if n > 0 {
				c.Notes = append(c.Notes, Note{sec, cause, n})
			}
		}
	}
	misses, err := s.missNotes()
	if err != nil {
		return c, err
	}
	c.Notes = append(c.Notes, misses...)
	sortNotes(c.Notes)
	if s.ageing == nil {
		return c, nil
	}
	if c.Stacks, err = s.ageing.drain(s.ended); err != nil {
		return c, fmt.Errorf("read stack counters: %w", err)
	}
	for i := range c.Stacks {
		c.Stacks[i].HasReason = s.hasReason(c.Stacks[i].Section)
		s.drained += c.Stacks[i].Count
	}
	sort.Slice(c.Stacks, func(i, j int) bool { return c.Stacks[i].Count < c.Stacks[j].Count })
	return c, nil
}

// delta sums a counter's per-CPU values and returns how much the sum grew
// since the last call for key.
func delta[K comparable](prev map[K]uint64, key K, perCPU []uint64) uint64 {
	sum := sumCPUs(perCPU)
	d := sum - prev[key]
	prev[key] = sum
	return d
}

// sumCPUs is a per-CPU counter's total.
func sumCPUs(perCPU []uint64) uint64 {
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum
}

func (s *Set) hasReason(sec Section) bool {
	return sec == Drop && s.dropReasons
}
