package layout

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// A trimmed BTF file holds only what skbstat reads from a kernel's BTF, for
// routers, whose flash has no room for the 3-6 MB of a whole vmlinux BTF:
// unsigned long; the struct members that Kernel, SockCommon and KprobeArg
// read, at their kernel offsets, in structs of the kernel's sizes; enum
// skb_drop_reason; the btf_trace_<name> typedef of every tracepoint that
// passes a struct sk_buff * (RawTracepoint's); the prototypes of the
// functions asked for. Every other type that these reference is a stub: a
// struct or union of the same name and size with no members, an enum
// without values. FromFile reads it as it reads the whole.

// trimmedMembers names, per struct, the members that Kernel, SockCommon
// and KprobeArg read (a dotted name is a member of a named struct member).
// TestTrimmedKernel fails where they disagree.
var trimmedMembers = map[string][]string{
	"sk_buff": {"head", "data", "len", "data_len", "protocol", "network_header", "transport_header",
		"mac_header", "dev", "sk"},
	"net_device": {"ifindex", "nd_net.net"},
	"net":        {"ns.inum"},
	"sock_common": {"skc_family", "skc_num", "skc_dport", "skc_daddr", "skc_rcv_saddr", "skc_net.net",
		"skc_v6_daddr", "skc_v6_rcv_saddr"},
	"pt_regs": ptRegsMembers(),
}

