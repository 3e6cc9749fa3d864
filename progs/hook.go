package progs

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/skbstat/skbstat/internal/tracefs"
	"github.com/skbstat/skbstat/layout"
)

// A hook is one way of running a program where the kernel handles an skb (or
// a socket): it knows the program type, where the context keeps the probed
// pointer (and the drop reason and location), and how to attach.
type hook interface {
	// mechanism names the hook kind for -v ("raw tracepoint").
	mechanism() string
	// nests says whether a program at this hook can start on a CPU while
	// another program runs there (in an interrupt's softirq): kprobes,
	// kprobe.multi and perf tracepoints hold the kernel's bpf_prog_active
	// while they run and skip if it is held already; raw tracepoints
	// (tp_btf too) and fentry check only that the same program is not
	// running (since Linux 6.1 and 5.12).
	nests() bool
	// configure sets the program type and attach type.
	configure(spec *ebpf.ProgramSpec)
	// target is the BTF ID of the kernel type that a tracing program
	// (tp_btf, fentry) attaches to; 0 for hooks that attach by name.
	target() uint32
	// loadArg leaves the struct sk_buff * (or struct sock *) in dst, given
	// the context in R6.
	loadArg(dst asm.Register) asm.Instructions
	// loadReason leaves the drop reason in dst; ok is false where there is none.
	loadReason(dst asm.Register) (insns asm.Instructions, ok bool)
	// loadLocation leaves in dst, zero-extended to 64 bits, the return
	// address of the function that freed the skb; ok is false where the
	// hook does not know it.
	loadLocation(dst asm.Register) (insns asm.Instructions, ok bool)
	// storeRowKey writes the index of the row counter to slotKey.
	storeRowKey(row uint32) asm.Instructions
	// reads says how the program may read what the probed pointer leads
	// to.
	reads() reads
	attach(prog *ebpf.Program) (link.Link, error)
}

// byName is the target of hooks that attach to a kernel symbol or
// tracepoint by its name.
type byName struct{}

func (byName) target() uint32 { return 0 }

// copiedArg is the reads of hooks whose probed pointer is a bare address:
// the program copies what it reads with bpf_probe_read_kernel.
type copiedArg struct{}

func (copiedArg) reads() reads { return reads{} }

// rowImmediate is the storeRowKey of hooks that serve one row: the index is
// an immediate.
type rowImmediate struct{}

func (rowImmediate) storeRowKey(row uint32) asm.Instructions {
	return asm.Instructions{asm.StoreImm(asm.R10, slotKey, int64(row), asm.Word)}
}

// noTracepointArgs is the loadReason and loadLocation of hooks at kernel
// functions: only the skb tracepoints pass a drop reason and a location.
type noTracepointArgs struct{}

func (noTracepointArgs) loadReason(asm.Register) (asm.Instructions, bool)   { return nil, false }
func (noTracepointArgs) loadLocation(asm.Register) (asm.Instructions, bool) { return nil, false }

// loadContext loads a field of the program context; a load of fewer than 8
// bytes zero-extends.
func loadContext(dst asm.Register, f layout.Field) asm.Instructions {
	return asm.Instructions{asm.LoadMem(dst, asm.R6, int16(f.Offset), sizeOf(f.Size))}
}

// loadOptional loads a field of the program context that a tracepoint may
// lack (Size 0).
func loadOptional(dst asm.Register, f layout.Field) (asm.Instructions, bool) {
	if f.Size == 0 {
		return nil, false
	}
	return loadContext(dst, f), true
}

// tracepointHook runs a program at a kernel tracepoint, as a BTF-typed
// tracepoint (tp_btf: the raw tracepoint's arguments, typed by the running
// kernel's BTF), as a raw tracepoint (no tracefs needed, arguments straight
// from the caller) or as a perf tracepoint (the record laid out by the
// tracefs format file).
type tracepointHook struct {
	rowImmediate
	tp layout.Tracepoint
	// typed: attached as tp_btf, whose skb argument is a PTR_TO_BTF_ID
	// that the program loads fields from directly.
	typed bool
	// packet: typed, and the packet read with direct loads too.
	packet bool
	// btfID is that of the tracepoint's btf_trace_<name> typedef in the
	// running kernel's BTF, where typed.
	btfID uint32
}

// tpBTF is the mechanism of BTF-typed tracepoints, as -v names it.
const tpBTF = "tp_btf"

func (h tracepointHook) mechanism() string {
	switch {
	case h.typed:
		return tpBTF
	case h.tp.Raw:
		return "raw tracepoint"
	}
	return "perf tracepoint"
}

func (h tracepointHook) nests() bool { return h.tp.Raw }

func (h tracepointHook) configure(spec *ebpf.ProgramSpec) {
	switch {
	case h.typed:
		spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachTraceRawTp
	case h.tp.Raw:
		spec.Type = ebpf.RawTracepoint
	default:
		spec.Type = ebpf.TracePoint
	}
}

func (h tracepointHook) target() uint32 { return h.btfID }

func (h tracepointHook) reads() reads { return reads{typed: h.typed, packet: h.packet} }

