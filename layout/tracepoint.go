package layout

import (
	"fmt"

	"github.com/skbstat/skbstat/internal/rawbtf"
	"github.com/skbstat/skbstat/internal/tracefs"
)

// Tracepoint tells a program where a tracepoint's arguments are in its
// context.
type Tracepoint struct {
	Group, Name string
	Raw         bool  // raw tracepoint: the context is the u64 argument array; else a perf tracepoint record
	Skb         Field // the struct sk_buff * argument (raw: slot 8*i, size 8; perf: the skbaddr field)
	// Location is the void *location argument: the return address of the
	// function that freed the skb, in that function's caller. kfree_skb has
	// it on every kernel, consume_skb since Linux 6.3; Size 0 where there
	// is none.
	Location Field
	Reason   Field // enum skb_drop_reason; Size 0 where this kernel has none
}

// rawSlotSize is the size of a raw tracepoint argument: the kernel widens
// every argument to u64, also on 32-bit kernels, so a program loads all 8
// bytes (the low 4 alone would be the wrong half on a big-endian machine).
const rawSlotSize = 8

// RawTracepoint returns where raw tracepoint (or tp_btf) group:name has its
// skb, location and drop reason arguments, from the BTF typedef
// btf_trace_<name> that the kernel declares for each tracepoint.
//
// The typedef's parameters have no names in BTF, so the location is known by
// its place: the void * right after the skb, where TP_PROTO(struct sk_buff
// *skb, void *location, ...) puts it in every kernel's skb tracepoints.
func (l *Layout) RawTracepoint(group, name string) (Tracepoint, error) {
	typedef, err := l.typeByName(tracepointTypedefPrefix+name, rawbtf.KindTypedef)
	if err != nil {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
	}
	proto, err := l.pointee(typedef.Ref)
	if err != nil {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
	}
	if proto == nil || proto.Kind != rawbtf.KindFuncProto || len(proto.Params) == 0 {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %s%s is not a pointer to a function taking void *__data", group, name, tracepointTypedefPrefix, name)
	}

	tp := Tracepoint{Group: group, Name: name, Raw: true}
	// The first parameter is the probe's __data; the context holds the rest.
	params := proto.Params[1:]
	slot := func(i int) Field { return Field{Offset: uint32(i * rawSlotSize), Size: rawSlotSize} }
	for i, param := range params {
		pointee, err := l.pointee(param.Type)
		if err != nil {
			return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
		}
		switch {
		case tp.Skb.Size == 0 && pointee != nil && pointee.Kind == rawbtf.KindStruct && pointee.Name == "sk_buff":
			tp.Skb = slot(i)
			if i+1 < len(params) {
				next, err := l.pointee(params[i+1].Type)
				if err != nil {
					return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
				}
				if next != nil && next.Kind == rawbtf.KindVoid {
					tp.Location = slot(i + 1)
				}
			}
		case tp.Reason.Size == 0 && pointee == nil:
			arg, err := l.btf.Underlying(param.Type)
			if err != nil {
				return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s: %w", group, name, err)
			}
			if (arg.Kind == rawbtf.KindEnum || arg.Kind == rawbtf.KindEnum64) && arg.Name == "skb_drop_reason" {
				tp.Reason = slot(i)
			}
		}
	}
	if tp.Skb.Size == 0 {
		return Tracepoint{}, fmt.Errorf("raw tracepoint %s:%s has no struct sk_buff * argument", group, name)
	}
	return tp, nil
}

// TracepointTarget is the BTF ID that a BTF-typed tracepoint program
// (tp_btf) attaching to tracepoint name is loaded with: that of the typedef
// btf_trace_<name> in the running kernel's BTF.
func (l *Layout) TracepointTarget(name string) (uint32, error) {
	return l.target(tracepointTypedefPrefix+name, rawbtf.KindTypedef)
}

// PerfTracepoint returns where perf tracepoint group:name, whose format is f,
// has its skb, location and drop reason fields in its record.
func PerfTracepoint(f *tracefs.Format, group, name string) (Tracepoint, error) {
	if f.Name != name {
		return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s: format is for %q", group, name, f.Name)
	}
	skb, ok := f.Field("skbaddr")
	if !ok {
		return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s has no skbaddr field", group, name)
	}
	tp := Tracepoint{Group: group, Name: name}
	var err error
	if tp.Skb, err = pointerField(skb, group, name); err != nil {
		return Tracepoint{}, err
	}
	if location, ok := f.Field("location"); ok {
		if tp.Location, err = pointerField(location, group, name); err != nil {
			return Tracepoint{}, err
		}
	}
	if reason, ok := f.Field("reason"); ok {
		if reason.Size != 1 && reason.Size != 2 && reason.Size != 4 && reason.Size != 8 {
			return Tracepoint{}, fmt.Errorf("perf tracepoint %s:%s: reason has size %d", group, name, reason.Size)
		}
		tp.Reason = Field{Offset: reason.Offset, Size: reason.Size}
	}
	return tp, nil
}

// pointerField is where a perf record keeps pointer field f: 4 bytes on a
// 32-bit kernel, which a BPF load zero-extends, 8 on a 64-bit one.
func pointerField(f tracefs.Field, group, name string) (Field, error) {
	if f.Size != 4 && f.Size != 8 {
		return Field{}, fmt.Errorf("perf tracepoint %s:%s: %s has size %d, not a pointer's", group, name, f.Name, f.Size)
	}
	return Field{Offset: f.Offset, Size: f.Size}, nil
}
