package progs

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/skbstat/skbstat/internal/tracefs"
	"github.com/skbstat/skbstat/layout"
)

// A hook is one way of running a program where the kernel handles an skb: it
// knows the program type, where the context keeps the skb (and the drop
// reason), and how to attach. Tracepoints have two hooks; kernel functions
// will add theirs.
type hook interface {
	// mechanism names the hook kind for -v ("raw tracepoint").
	mechanism() string
	progType() ebpf.ProgramType
	// loadSkb leaves the struct sk_buff pointer in dst, given the context in R6.
	loadSkb(dst asm.Register) asm.Instructions
	// loadReason leaves the drop reason in dst; ok is false where there is none.
	loadReason(dst asm.Register) (insns asm.Instructions, ok bool)
	attach(prog *ebpf.Program) (link.Link, error)
}

// tracepointHook runs a program at a kernel tracepoint, as a raw tracepoint
// (no tracefs needed, arguments straight from the caller) or as a perf
// tracepoint (the record laid out by the tracefs format file).
type tracepointHook struct {
	tp layout.Tracepoint
}

func (h tracepointHook) mechanism() string {
	if h.tp.Raw {
		return "raw tracepoint"
	}
	return "perf tracepoint"
}

func (h tracepointHook) progType() ebpf.ProgramType {
	if h.tp.Raw {
		return ebpf.RawTracepoint
	}
	return ebpf.TracePoint
}

func (h tracepointHook) loadSkb(dst asm.Register) asm.Instructions {
	return asm.Instructions{loadField(dst, asm.R6, int16(h.tp.Skb.Offset), h.tp.Skb)}
}

func (h tracepointHook) loadReason(dst asm.Register) (asm.Instructions, bool) {
	if h.tp.Reason.Size == 0 {
		return nil, false
	}
	return asm.Instructions{loadField(dst, asm.R6, int16(h.tp.Reason.Offset), h.tp.Reason)}, true
}

func (h tracepointHook) attach(prog *ebpf.Program) (link.Link, error) {
	if h.tp.Raw {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.tp.Name, Program: prog})
	}
	return link.Tracepoint(h.tp.Group, h.tp.Name, prog, nil)
}

// tracepointHooks lists the ways to reach a tracepoint on this kernel, best
// first: the raw tracepoint, whose arguments BTF gives, then the perf
// tracepoint laid out by its tracefs format. Each is resolved only when the
// one before it failed, so tracefs is mounted only where it is needed.
func tracepointHooks(l *layout.Layout, group, name string) []func() (hook, error) {
	return []func() (hook, error){
		func() (hook, error) {
			tp, err := l.RawTracepoint(group, name)
			return tracepointHook{tp}, err
		},
		func() (hook, error) {
			tp, err := perfTracepoint(l, group, name)
			return tracepointHook{tp}, err
		},
	}
}

func perfTracepoint(l *layout.Layout, group, name string) (layout.Tracepoint, error) {
	dir, err := tracefs.Mount()
	if err != nil {
		return layout.Tracepoint{}, err
	}
	f, err := tracefs.ReadFormat(dir, group, name)
	if err != nil {
		return layout.Tracepoint{}, err
	}
	return layout.PerfTracepoint(f, group, name)
}
