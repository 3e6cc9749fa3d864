package progs

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// missCounter is a count that the kernel keeps of the runs of a section's
// program that it skipped because a program was already running on that
// CPU: events that no map counter can see.
type missCounter struct {
	section Section
	read    func() (uint64, error) // the count since the program was loaded
	link    link.Link              // whose count it is; nil for a program's
	last    uint64
}

// freeze reads the count once more and keeps it: a link's count can no
// longer be read once the link is closed.
func (c *missCounter) freeze() {
	n, err := c.read()
	c.read = func() (uint64, error) { return n, err }
}

// programMisses reads a program's count of the runs the kernel skipped: a
// raw tracepoint or fentry program's where it was running on the CPU
// already (since Linux 6.1 and 5.12), a kprobe, kprobe.multi or perf
// tracepoint program's where any program of those kinds was (since 6.7).
// Before 5.12 the kernel has no such count, and it reads 0.
func programMisses(prog *ebpf.Program) func() (uint64, error) {
	return func() (uint64, error) {
		st, err := prog.Stats()
		if err != nil {
			return 0, fmt.Errorf("program statistics: %w", err)
		}
		return st.RecursionMisses, nil
	}
}

// linkMisses returns the reader of a kprobe's or kprobe.multi link's count
// of hits that did not run the program because the CPU was handling
// another kprobe (or, for kprobe.multi, was inside the function tracer
// already): since Linux 6.7. It returns nil where the kernel keeps no such
// count for l or cannot say (a link that is not a kprobe's, kernels before
// 6.6 with no kprobe link information).
func linkMisses(l link.Link) (func() (uint64, error), error) {
	_, ok, err := linkMissed(l)
	if errors.Is(err, ebpf.ErrNotSupported) || err == nil && !ok {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return func() (uint64, error) {
		n, _, err := linkMissed(l)
		return n, err
	}, nil
}

// linkMissed reads l's count of missed hits; ok is false where l has none.
func linkMissed(l link.Link) (n uint64, ok bool, err error) {
	info, err := l.Info()
	if err != nil {
		return 0, false, fmt.Errorf("link information: %w", err)
	}
	if km := info.KprobeMulti(); km != nil {
		return km.Missed, true, nil
	}
	if pe := info.PerfEvent(); pe != nil && pe.Kprobe() != nil {
		return pe.Kprobe().Missed, true, nil
	}
	return 0, false, nil
}

// missCounters are the kernel's counts of skipped runs of prog, attached
// with l, in section sec.
func missCounters(sec Section, prog *ebpf.Program, l link.Link) ([]*missCounter, error) {
	counters := []*missCounter{{section: sec, read: programMisses(prog)}}
	read, err := linkMisses(l)
	if err != nil {
		return nil, fmt.Errorf("missed hits: %w", err)
	}
	if read != nil {
		counters = append(counters, &missCounter{section: sec, read: read, link: l})
	}
	return counters, nil
}

// missNotes returns, per section, how many runs the kernel skipped since
// the last call.
func (s *Set) missNotes() ([]Note, error) {
	var per [numSections]uint64
	for _, c := range s.missed {
		n, err := c.read()
		if err != nil {
			return nil, fmt.Errorf("%s: read skipped runs: %w", c.section, err)
		}
		per[c.section] += n - c.last
		c.last = n
	}
	var notes []Note
	for sec, n := range per {
		if n > 0 {
			notes = append(notes, Note{Section(sec), AlreadyRunning, n})
		}
	}
	return notes, nil
}

// sortNotes puts notes in the order of sections, then causes.
func sortNotes(notes []Note) {
	sort.Slice(notes, func(i, j int) bool {
		if notes[i].Section != notes[j].Section {
			return notes[i].Section < notes[j].Section
		}
		return notes[i].Cause < notes[j].Cause
	})
}
