package progs

// Loading: the maps, then a program per probe, loaded and attached with the
// best hook the kernel offers (kernel functions: funcs.go).

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/skbstat/skbstat/internal/tracing"
)

// Load creates the maps, loads a program per probe and attaches it with the
// best hook the kernel offers. A probe that cannot be attached is skipped and
// listed in Skipped; if none can be, Load fails and leaves nothing behind.
func Load(cfg Config) (*Set, error) {
	return StartKernel(cfg).Load(cfg)
}

// Load is Load with what k prepared, which it takes: k must have been
// started with a Config that asks for the same sections and stacks.
func (k *Kernel) Load(cfg Config) (*Set, error) {
	p, err := newPlan(cfg, true)
	if err != nil {
		k.Close()
		return nil, err
	}
	return load(cfg, p, k)
}

func load(cfg Config, p plan, k *Kernel) (_ *Set, err error) {
	s := &Set{probes: p.probes, rows: numberRows(p.probes), prevRows: map[uint32]uint64{}, Skipped: p.missing}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.maps, err = k.take(); err != nil {
		return nil, err
	}
	s.Counting, s.Allocation = k.counting, k.alloc
	cfg.update, cfg.alloc = k.counting.update, k.alloc
	rows, err := newMap(rowsSpec(s.rows))
	if err != nil {
		return nil, fmt.Errorf("create map %s: %w", rowsMap, err)
	}
	s.maps[rowsMap] = rows
	if cfg.Consume || cfg.Drop {
		s.ageing = &ageing{gens: newKernelGenerations(s.maps)}
	}
	s.attachAll(cfg, p.dead)
	if err := s.enough(cfg, p.dead); err != nil {
		return nil, err
	}
	return s, nil
}

// attachAll attaches every probe: tracepoints first, then the kernel
// functions, with the mechanisms the kernel does not lack (dead).
func (s *Set) attachAll(cfg Config, dead map[Mechanism]error) {
	var points, funcs []*probe
	for _, pr := range s.probes {
		if pr.fn != nil {
			funcs = append(funcs, pr)
		} else {
			points = append(points, pr)
		}
	}
	s.attachTracepoints(points, cfg)
	s.attachFunctions(funcs, cfg, dead)
}

// attachTracepoints attaches each tracepoint probe with the first of its
// hooks that loads and attaches. The probes' programs load and attach at
// once, in rounds: first hooks, then the next hook of each probe whose hook
// failed. The verifier and the kernel's patching of the tracepoint are most
// of the time, and each probe's is its own; what reads the layout (a hook's
// resolving, its program's generating) runs one probe at a time.
func (s *Set) attachTracepoints(ps []*probe, cfg Config) {
	tries := make([]tracepointTry, len(ps))
	pending := make([]*tracepointTry, len(ps))
	for i, p := range ps {
		tries[i].p = p
		pending[i] = &tries[i]
	}
	for len(pending) > 0 {
		var ready []*tracepointTry
		for _, t := range pending {
			if t.prepareNext(s, cfg) {
				ready = append(ready, t)
			}
		}
		var wg sync.WaitGroup
		for _, t := range ready {
			wg.Go(func() { t.loaded, t.err = loadAndAttach(t.p, t.h, t.spec) })
		}
		wg.Wait()
		pending = pending[:0]
		for _, t := range ready {
			if t.err != nil {
				t.errs = append(t.errs, fmt.Errorf("%s: %w", t.h.mechanism(), t.err))
				pending = append(pending, t)
			}
		}
	}
	for _, t := range tries {
		if t.err != nil || t.spec == nil {
			s.record(Attachment{Section: t.p.section, Probe: t.p.name, Err: t.errs})
			continue
		}
		s.keep(t.loaded)
		s.record(Attachment{Section: t.p.section, Probe: t.p.name, Mechanism: t.h.mechanism()})
	}
}

// tracepointTry is where attaching one tracepoint probe stands: why each
// hook tried failed, the next to try, and the last one prepared, its
// outcome.
type tracepointTry struct {
	p      *probe
	errs   attempts
	next   int // of p.hooks
	h      hook
	spec   *ebpf.ProgramSpec // nil until a hook is prepared
	loaded loadedProbe
	err    error // why h did not load or attach
}

// prepareNext resolves the probe's hooks from the next on and prepares the
// program of the first that resolves; false where none is left.
func (t *tracepointTry) prepareNext(s *Set, cfg Config) bool {
	t.spec = nil
	for t.next < len(t.p.hooks) {
		resolve := t.p.hooks[t.next]
		t.next++
		h, err := resolve()
		if err != nil {
			t.errs = append(t.errs, err)
			continue
		}
		spec, err := s.programSpec(t.p, h, cfg)
		if err != nil {
			t.errs = append(t.errs, fmt.Errorf("%s: %w", h.mechanism(), err))
			continue
		}
		t.h, t.spec, t.err = h, spec, nil
		return true
	}
	return false
}

