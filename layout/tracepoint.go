package layout

import (
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/skbstat/skbstat/internal/tracefs"
)

// Tracepoint tells a program where a tracepoint's arguments are in its
// context.
type Tracepoint struct {
	Group, Name string
	Raw         bool  // raw tracepoint: the context is the u64 argument array; else a perf tracepoint record
	Skb         Field // the struct sk_buff * argument (raw: slot 8*i, size 8; perf: the skbaddr field)
	Reason      Field // enum skb_drop_reason; Size 0 where this kernel has none
}

// rawSlotSize is the size of a raw tracepoint argument: the kernel widens
// every argument to u64, also on 32-bit kernels, so a program loads all 8
// bytes (the low 4 alone would be the wrong half on a big-endian machine).
const rawSlotSize = 8

// RawTracepoint returns where raw tracepoint (or tp_btf) group:name has its
// skb and drop reason arguments, from the BTF typedef btf_trace_<name> that
// the kernel declares for each tracepoint.
func (l *Layout) RawTracepoint(group, name string) (Tracepoint, error) {
	var typedef *btf.Typedef
	if err := l.typeByName("btf_trace_"+name, &typedef); err != nil {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
	}
	var proto *btf.FuncProto
	if ptr, ok := btf.As[*btf.Pointer](typedef.Type); ok {
		proto, _ = btf.As[*btf.FuncProto](ptr.Target)
	}
	if proto == nil || len(proto.Params) == 0 {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: btf_trace_%s is not a pointer to a function taking void *__data", group, name, name)
	}

	tp := Tracepoint{Group: group, Name: name, Raw: true}
	// The first parameter is the probe's __data; the context holds the rest.
	for i, param := range proto.Params[1:] {
		slot := Field{Offset: uint32(i * rawSlotSize), Size: rawSlotSize}
		switch {
		case tp.Skb.Size == 0 && isPointerTo(param.Type, "sk_buff"):
			tp.Skb = slot
		case tp.Reason.Size == 0 && isDropReason(param.Type):
			tp.Reason = slot
		}
	}
	if tp.Skb.Size == 0 {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s has no struct sk_buff * argument", group, name)
	}
	return tp, nil
}

func isDropReason(t btf.Type) bool {
	e, ok := btf.As[*btf.Enum](t)
	return ok && e.Name == "skb_drop_reason"
}

// PerfTracepoint returns where perf tracepoint group:name, whose format is f,
// has its skb and drop reason fields in its record.
func PerfTracepoint(f *tracefs.Format, group, name string) (Tracepoint, error) {
	if f.Name != name {
		return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s: format is for %q", group, name, f.Name)
	}
	skb, ok := f.Field("skbaddr")
	if !ok {
		return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s has no skbaddr field", group, name)
	}
	if skb.Size != 4 && skb.Size != 8 {
		return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s: skbaddr has size %d, not a pointer's", group, name, skb.Size)
	}
	tp := Tracepoint{Group: group, Name: name, Skb: Field{Offset: skb.Offset, Size: skb.Size}}
	if reason, ok := f.Field("reason"); ok {
		if reason.Size != 1 && reason.Size != 2 && reason.Size != 4 && reason.Size != 8 {
			return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s: reason has size %d", group, name, reason.Size)
		}
		tp.Reason = Field{Offset: reason.Offset, Size: reason.Size}
	}
	return tp, nil
}
