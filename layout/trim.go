package layout

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// A trimmed BTF file holds only what skbstat reads from a kernel's BTF, for
// routers, whose flash has no room for the 3-6 MB of a whole vmlinux BTF:
// unsigned long; the struct members that FromBTF, SockCommon and KprobeArg
// read, at their kernel offsets, in structs of the kernel's sizes; enum
// skb_drop_reason; the btf_trace_<name> typedef of every tracepoint that
// passes a struct sk_buff * (RawTracepoint's); the prototypes of the
// functions asked for. Every other type that these reference is a stub: a
// struct or union of the same name and size with no members, an enum
// without values. FromFile reads it as it reads the whole.

// trimmedMembers names, per struct, the members that FromBTF, SockCommon
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
	if l.spec == nil {
		return fmt.Errorf("trimmed BTF: %w", errNoBTF)
	}
	t := &trimmer{spec: l.spec, wanted: map[*btf.Struct][]string{}, stubs: map[btf.Type]btf.Type{}}
	roots, err := t.roots(funcs)
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	b, err := btf.NewBuilder(nil, &btf.BuilderOptions{Deduplicate: true})
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	for _, typ := range roots {
		if _, err := b.Add(t.stub(typ)); err != nil {
			return fmt.Errorf("trimmed BTF: add %v: %w", typ, err)
		}
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: l.btfOrder()})
	if err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("trimmed BTF: %w", err)
	}
	return nil
}

// trimmer copies the types skbstat reads out of spec, each once.
type trimmer struct {
	spec *btf.Spec
	// wanted holds the member names to keep of each struct that is
	// trimmed rather than stubbed.
	wanted map[*btf.Struct][]string
	// stubs maps each type of spec to its copy: itself where it is kept
	// whole, else its trimmed or stubbed copy.
	stubs map[btf.Type]btf.Type
}

// roots finds the types to write, and which members of which structs they
// need; the types they reference follow.
func (t *trimmer) roots(funcs []string) ([]btf.Type, error) {
	var roots []btf.Type
	for _, name := range unsignedLongNames {
		var ulong *btf.Int
		if err := t.spec.TypeByName(name, &ulong); err == nil {
			roots = append(roots, ulong)
		}
	}
	var reasons *btf.Enum
	if err := t.spec.TypeByName("skb_drop_reason", &reasons); err == nil {
		t.stubs[reasons] = reasons // DropReasons reads every value
		roots = append(roots, reasons)
	}
	names := make([]string, 0, len(trimmedMembers))
	for name := range trimmedMembers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		var s *btf.Struct
		err := t.spec.TypeByName(name, &s)
		if errors.Is(err, btf.ErrNotFound) {
			continue // the lookups fail on the trimmed file as on the whole
		}
		if err != nil {
			return nil, fmt.Errorf("struct %s: %w", name, err)
		}
		for _, m := range trimmedMembers[name] {
			t.want(s, m)
		}
		roots = append(roots, s)
	}
	tps, err := t.skbTracepoints()
	if err != nil {
		return nil, err
	}
	roots = append(roots, tps...)
	for _, fn := range funcs {
		types, err := t.spec.AnyTypesByName(fn)
		if errors.Is(err, btf.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", fn, err)
		}
		for _, typ := range types {
			if f, ok := typ.(*btf.Func); ok {
				roots = append(roots, f)
			}
		}
	}
	return roots, nil
}

// want marks member name of s (dotted: through named struct members) to be
// kept. A member s lacks is left out: its lookup fails on the trimmed file as
// it does on the whole.
func (t *trimmer) want(s *btf.Struct, name string) {
	if _, _, ok := findMember(s.Members, name); ok {
		t.keep(s, name)
		return
	}
	outer, inner, dotted := strings.Cut(name, ".")
	if !dotted {
		return
	}
	m, _, ok := findMember(s.Members, outer)
	if !ok {
		return
	}
	if in, ok := btf.As[*btf.Struct](m.Type); ok {
		t.keep(s, outer)
		t.want(in, inner)
	}
}

// keep adds member name to those kept of s, once.
func (t *trimmer) keep(s *btf.Struct, name string) {
	if !slices.Contains(t.wanted[s], name) {
		t.wanted[s] = append(t.wanted[s], name)
	}
}

// skbTracepoints returns the btf_trace_<name> typedef of every tracepoint
// whose prototype takes a struct sk_buff *: those RawTracepoint serves.
func (t *trimmer) skbTracepoints() ([]btf.Type, error) {
	var tps []btf.Type
	for typ, err := range t.spec.All() {
		if err != nil {
			return nil, fmt.Errorf("tracepoints: %w", err)
		}
		td, ok := typ.(*btf.Typedef)
		if !ok || !strings.HasPrefix(td.Name, tracepointTypedefPrefix) {
			continue
		}
		ptr, ok := btf.As[*btf.Pointer](td.Type)
		if !ok {
			continue
		}
		if proto, ok := btf.As[*btf.FuncProto](ptr.Target); ok && takesSkb(proto) {
			tps = append(tps, td)
		}
	}
	return tps, nil
}

