package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/skbstat/skbstat/internal/tracefs"
	"github.com/skbstat/skbstat/kallsyms"
	"github.com/skbstat/skbstat/layout"
	"github.com/skbstat/skbstat/output"
	"github.com/skbstat/skbstat/progs"
)

// renderer turns each interval's counts into output sections. Symbols and
// drop reason names are loaded on first need only: a run that sees no stack
// never reads /proc/kallsyms.
type renderer struct {
	layout   *layout.Layout
	sections []progs.Section
	warn     io.Writer

	syms    *kallsyms.Table
	reasons map[uint32]string
	frames  map[int32][]string // symbolized stacks by id; ids are never reused
}

func newRenderer(cfg progs.Config, warn io.Writer) *renderer {
	r := &renderer{layout: cfg.Layout, warn: warn, frames: map[int32][]string{}}
	for _, s := range []struct {
		section progs.Section
		on      bool
	}{{progs.Ingress, cfg.Ingress}, {progs.Egress, cfg.Egress}, {progs.Func, len(cfg.Funcs) > 0},
		{progs.Consume, cfg.Consume}, {progs.Drop, cfg.Drop}} {
		if s.on {
			r.sections = append(r.sections, s.section)
		}
	}
	return r
}

// interval reads what was counted since the last call and prints it.
func (r *renderer) interval(w io.Writer, set *progs.Set) error {
	c, err := set.Read()
	if err != nil {
		return err
	}
	bySection := map[progs.Section]*output.Section{}
	out := make([]output.Section, len(r.sections))
	for i, s := range r.sections {
		out[i] = output.Section{Name: s.String(), Uncounted: c.Uncounted[s]}
		bySection[s] = &out[i]
	}
	for _, row := range c.Rows {
		sec := bySection[row.Section]
		sec.Rows = append(sec.Rows, output.Row{Name: row.Name, Rank: row.Rank, Count: row.Count})
	}
	for _, st := range c.Stacks {
		stack := output.Stack{Count: st.Count}
		if st.HasReason {
			stack.Reason = layout.ReasonName(r.dropReasons(), st.Reason)
		}
		if st.StackID < 0 {
			stack.LostID = int64(st.StackID)
		} else if stack.Frames, err = r.stack(set, st.StackID); err != nil {
			return err
		}
		sec := bySection[st.Section]
		sec.Stacks = append(sec.Stacks, stack)
	}
	return output.Write(w, time.Now(), out)
}

func (r *renderer) stack(set *progs.Set, id int32) ([]string, error) {
	if f, ok := r.frames[id]; ok {
		return f, nil
	}
	pcs, err := set.Stack(id)
	if err != nil {
		return nil, err
	}
	syms := r.symbols()
	frames := make([]string, len(pcs))
	for i, pc := range pcs {
		if syms != nil {
			frames[i] = syms.Symbolize(pc)
		} else {
			frames[i] = fmt.Sprintf("0x%x", pc)
		}
	}
	for len(frames) > 1 && isTracingFrame(frames[0]) {
		frames = frames[1:]
	}
	r.frames[id] = frames
	return frames, nil
}

// isTracingFrame reports whether a leaf frame belongs to the machinery that
// ran skbstat's program rather than to the code that handled the packet.
func isTracingFrame(frame string) bool {
	if strings.HasSuffix(frame, " [bpf]") {
		return true
	}
	for _, prefix := range []string{"bpf_trace_run", "__bpf_trace_", "perf_trace_", "perf_tp_event", "trace_call_bpf", "__traceiter_", "bpf_prog_"} {
		if strings.HasPrefix(frame, prefix) {
			return true
		}
	}
	return false
}

// symbols loads /proc/kallsyms once; without it, frames print as addresses.
func (r *renderer) symbols() *kallsyms.Table {
	if r.syms != nil {
		return r.syms
	}
	syms, err := kallsyms.Load()
	switch {
	case err != nil:
		fmt.Fprintf(r.warn, "skbstat: warning: %v: kernel stacks print as raw addresses\n", err)
		syms = &kallsyms.Table{}
	case syms.Restricted():
		fmt.Fprintln(r.warn, "skbstat: warning: /proc/kallsyms hides addresses (kernel.kptr_restrict): kernel stacks print as raw addresses")
	}
	r.syms = syms
	return syms
}

// dropReasons names drop reasons from kernel BTF, else from the tracepoint's
// format; failing both, reasons print as numbers.
func (r *renderer) dropReasons() map[uint32]string {
	if r.reasons != nil {
		return r.reasons
	}
	reasons, err := r.layout.DropReasons()
	if err != nil {
		if dir, terr := tracefs.Mount(); terr == nil {
			if f, ferr := tracefs.ReadFormat(dir, "skb", "kfree_skb"); ferr == nil {
				reasons, err = layout.DropReasonsFromFormat(f), nil
			}
		}
	}
	if err != nil {
		fmt.Fprintf(r.warn, "skbstat: warning: drop reason names: %v: reasons print as numbers\n", err)
		reasons = map[uint32]string{}
	}
	r.reasons = reasons
	return reasons
}
