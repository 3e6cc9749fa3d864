package progs

// Planning: which probes a Config asks for, and which of the kernel
// functions among them this kernel can attach, and how.

import (
	"fmt"

	"github.com/skbstat/skbstat/kallsyms"
)

// plan is what Load attaches: every probe cfg asks for, tracepoints first;
// the kernel functions it asks for that cannot be attached, and why; and the
// mechanisms the kernel lacks.
type plan struct {
	probes  []*probe
	missing []Attachment
	dead    map[Mechanism]error
}

// newPlan plans what cfg asks for. With tryMechanisms it first finds the
// attach mechanisms the kernel lacks, by trying them (a feature probe, a
// trial fentry program); without, it plans every one as available and
// creates nothing in the kernel, as --dump-bpf must.
func newPlan(cfg Config, tryMechanisms bool) (plan, error) {
	p := plan{probes: tracepointProbes(cfg), dead: map[Mechanism]error{}}
	fns, excluded := wantedFuncs(cfg)
	p.missing = excluded
	if len(fns) == 0 || !tryMechanisms {
		return p.withFunctions(cfg, fns)
	}
	// fentry is tried on a kernel test function that nothing else calls,
	// where the kernel has it, so that the trial costs no real function a
	// trampoline.
	probeFn := "bpf_fentry_test1"
	for i := 0; !cfg.Layout.HasFunc(probeFn); i++ {
		if i == len(fns) {
			probeFn = ""
			break
		}
		probeFn = fns[i].name
	}
	p.dead = lackingMechanisms(cfg.Attach, probeFn, cfg.Layout)
	if err := noMechanism(cfg.Attach, p.dead); err != nil {
		if cfg.Attach != Auto {
			return p, fmt.Errorf("--attach %s: %w", cfg.Attach, p.dead[cfg.Attach])
		}
		for _, k := range fns {
			p.missing = append(p.missing, Attachment{Section: k.section, Probe: k.name, Err: err})
		}
		return p, nil
	}
	return p.withFunctions(cfg, fns)
}

// withFunctions adds the probes of the kernel functions fns.
func (p plan) withFunctions(cfg Config, fns []kernelFunc) (plan, error) {
	if len(fns) == 0 {
		return p, nil
	}
	names := make([]string, len(fns))
	for i, k := range fns {
		names[i] = k.name
	}
	syms, err := kallsyms.LoadFunctions(names)
	if err != nil {
		return p, fmt.Errorf("kernel functions: %w", err)
	}
	fps, missing := functionProbes(cfg.Layout, syms, fns)
	p.probes, p.missing = append(p.probes, fps...), append(p.missing, missing...)
	return p, nil
}

// tracepointProbes lists the tracepoints cfg asks for, in a fixed order.
func tracepointProbes(cfg Config) []*probe {
	tp := func(s Section, group, name, prog string, rank int, fromData bool) *probe {
		return &probe{section: s, name: group + ":" + name, prog: prog, rank: rank,
			fromData: fromData, hooks: tracepointHooks(cfg.Layout, group, name)}
	}
	var ps []*probe
	if cfg.Ingress {
		ps = append(ps, tp(Ingress, "net", "netif_receive_skb", "skbstat_rx", 30, true))
	}
	if cfg.Egress {
		ps = append(ps,
			tp(Egress, "net", "net_dev_queue", "skbstat_queue", 20, false),
			tp(Egress, "net", "net_dev_xmit", "skbstat_xmit", 21, false))
	}
	if cfg.Consume {
		ps = append(ps, tp(Consume, "skb", "consume_skb", "skbstat_consume", 0, false))
	}
	if cfg.Drop {
		ps = append(ps, tp(Drop, "skb", "kfree_skb", "skbstat_drop", 0, false))
	}
	return ps
}

// numberRows gives each row probe its counter index and returns how many
// there are.
func numberRows(ps []*probe) uint32 {
	var rows uint32
	for _, p := range ps {
		if !p.stacks() {
			p.row = rows
			rows++
		}
	}
	return rows
}
