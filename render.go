package main

import (
	"encoding/binary"
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

// renderer turns each interval's counts into output sections. It names the
// drop reasons as it is made, so that the layout's BTF is not needed after
// loading; what names the kernel's addresses is made in the background once
// the programs are loaded (kallsyms.Running).
type renderer struct {
	sections []progs.Section
	warn     io.Writer
	format   format
	// byLocation: DROP and CONSUME count by location and reason, with no
	// stacks (--locations).
	byLocation bool
	since      time.Time // when the interval being counted began

	syms kallsyms.Symbols
	// namesFailed: the kernel failed to name an interval's addresses, as
	// said once.
	namesFailed bool
	reasons     map[uint32]string // with DROP: the names of drop reasons
	// frames is what the entries of the last interval printed: a stack
	// that stops occurring is forgotten after one interval.
	frames map[frameKey][]string
}

// frameKey is what decides the frames an entry prints: its stack's
// addresses (as bytes), and its location.
type frameKey struct {
	pcs      string
	location uint64
}

func newFrameKey(st progs.StackCount) frameKey {
	b := make([]byte, 0, 8*len(st.PCs))
	for _, pc := range st.PCs {
		b = binary.NativeEndian.AppendUint64(b, pc)
	}
	return frameKey{string(b), st.Location}
}

// format is how intervals print.
type format int

const (
	textFormat   format = iota // the original's
	jsonFormat                 // --json: a line of JSON per interval
	foldedFormat               // --folded: a line per stack, for flame graphs
)

// newRenderer renders the sections cfg asks for in format f, with
// intervals counted from now.
func newRenderer(cfg progs.Config, warn io.Writer, f format) *renderer {
	r := &renderer{warn: warn, format: f, byLocation: cfg.Locations, since: time.Now()}
	if cfg.Drop {
		r.reasons = dropReasons(cfg.Layout, warn)
	}
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

// read reads what was counted since the last read, as output sections.
func (r *renderer) read(set *progs.Set) ([]output.Section, error) {
	c, err := set.Read()
	if err != nil {
		return nil, err
	}
	return r.sectionsOf(c), nil
}

// print prints the sections of the interval that ends now.
func (r *renderer) print(w io.Writer, sections []output.Section) error {
	now := time.Now()
	defer func() { r.since = now }()
	switch r.format {
	case jsonFormat:
		return output.WriteJSON(w, now, now.Sub(r.since), sections)
	case foldedFormat:
		return output.WriteFolded(w, sections)
	}
	return output.Write(w, now, sections)
}

// sectionsOf turns one interval's counts into output sections: every
// section's rows, its stacks with reason names and symbolized frames, and a
// note of every cause, zero included.
func (r *renderer) sectionsOf(c progs.Counts) []output.Section {
	bySection := map[progs.Section]*output.Section{}
	out := make([]output.Section, len(r.sections))
	for i, s := range r.sections {
		out[i] = output.Section{Name: s.String(), ByLocation: r.byLocation && (s == progs.Drop || s == progs.Consume)}
		for _, cause := range progs.Causes() {
			out[i].Notes = append(out[i].Notes, output.Note{Count: c.Noted(s, cause), Text: cause.String(), Cause: cause.Key()})
		}
		bySection[s] = &out[i]
	}
	for _, row := range c.Rows {
		sec := bySection[row.Section]
		sec.Rows = append(sec.Rows, output.Row{Name: row.Name, Rank: row.Rank, Count: row.Count})
	}
	r.learn(c.Stacks)
	frames := make([][]string, len(c.Stacks))
	if !r.byLocation {
		frames = r.entryFrames(c.Stacks)
	}
	for i, st := range c.Stacks {
		stack := output.Stack{Count: st.Count, LostID: int64(st.Lost)}
		if st.HasReason {
			stack.Reason = layout.ReasonName(r.reasons, st.Reason)
		}
		stack.Frames = frames[i]
		if st.Location != 0 {
			stack.Location = r.symbols().Symbolize(st.Location)
		}
		sec := bySection[st.Section]
		sec.Stacks = append(sec.Stacks, stack)
	}
	return out
}

// learn tells the symbols every address this interval names: the frames of
// the stacks not printed in the last interval, and every location. An
// interval that names nothing new does not wait for the symbols.
func (r *renderer) learn(stacks []progs.StackCount) {
	var addrs []uint64
	for _, st := range stacks {
		if st.Location != 0 {
			addrs = append(addrs, st.Location)
		}
		if _, printed := r.frames[newFrameKey(st)]; !printed && !r.byLocation {
			addrs = append(addrs, st.PCs...)
		}
	}
	if len(addrs) == 0 {
		return
	}
	if err := r.symbols().Learn(addrs); err != nil && !r.namesFailed {
		r.namesFailed = true
		fmt.Fprintf(r.warn, "skbstat: warning: %v: the frames it could not name print as raw addresses\n", err)
	}
}

// entryFrames returns the symbolized frames that each of an interval's
// entries prints under its count, those of the last interval's stacks from
// the cache, and keeps this interval's in it.
func (r *renderer) entryFrames(stacks []progs.StackCount) [][]string {
	printed := map[frameKey][]string{}
	frames := make([][]string, len(stacks))
	for i, st := range stacks {
		key := newFrameKey(st)
		f, ok := r.frames[key]
		if !ok {
			f = placeFrames(r.symbols(), st.PCs, st.Location)
		}
		frames[i], printed[key] = f, f
	}
	r.frames = printed
	return frames
}

// minStack is the fewest frames of a kernel stack that says where a packet
// was freed: the traced function and its caller. A lost stack has none; a
// 32-bit ARM kernel gives one, of no use (the BPF interpreter's, or an
// unsymbolized address in a JIT-compiled program).
const minStack = 2

// placeFrames returns the frames that name the place of an event: the kernel
// stack pcs (leaf first) from the traced function down; where the kernel gave
// no usable stack, the location alone; nothing where there is neither.
func placeFrames(syms kallsyms.Symbols, pcs []uint64, location uint64) []string {
	if len(pcs) < minStack {
		if location == 0 {
			return nil
		}
		return []string{syms.Symbolize(location)}
	}
	frames := make([]string, len(pcs))
	for i, pc := range pcs {
		frames[i] = syms.Symbolize(pc)
	}
	if i, ok := callerFrame(syms, pcs, location); ok {
		// Above the caller is the traced function, and above that only
		// the machinery that ran skbstat's program.
		return frames[max(i-1, 0):]
	}
	for len(frames) > 1 && isTracingFrame(frames[0]) {
		frames = frames[1:]
	}
	return frames
}

// callerFrame returns the index of the first frame of pcs in the function
// that location is in: the caller of the traced function, which passed its
// return address as the location. ok is false where the location is
// unknown, cannot be symbolized, or is in no frame.
func callerFrame(syms kallsyms.Symbols, pcs []uint64, location uint64) (int, bool) {
	if location == 0 {
		return 0, false
	}
	caller, ok := syms.Function(location)
	if !ok {
		return 0, false
	}
	for i, pc := range pcs {
		if fn, ok := syms.Function(pc); ok && fn == caller {
			return i, true
		}
	}
	return 0, false
}

// isTracingFrame reports whether a leaf frame belongs to the machinery that
// ran skbstat's program rather than to the code that handled the packet. It
// trims stacks only where the location cannot: consume_skb before Linux 6.3
// has none.
func isTracingFrame(frame string) bool {
	if strings.HasSuffix(frame, " [bpf]") {
		return true
	}
	for _, prefix := range []string{"bpf_trace_run", "__bpf_trace_", "perf_trace_", "perf_tp_event", "trace_call_bpf", "__traceiter_", "bpf_prog_",
		"___bpf_prog_run", "__bpf_prog_run"} { // the BPF interpreter, where there is no JIT (s390x)
		if strings.HasPrefix(frame, prefix) {
			return true
		}
	}
	return false
}

// symbols name the kernel's addresses (main has them made in the
// background once tracing starts, where stacks are asked for); without
// them, frames print as addresses.
func (r *renderer) symbols() kallsyms.Symbols {
	if r.syms != nil {
		return r.syms
	}
	syms, err := kallsyms.Running()
	if err != nil {
		fmt.Fprintf(r.warn, "skbstat: warning: %v: kernel stacks print as raw addresses\n", err)
		syms = &kallsyms.Table{}
	}
	if t, ok := syms.(*kallsyms.Table); ok && t.Restricted() {
		fmt.Fprintf(r.warn, "skbstat: warning: /proc/kallsyms hides the kernel's addresses (%s): kernel stacks print as raw addresses\n", kallsyms.HiddenBecause())
	}
	r.syms = syms
	return syms
}

// dropReasons names drop reasons from the kernel BTF of l, else from the
// tracepoint's format; failing both, reasons print as numbers (said on w).
func dropReasons(l *layout.Layout, w io.Writer) map[uint32]string {
	reasons, err := l.DropReasons()
	if err != nil {
		if dir, terr := tracefs.Mount(); terr == nil {
			if f, ferr := tracefs.ReadFormat(dir, "skb", "kfree_skb"); ferr == nil {
				reasons, err = layout.DropReasonsFromFormat(f), nil
			}
		}
	}
	if err != nil {
		fmt.Fprintf(w, "skbstat: warning: drop reason names: %v: reasons print as numbers\n", err)
		reasons = map[uint32]string{}
	}
	return reasons
}