// enough fails where what was attached is not what cfg may run with: a
// mechanism that --attach asked for and the kernel lacks, a function that
// -f named and could not be attached, or no probe at all.
func (s *Set) enough(cfg Config, dead map[Mechanism]error) error {
	if err := dead[cfg.Attach]; err != nil && slices.ContainsFunc(s.probes, func(p *probe) bool { return p.fn != nil }) {
		return fmt.Errorf("--attach %s: %w", cfg.Attach, err)
	}
	// A function the user named that counts nothing would be a wrong
	// answer, not a degraded one.
	for _, a := range s.Skipped {
		if a.Section == Func {
			return fmt.Errorf("-f %s: %w", a.Probe, a.Err)
		}
	}
	if len(s.Attached) == 0 {
		errs := make([]error, len(s.Skipped))
		for i, a := range s.Skipped {
			errs[i] = fmt.Errorf("%s: %w", a.Probe, a.Err)
		}
		return fmt.Errorf("no probe could be attached: %w", errors.Join(errs...))
	}
	return nil
}

func (s *Set) record(a Attachment) {
	if a.Err != nil {
		s.Skipped = append(s.Skipped, a)
	} else {
		s.Attached = append(s.Attached, a)
	}
}

// errNests refuses a hook whose program could start on a CPU in the middle
// of another program's plain add.
var errNests = errors.New("its programs can start while another program runs on the CPU, and this kernel's JIT has no atomic add to count exactly there")

// attempts is why each way of attaching a probe failed. It prints on one
// line, and errors.Is sees each cause (to tell, say, missing privileges).
type attempts []error

func (a attempts) Error() string {
	msgs := make([]string, len(a))
	for i, err := range a {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (a attempts) Unwrap() []error { return a }

// attachHook loads and attaches probe p's program at hook h.
func (s *Set) attachHook(p *probe, h hook, cfg Config) error {
	spec, err := s.programSpec(p, h, cfg)
	if err != nil {
		return err
	}
	loaded, err := loadAndAttach(p, h, spec)
	if err != nil {
		return err
	}
	s.keep(loaded)
	return nil
}

// programSpec generates probe p's program for hook h, with the Set's maps.
func (s *Set) programSpec(p *probe, h hook, cfg Config) (*ebpf.ProgramSpec, error) {
	if cfg.update == plainAdd && h.nests() {
		return nil, errNests
	}
	g, err := program(p, h, cfg, s.rows)
	if err != nil {
		return nil, err
	}
	insns := g.insns
	for name, m := range s.maps {
		if err := insns.AssociateMap(name, m); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
			return nil, err
		}
	}
	spec := &ebpf.ProgramSpec{Name: p.prog, Instructions: insns, License: "GPL"}
	h.configure(spec)
	return spec, nil
}

// loadedProbe is a probe's program in the kernel, attached, with what
// counts the runs the kernel skipped.
type loadedProbe struct {
	prog        *ebpf.Program
	link        link.Link
	missed      []*missCounter
	dropReasons bool // a DROP program that counts by drop reason
}

// loadAndAttach loads spec, probe p's program for hook h, and attaches it. It
// keeps nothing of the Set's: probes load at the same time.
func loadAndAttach(p *probe, h hook, spec *ebpf.ProgramSpec) (loadedProbe, error) {
	prog, err := loadProgram(spec, h.target())
	if err != nil {
		return loadedProbe{}, fmt.Errorf("load: %w", err)
	}
	l, err := h.attach(prog)
	if err != nil {
		prog.Close()
		return loadedProbe{}, fmt.Errorf("attach: %w", err)
	}
	missed, err := missCounters(p.section, prog, l)
	if err != nil {
		l.Close()
		prog.Close()
		return loadedProbe{}, err
	}
	loaded := loadedProbe{prog: prog, link: l, missed: missed}
	if p.section == Drop {
		_, loaded.dropReasons = h.loadReason(asm.R1)
	}
	return loaded, nil
}

// keep makes a loaded probe the Set's, to read, detach and close.
func (s *Set) keep(lp loadedProbe) {
	s.progs = append(s.progs, lp.prog)
	s.links = append(s.links, lp.link)
	s.missed = append(s.missed, lp.missed...)
	if lp.dropReasons {
		s.dropReasons = true
	}
}

// loadProgram loads spec. A tracing program (tp_btf, fentry) is loaded
// against target, the BTF ID of what it attaches to.
func loadProgram(spec *ebpf.ProgramSpec, target uint32) (*ebpf.Program, error) {
	// Comments are for listings (--dump-bpf); loaded, the kernel would
	// take them for source line information.
	for i := range spec.Instructions {
		spec.Instructions[i] = spec.Instructions[i].WithSource(nil)
	}
	if spec.Type == ebpf.Tracing {
		return tracing.Load(spec, target)
	}
	return ebpf.NewProgram(spec)
}
