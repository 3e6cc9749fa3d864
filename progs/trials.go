package progs

import (
	"errors"
	"sync"
)

// trial is one program loaded and attached into a Set of its own, which
// shares the maps of the Set it is for; it is kept or undone once every
// trial of its batch has ended.
type trial struct {
	set Set
	err error
}

// tryAll loads and attaches each probe ps[i] with hooks[i], all at the same
// time: where the kernel waits in an attach (on 5.10 each BPF trampoline
// update waits for an RCU tasks grace period), the waits overlap instead of
// adding up. Each trial fills a Set of its own, so that s keeps its
// programs, links and miss counters in the probes' order (see keep), however
// the kernel orders the attaches.
func (s *Set) tryAll(ps []*probe, hooks []hook, cfg Config) []*trial {
	trials := make([]*trial, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		t := &trial{set: Set{maps: s.maps, rows: s.rows}}
		trials[i] = t
		wg.Go(func() { t.err = t.set.attachHook(p, hooks[i], cfg) })
	}
	wg.Wait()
	return trials
}

// keep moves what t attached into s.
func (t *trial) keep(s *Set) {
	s.progs = append(s.progs, t.set.progs...)
	s.links = append(s.links, t.set.links...)
	s.missed = append(s.missed, t.set.missed...)
}

// undo detaches and unloads what t attached.
func (t *trial) undo() error {
	var errs []error
	for _, l := range t.set.links {
		errs = append(errs, l.Close())
	}
	for _, p := range t.set.progs {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}