func (h tracepointHook) loadArg(dst asm.Register) asm.Instructions {
	return loadContext(dst, h.tp.Skb)
}

func (h tracepointHook) loadReason(dst asm.Register) (asm.Instructions, bool) {
	return loadOptional(dst, h.tp.Reason)
}

// loadLocation loads the location whole: a raw tracepoint's 8-byte slot (a
// 32-bit big-endian kernel keeps a pointer in its second half), a perf
// record's pointer-sized field.
func (h tracepointHook) loadLocation(dst asm.Register) (asm.Instructions, bool) {
	return loadOptional(dst, h.tp.Location)
}

func (h tracepointHook) attach(prog *ebpf.Program) (link.Link, error) {
	if h.typed {
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	}
	if h.tp.Raw {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.tp.Name, Program: prog})
	}
	return link.Tracepoint(h.tp.Group, h.tp.Name, prog, nil)
}

// tracepointHooks lists the ways to reach a tracepoint on this kernel, best
// first: tp_btf where the layout is the running kernel's BTF (which the
// verifier checks its loads against), reading the packet directly where the
// kernel lets a program load through skb->head (6.18 here: a char * that a
// typed load gives is read-only memory; older kernels give a bare number),
// else with bpf_probe_read_kernel; then the raw tracepoint, whose arguments BTF
// gives, then the perf tracepoint laid out by its tracefs format. Each is
// resolved only when the one before it failed, so tracefs is mounted only
// where it is needed.
func tracepointHooks(l *layout.Layout, group, name string) []func() (hook, error) {
	typed := func(packet bool) func() (hook, error) {
		return func() (hook, error) {
			target, err := l.TracepointTarget(name)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tpBTF, err)
			}
			tp, err := l.RawTracepoint(group, name)
			return tracepointHook{tp: tp, typed: true, packet: packet, btfID: target}, err
		}
	}
	return []func() (hook, error){
		typed(true),
		typed(false),
		func() (hook, error) {
			tp, err := l.RawTracepoint(group, name)
			return tracepointHook{tp: tp}, err
		},
		func() (hook, error) {
			tp, err := perfTracepoint(group, name)
			return tracepointHook{tp: tp}, err
		},
	}
}

func perfTracepoint(group, name string) (layout.Tracepoint, error) {
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

// fentryHook runs a program at a kernel function's entry through a BPF
// trampoline: the cheapest hook, where the kernel allows it. Its context is
// the function's arguments, one u64 each.
type fentryHook struct {
	rowImmediate
	noTracepointArgs
	copiedArg
	fn    string
	arg   int
	btfID uint32 // fn's, in the running kernel's BTF
}

func (h fentryHook) mechanism() string { return string(Fentry) }

func (fentryHook) nests() bool { return true }

func (h fentryHook) configure(spec *ebpf.ProgramSpec) {
	spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachTraceFEntry
}

func (h fentryHook) target() uint32 { return h.btfID }

func (h fentryHook) loadArg(dst asm.Register) asm.Instructions {
	return loadContext(dst, layout.Field{Offset: uint32(8 * h.arg), Size: 8})
}

func (h fentryHook) attach(prog *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFEntry})
}

// kprobeHook runs a program at a kernel symbol through a kprobe. Its context
// is the registers (struct pt_regs) at the function's entry.
type kprobeHook struct {
	rowImmediate
	noTracepointArgs
	copiedArg
	byName
	symbol string
	arg    layout.Field // in struct pt_regs
}

func (h kprobeHook) mechanism() string { return string(Kprobe) }

func (kprobeHook) nests() bool { return false }

func (h kprobeHook) configure(spec *ebpf.ProgramSpec) { spec.Type = ebpf.Kprobe }

func (h kprobeHook) loadArg(dst asm.Register) asm.Instructions { return loadContext(dst, h.arg) }

func (h kprobeHook) attach(prog *ebpf.Program) (link.Link, error) {
	return link.Kprobe(h.symbol, prog, nil)
}

// kprobeMultiHook runs one program at many kernel symbols through one
// kprobe.multi link; each symbol's cookie is its row's counter index.
type kprobeMultiHook struct {
	noTracepointArgs
	copiedArg
	byName
	symbols []string
	rows    []uint64
	arg     layout.Field // in struct pt_regs
}

func (h kprobeMultiHook) mechanism() string { return string(KprobeMulti) }

func (kprobeMultiHook) nests() bool { return false }

func (h kprobeMultiHook) configure(spec *ebpf.ProgramSpec) {
	spec.Type, spec.AttachType = ebpf.Kprobe, ebpf.AttachTraceKprobeMulti
}

func (h kprobeMultiHook) loadArg(dst asm.Register) asm.Instructions { return loadContext(dst, h.arg) }

func (h kprobeMultiHook) storeRowKey(uint32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetAttachCookie.Call(),
		asm.StoreMem(asm.R10, slotKey, asm.R0, asm.Word),
	}
}

func (h kprobeMultiHook) attach(prog *ebpf.Program) (link.Link, error) {
	return link.KprobeMulti(prog, link.KprobeMultiOptions{Symbols: h.symbols, Cookies: h.rows})
}