// ptRegsMembers is every struct pt_regs member that KprobeArg reads on any
// architecture: the file may be written on a build host of another one.
func ptRegsMembers() []string {
	seen := map[string]bool{}
	var names []string
	for _, regs := range kprobeArgRegs {
		for _, r := range regs.regs {
			if !seen[r.name] {
				seen[r.name] = true
				names = append(names, r.name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// tracepointTypedefPrefix starts the name of the typedef that the kernel
// declares for each tracepoint's prototype.
const tracepointTypedefPrefix = "btf_trace_"

// WriteTrimmedBTF writes to w, as raw BTF in the byte order of l's BTF, the
// part of it that skbstat reads: enough for FromFile to return a Layout equal
// to l in every lookup, and for FuncSkbArg and FuncSockArg on funcs (those
// that l's BTF lacks are left out).
func WriteTrimmedBTF(w io.Writer, l *Layout, funcs []string) error {
	if l.btf == nil {
		return fmt.Errorf("trimmed BTF: %w", errNoBTF)
	}
	t := &trimmer{l: l, wanted: map[rawbtf.ID][]string{}, copies: map[rawbtf.ID]btf.Type{}}
	roots, err := t.roots(funcs)
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	b, err := btf.NewBuilder(nil, &btf.BuilderOptions{Deduplicate: true})
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	for _, id := range roots {
		typ, err := t.copy(id)
		if err != nil {
			return fmt.Errorf("trimmed BTF: %w", err)
		}
		if _, err := b.Add(typ); err != nil {
			return fmt.Errorf("trimmed BTF: add %v: %w", typ, err)
		}
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: l.btf.ByteOrder()})
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	return nil
}

// trimmer copies the types skbstat reads out of l's BTF, each once, as the
// types cilium/ebpf's encoder takes.
type trimmer struct {
	l *Layout
	// wanted holds the member names to keep of each struct that is
	// trimmed rather than stubbed.
	wanted map[rawbtf.ID][]string
	// copies maps each type to its copy: whole, trimmed or a stub.
	copies map[rawbtf.ID]btf.Type
	// whole are the types copied with all they hold.
	whole []rawbtf.ID
}

// roots finds the types to write, and which members of which structs they
// need; the types they reference follow.
func (t *trimmer) roots(funcs []string) ([]rawbtf.ID, error) {
	spec := t.l.btf
	var roots []rawbtf.ID
	for _, name := range unsignedLongNames {
		roots = append(roots, spec.Named(name, rawbtf.KindInt)...)
	}
	for _, kind := range []rawbtf.Kind{rawbtf.KindEnum, rawbtf.KindEnum64} {
		reasons := spec.Named("skb_drop_reason", kind)
		t.whole = append(t.whole, reasons...) // DropReasons reads every value
		roots = append(roots, reasons...)
	}
	names := make([]string, 0, len(trimmedMembers))
	for name := range trimmedMembers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s, err := spec.One(name, rawbtf.KindStruct)
		if errors.Is(err, rawbtf.ErrNotFound) {
			continue // the lookups fail on the trimmed file as on the whole
		}
		if err != nil {
			return nil, fmt.Errorf("struct %s: %w", name, err)
		}
		for _, m := range trimmedMembers[name] {
			if err := t.want(s, m); err != nil {
				return nil, err
			}
		}
		roots = append(roots, s.ID)
	}
	tps, err := t.skbTracepoints()
	if err != nil {
		return nil, err
	}
	roots = append(roots, tps...)
	for _, fn := range funcs {
		roots = append(roots, spec.Named(fn, rawbtf.KindFunc)...)
	}
	return roots, nil
}

// want marks member name of s (dotted: through named struct members) to be
// kept. A member s lacks is left out: its lookup fails on the trimmed file as
// it does on the whole.
func (t *trimmer) want(s *rawbtf.Type, name string) error {
	if _, _, ok, err := t.l.findMember(s, name); ok || err != nil {
		t.keep(s, name)
		return err
	}
	outer, inner, dotted := strings.Cut(name, ".")
	if !dotted {
		return nil
	}
	m, _, ok, err := t.l.findMember(s, outer)
	if !ok || err != nil {
		return err
	}
	in, err := t.l.btf.Underlying(m.Type)
	if err != nil || in.Kind != rawbtf.KindStruct {
		return err
	}
	t.keep(s, outer)
	return t.want(in, inner)
}

// keep adds member name to those kept of s, once.
func (t *trimmer) keep(s *rawbtf.Type, name string) {
	if !slices.Contains(t.wanted[s.ID], name) {
		t.wanted[s.ID] = append(t.wanted[s.ID], name)
	}
}

// skbTracepoints returns the btf_trace_<name> typedef of every tracepoint
// whose prototype takes a struct sk_buff *: those RawTracepoint serves.
func (t *trimmer) skbTracepoints() ([]rawbtf.ID, error) {
	var tps []rawbtf.ID
	for _, id := range t.l.btf.OfKind(rawbtf.KindTypedef) {
		td, err := t.l.btf.Type(id)
		if err != nil {
			return nil, fmt.Errorf("tracepoints: %w", err)
		}
		if !strings.HasPrefix(td.Name, tracepointTypedefPrefix) {
			continue
		}
		proto, err := t.l.pointee(td.Ref)
		if err != nil {
			return nil, fmt.Errorf("tracepoints: %w", err)
		}
		if proto == nil || proto.Kind != rawbtf.KindFuncProto {
			continue
		}
		if i, err := t.l.paramPointingTo(proto, "sk_buff"); err != nil || i >= 0 {
			if err != nil {
				return nil, fmt.Errorf("tracepoints: %w", err)
			}
			tps = append(tps, id)
		}
	}
	return tps, nil
}

// copy returns the copy of type id for the trimmed file.
func (t *trimmer) copy(id rawbtf.ID) (btf.Type, error) {
	if c, ok := t.copies[id]; ok {
		return c, nil
	}
	v, err := t.l.btf.Type(id)
	if err != nil {
		return nil, err
	}
	var c btf.Type
	ref := func(id rawbtf.ID) btf.Type {
		if err == nil {
			var r btf.Type
			r, err = t.copy(id)
			return r
		}
		return nil
	}
	switch v.Kind {
	case rawbtf.KindStruct:
		c, err = t.trimStruct(v)
	case rawbtf.KindUnion:
		// No union is read: skbstat's members are found through anonymous
		// unions, and trimmed structs hold them directly.
		c = &btf.Union{Name: v.Name, Size: v.Size}
	case rawbtf.KindEnum, rawbtf.KindEnum64:
		e := &btf.Enum{Name: v.Name, Size: v.Size, Signed: v.KindFlag}
		if slices.Contains(t.whole, id) {
			for _, value := range v.Values {
				e.Values = append(e.Values, btf.EnumValue{Name: value.Name, Value: value.Value})
			}
		}
		c = e
	case rawbtf.KindPointer:
		p := &btf.Pointer{}
		t.copies[id] = p // before the target: every cycle of types passes a pointer
		p.Target = ref(v.Ref)
		return p, err
	case rawbtf.KindTypedef:
		c = &btf.Typedef{Name: v.Name, Type: ref(v.Ref)}
	case rawbtf.KindConst:
		c = &btf.Const{Type: ref(v.Ref)}
	case rawbtf.KindVolatile:
		c = &btf.Volatile{Type: ref(v.Ref)}
	case rawbtf.KindRestrict:
		c = &btf.Restrict{Type: ref(v.Ref)}
	case rawbtf.KindTypeTag:
		c = ref(v.Ref) // tags are for the verifier, which never sees this file
	case rawbtf.KindArray:
		c = &btf.Array{Index: ref(v.Index), Type: ref(v.Ref), Nelems: v.Nelems}
	case rawbtf.KindFuncProto:
		proto := &btf.FuncProto{Return: ref(v.Ref)}
		for _, p := range v.Params {
			proto.Params = append(proto.Params, btf.FuncParam{Name: p.Name, Type: ref(p.Type)})
		}
		c = proto
	case rawbtf.KindFunc:
		c = &btf.Func{Name: v.Name, Type: ref(v.Ref), Linkage: btf.FuncLinkage(v.Linkage)}
	case rawbtf.KindInt:
		c = &btf.Int{Name: v.Name, Size: v.Size, Encoding: btf.IntEncoding(v.Encoding)}
	case rawbtf.KindFloat:
		c = &btf.Float{Name: v.Name, Size: v.Size}
	case rawbtf.KindForward:
		fwd := &btf.Fwd{Name: v.Name, Kind: btf.FwdStruct}
		if v.KindFlag {
			fwd.Kind = btf.FwdUnion
		}
		c = fwd
	default:
		// Void; variables, sections and declaration tags reference types
		// but are referenced by none that skbstat reads.
		c = &btf.Void{}
	}
	if err != nil {
		return nil, err
	}
	t.copies[id] = c
	return c, nil
}

// trimStruct copies s with only its wanted members, each at its offset from
// the start of s: those found in anonymous structs and unions are lifted
// out of them. The size is kept, so a struct stays the kernel's.
func (t *trimmer) trimStruct(s *rawbtf.Type) (*btf.Struct, error) {
	c := &btf.Struct{Name: s.Name, Size: s.Size}
	for _, name := range t.wanted[s.ID] {
		m, bits, _, err := t.l.findMember(s, name)
		if err != nil {
			return nil, err
		}
		typ, err := t.copy(m.Type)
		if err != nil {
			return nil, err
		}
		c.Members = append(c.Members, btf.Member{Name: m.Name, Type: typ, Offset: btf.Bits(bits), BitfieldSize: btf.Bits(m.BitfieldSize)})
	}
	sort.SliceStable(c.Members, func(i, j int) bool { return c.Members[i].Offset < c.Members[j].Offset })
	return c, nil
}
