package progs

// Loading: the maps, then a program per probe, loaded and attached with the
// best hook the kernel offers (kernel functions: funcs.go).

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

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
	var funcs []*probe
	for _, pr := range s.probes {
		if pr.fn != nil {
			funcs = append(funcs, pr)
			continue
		}
		mech, err := s.attach(pr, cfg)
		s.record(Attachment{Section: pr.section, Probe: pr.name, Mechanism: mech, Err: err})
	}
	s.attachFunctions(funcs, cfg, dead)
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

// attach tries a tracepoint probe's hooks in order and keeps the first that loads and
// attaches.
func (s *Set) attach(p *probe, cfg Config) (mechanism string, err error) {
	var errs attempts
	for _, resolve := range p.hooks {
		h, err := resolve()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.attachHook(p, h, cfg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.mechanism(), err))
			continue
		}
		return h.mechanism(), nil
	}
	return "", errs
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

func (s *Set) attachHook(p *probe, h hook, cfg Config) error {
	if cfg.update == plainAdd && h.nests() {
		return errNests
	}
	g, err := program(p, h, cfg, s.rows)
	if err != nil {
		return err
	}
	insns := g.insns
	for name, m := range s.maps {
		if err := insns.AssociateMap(name, m); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
			return err
		}
	}
	spec := &ebpf.ProgramSpec{Name: p.prog, Instructions: insns, License: "GPL"}
	h.configure(spec)
	prog, err := loadProgram(spec, h.target())
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	l, err := h.attach(prog)
	if err != nil {
		prog.Close()
		return fmt.Errorf("attach: %w", err)
	}
	missed, err := missCounters(p.section, prog, l)
	if err != nil {
		l.Close()
		prog.Close()
		return err
	}
	s.progs = append(s.progs, prog)
	s.links = append(s.links, l)
	s.missed = append(s.missed, missed...)
	if p.section == Drop {
		_, s.dropReasons = h.loadReason(asm.R1)
	}
	return nil
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