func takesSkb(proto *btf.FuncProto) bool {
	for _, p := range proto.Params {
		if isPointerTo(p.Type, "sk_buff") {
			return true
		}
	}
	return false
}

// stub returns typ's copy for the trimmed file.
func (t *trimmer) stub(typ btf.Type) btf.Type {
	if c, ok := t.stubs[typ]; ok {
		return c
	}
	var c btf.Type
	switch v := typ.(type) {
	case *btf.Struct:
		c = t.trimStruct(v)
	case *btf.Union:
		// No union is read: skbstat's members are found through anonymous
		// unions, and trimmed structs hold them directly.
		c = &btf.Union{Name: v.Name, Size: v.Size}
	case *btf.Enum:
		c = &btf.Enum{Name: v.Name, Size: v.Size, Signed: v.Signed}
	case *btf.Pointer:
		p := &btf.Pointer{}
		t.stubs[typ] = p // before the target: every cycle of types passes a pointer
		p.Target = t.stub(v.Target)
		return p
	case *btf.Typedef:
		c = &btf.Typedef{Name: v.Name, Type: t.stub(v.Type)}
	case *btf.Const:
		c = &btf.Const{Type: t.stub(v.Type)}
	case *btf.Volatile:
		c = &btf.Volatile{Type: t.stub(v.Type)}
	case *btf.Restrict:
		c = &btf.Restrict{Type: t.stub(v.Type)}
	case *btf.TypeTag:
		c = t.stub(v.Type) // tags are for the verifier, which never sees this file
	case *btf.Array:
		c = &btf.Array{Index: t.stub(v.Index), Type: t.stub(v.Type), Nelems: v.Nelems}
	case *btf.FuncProto:
		proto := &btf.FuncProto{Return: t.stub(v.Return)}
		for _, p := range v.Params {
			proto.Params = append(proto.Params, btf.FuncParam{Name: p.Name, Type: t.stub(p.Type)})
		}
		c = proto
	case *btf.Func:
		c = &btf.Func{Name: v.Name, Type: t.stub(v.Type), Linkage: v.Linkage}
	case *btf.Int, *btf.Float, *btf.Void, *btf.Fwd:
		c = typ // they reference nothing
	default:
		// Variables, sections and declaration tags reference types but
		// are referenced by none that skbstat reads.
		c = &btf.Void{}
	}
	t.stubs[typ] = c
	return c
}

// trimStruct copies s with only its wanted members, each at its offset from
// the start of s: those found in anonymous structs and unions are lifted
// out of them. The size is kept, so a struct stays the kernel's.
func (t *trimmer) trimStruct(s *btf.Struct) *btf.Struct {
	c := &btf.Struct{Name: s.Name, Size: s.Size}
	for _, name := range t.wanted[s] {
		m, bits, _ := findMember(s.Members, name)
		c.Members = append(c.Members, btf.Member{Name: m.Name, Type: t.stub(m.Type), Offset: bits, BitfieldSize: m.BitfieldSize})
	}
	sort.SliceStable(c.Members, func(i, j int) bool { return c.Members[i].Offset < c.Members[j].Offset })
	return c
}

// btfOrder is the byte order of l's BTF: the file's, else the running
// kernel's, which is the machine's.
func (l *Layout) btfOrder() binary.ByteOrder {
	if l.order != nil {
		return l.order
	}
	return binary.NativeEndian
}

// btfMagic opens raw BTF, in the byte order of the kernel that wrote it.
const btfMagic = 0xeb9f

// btfFileOrder reads the byte order of BTF file path from its ELF header or
// its raw BTF magic. btf.LoadSpec reads either order but does not say which.
func btfFileOrder(path string) (binary.ByteOrder, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var head [elf.EI_DATA + 1]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return nil, fmt.Errorf("read the header: %w", err)
	}
	switch {
	case string(head[:len(elf.ELFMAG)]) == elf.ELFMAG && elf.Data(head[elf.EI_DATA]) == elf.ELFDATA2LSB:
		return binary.LittleEndian, nil
	case string(head[:len(elf.ELFMAG)]) == elf.ELFMAG && elf.Data(head[elf.EI_DATA]) == elf.ELFDATA2MSB:
		return binary.BigEndian, nil
	case binary.LittleEndian.Uint16(head[:]) == btfMagic:
		return binary.LittleEndian, nil
	case binary.BigEndian.Uint16(head[:]) == btfMagic:
		return binary.BigEndian, nil
	}
	return nil, errors.New("neither ELF nor raw BTF")
}
