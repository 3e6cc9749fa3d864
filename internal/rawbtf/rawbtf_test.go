package rawbtf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kindOf is the kind of a cilium/ebpf type.
func kindOf(t btf.Type) Kind {
	switch t := t.(type) {
	case *btf.Void:
		return KindVoid
	case *btf.Int:
		return KindInt
	case *btf.Pointer:
		return KindPointer
	case *btf.Array:
		return KindArray
	case *btf.Struct:
		return KindStruct
	case *btf.Union:
		return KindUnion
	case *btf.Enum:
		if t.Size == 8 {
			return KindEnum64
		}
		return KindEnum
	case *btf.Fwd:
		return KindForward
	case *btf.Typedef:
		return KindTypedef
	case *btf.Volatile:
		return KindVolatile
	case *btf.Const:
		return KindConst
	case *btf.Restrict:
		return KindRestrict
	case *btf.Func:
		return KindFunc
	case *btf.FuncProto:
		return KindFuncProto
	case *btf.Var:
		return KindVar
	case *btf.Datasec:
		return KindDatasec
	case *btf.Float:
		return KindFloat
	case *btf.TypeTag:
		return KindTypeTag
	}
	if fmt.Sprintf("%T", t) == "*btf.declTag" { // cilium/ebpf does not export it
		return KindDeclTag
	}
	return kindCount
}

// same fails t where ours, type id as this package reads it, differs from
// theirs, as cilium/ebpf decodes it, in anything the layout reads.
func same(t *testing.T, spec *btf.Spec, ours *Type, theirs btf.Type) {
	t.Helper()
	idOf := func(typ btf.Type) ID {
		id, err := spec.TypeID(typ)
		if err != nil {
			t.Fatalf("cilium: type ID of %v: %v", typ, err)
		}
		return ID(id)
	}
	name := theirs.TypeName()
	switch v := theirs.(type) {
	case *btf.TypeTag:
		name = v.Value // a tag's name is its value
	default:
		if kindOf(theirs) == KindDeclTag {
			name = ours.Name // which cilium/ebpf does not export
		}
	}
	if ours.Kind != kindOf(theirs) || ours.Name != name {
		// cilium reads an 8-byte ENUM as it reads an ENUM64: only the
		// kind's number tells them apart.
		if !(ours.Name == name && (ours.Kind == KindEnum || ours.Kind == KindEnum64) && kindOf(theirs) == KindEnum64) {
			t.Fatalf("type %d: %s %q, cilium has %T %q", ours.ID, ours.Kind, ours.Name, theirs, name)
		}
	}
	var members []btf.Member
	switch v := theirs.(type) {
	case *btf.Struct:
		members = v.Members
		if ours.Size != v.Size {
			t.Errorf("struct %s: size %d, cilium %d", v.Name, ours.Size, v.Size)
		}
	case *btf.Union:
		members = v.Members
	case *btf.Pointer:
		if ours.Ref != idOf(v.Target) {
			t.Errorf("pointer %d: target %d, cilium %d", ours.ID, ours.Ref, idOf(v.Target))
		}
	case *btf.Typedef:
		if ours.Ref != idOf(v.Type) {
			t.Errorf("typedef %s: type %d, cilium %d", v.Name, ours.Ref, idOf(v.Type))
		}
	case *btf.Int:
		if ours.Size != v.Size || ours.Encoding != uint8(v.Encoding) {
			t.Errorf("int %s: size %d encoding %d, cilium %d %d", v.Name, ours.Size, ours.Encoding, v.Size, v.Encoding)
		}
	case *btf.Array:
		if ours.Ref != idOf(v.Type) || ours.Index != idOf(v.Index) || ours.Nelems != v.Nelems {
			t.Errorf("array %d: %d[%d] by %d, cilium %d[%d] by %d", ours.ID, ours.Ref, ours.Nelems, ours.Index, idOf(v.Type), v.Nelems, idOf(v.Index))
		}
	case *btf.Enum:
		if len(ours.Values) != len(v.Values) {
			t.Fatalf("enum %s: %d values, cilium %d", v.Name, len(ours.Values), len(v.Values))
		}
		for i, value := range v.Values {
			if ours.Values[i] != (EnumValue{value.Name, value.Value}) {
				t.Errorf("enum %s value %d: %+v, cilium %+v", v.Name, i, ours.Values[i], value)
			}
		}
	case *btf.Func:
		if ours.Ref != idOf(v.Type) || ours.Linkage != uint32(v.Linkage) {
			t.Errorf("func %s: prototype %d linkage %d, cilium %d %d", v.Name, ours.Ref, ours.Linkage, idOf(v.Type), v.Linkage)
		}
	case *btf.FuncProto:
		if ours.Ref != idOf(v.Return) || len(ours.Params) != len(v.Params) {
			t.Fatalf("prototype %d: returns %d, %d parameters; cilium %d, %d", ours.ID, ours.Ref, len(ours.Params), idOf(v.Return), len(v.Params))
		}
		for i, p := range v.Params {
			if ours.Params[i] != (Param{p.Name, idOf(p.Type)}) {
				t.Errorf("prototype %d parameter %d: %+v, cilium %s %d", ours.ID, i, ours.Params[i], p.Name, idOf(p.Type))
			}
		}
	}
	if len(ours.Members) != len(members) {
		t.Fatalf("%s %s: %d members, cilium %d", ours.Kind, ours.Name, len(ours.Members), len(members))
	}
	for i, m := range members {
		want := Member{Name: m.Name, Type: idOf(m.Type), BitOffset: uint32(m.Offset), BitfieldSize: uint32(m.BitfieldSize)}
		if ours.Members[i] != want {
			t.Errorf("%s %s member %d: %+v, cilium %+v", ours.Kind, ours.Name, i, ours.Members[i], want)
		}
	}
}

// readers are the two ways Open reads BTF: through buffers, or in place,
// where it is in memory.
var readers = map[string]func([]byte) io.ReaderAt{
	"read":      func(b []byte) io.ReaderAt { return bytes.NewReader(b) },
	"in memory": func(b []byte) io.ReaderAt { return inMemory(b) },
}

// TestKernelMatchesCilium reads every type of the running kernel's BTF and
// compares it with cilium/ebpf's decoding, and finds each named one by its
// name, the BTF read both ways.
func TestKernelMatchesCilium(t *testing.T) {
	raw, err := os.ReadFile(kernelPath)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("kernel has no BTF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	for how, reader := range readers {
		t.Run(how, func(t *testing.T) {
			ours, err := Open(reader(raw), int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			matchesCilium(t, ours, theirs)
		})
	}
}

func matchesCilium(t *testing.T, ours *Spec, theirs *btf.Spec) {
	n := 0
	for typ, err := range theirs.All() {
		if err != nil {
			t.Fatal(err)
		}
		id, err := theirs.TypeID(typ)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ours.Type(ID(id))
		if err != nil {
			t.Fatal(err)
		}
		same(t, theirs, got, typ)
		if got.Name != "" && !contains(ours.Named(got.Name, got.Kind), got.ID) {
			t.Errorf("Named(%q, %s) = %v, without %d", got.Name, got.Kind, ours.Named(got.Name, got.Kind), got.ID)
		}
		n++
	}
	// cilium/ebpf folds declaration tags into what they tag.
	if want := len(ours.starts) - len(ours.OfKind(KindDeclTag)); n != want {
		t.Errorf("cilium has %d types (void included, declaration tags not), this package %d", n, want)
	}
	t.Logf("%d types alike", n)
	if got := ours.Named("no_such_type_xyz", KindStruct); got != nil {
		t.Errorf("Named(no_such_type_xyz) = %v", got)
	}
}

func contains(ids []ID, id ID) bool {
	for _, i := range ids {
		if i == id {
			return true
		}
	}
	return false
}

// testTypes is a small BTF with a type of most kinds.
func testTypes() []btf.Type {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	s64 := &btf.Int{Name: "long long int", Size: 8, Encoding: btf.Signed}
	skb := &btf.Struct{Name: "sk_buff", Size: 16}
	skb.Members = []btf.Member{
		{Name: "next", Type: &btf.Pointer{Target: skb}},
		{Name: "len", Type: u32, Offset: 64},
		{Name: "flags", Type: u32, Offset: 96, BitfieldSize: 3},
	}
	return []btf.Type{
		skb,
		&btf.Typedef{Name: "skb_t", Type: &btf.Const{Type: skb}},
		&btf.Enum{Name: "reason", Size: 4, Values: []btf.EnumValue{{Name: "A", Value: 1}, {Name: "B", Value: 0xffff0000}}},
		&btf.Enum{Name: "wide", Size: 8, Values: []btf.EnumValue{{Name: "W", Value: 1 << 40}}},
		&btf.Func{Name: "f", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: s64, Params: []btf.FuncParam{{Name: "skb", Type: &btf.Pointer{Target: skb}}}}},
		&btf.Func{Name: "f", Linkage: btf.StaticFunc, Type: &btf.FuncProto{Return: s64}},
		&btf.Array{Index: u32, Type: u32, Nelems: 4},
		&btf.Fwd{Name: "later", Kind: btf.FwdUnion},
	}
}

func marshal(t testing.TB, order binary.ByteOrder) []byte {
	t.Helper()
	b, err := btf.NewBuilder(testTypes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: order})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestByteOrders reads the same BTF in both byte orders, as cilium/ebpf
// decodes it.
func TestByteOrders(t *testing.T) {
	for how, reader := range readers {
		t.Run(how, func(t *testing.T) { byteOrders(t, reader) })
	}
}

func byteOrders(t *testing.T, reader func([]byte) io.ReaderAt) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		raw := marshal(t, order)
		ours, err := Open(reader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if ours.ByteOrder() != order {
			t.Errorf("ByteOrder %v, want %v", ours.ByteOrder(), order)
		}
		theirs, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for typ, err := range theirs.All() {
			if err != nil {
				t.Fatal(err)
			}
			id, _ := theirs.TypeID(typ)
			got, err := ours.Type(ID(id))
			if err != nil {
				t.Fatal(err)
			}
			same(t, theirs, got, typ)
		}
		if got := ours.Named("f", KindFunc); len(got) != 2 {
			t.Errorf("%v: Named(f) = %v, want two functions", order, got)
		}
		if _, err := ours.One("f", KindFunc); !errors.Is(err, ErrMultipleMatches) {
			t.Errorf("%v: One(f) error %v, want ErrMultipleMatches", order, err)
		}
		if _, err := ours.One("sk_buff", KindUnion); !errors.Is(err, ErrNotFound) {
			t.Errorf("%v: One(sk_buff, union) error %v, want ErrNotFound", order, err)
		}
		s, err := ours.One("skb_t", KindTypedef)
		if err != nil {
			t.Fatal(err)
		}
		if u, err := ours.Underlying(s.ID); err != nil || u.Name != "sk_buff" {
			t.Errorf("%v: Underlying(skb_t) = %+v, %v; want struct sk_buff", order, u, err)
		}
	}
}

// TestCorrupt opens BTF whose header or types do not hold together: each is
// an error, none a panic or a huge allocation.
func TestCorrupt(t *testing.T) {
	good := marshal(t, binary.LittleEndian)
	set := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	for name, raw := range map[string][]byte{
		"empty":              {},
		"no magic":           []byte("not BTF at all, not at all"),
		"huge strings":       set(20, 1<<31),
		"strings past end":   set(16, uint32(len(good))),
		"types cut short":    set(12, binary.LittleEndian.Uint32(good[12:])-4),
		"name outside":       set(24, 1<<20),
		"unknown kind":       set(28, 31<<24),
		"truncated":          good[:len(good)-8],
		"version 2":          append([]byte{good[0], good[1], 2}, good[3:]...),
		"header longer than": set(4, uint32(len(good))),
	} {
		for how, reader := range readers {
			if _, err := Open(reader(raw), int64(len(raw))); err == nil {
				t.Errorf("%s, %s: opened", name, how)
			}
		}
	}
}

// FuzzOpen opens arbitrary bytes and looks up every type and a name in
// them: errors are fine, panics are not.
func FuzzOpen(f *testing.F) {
	f.Add(marshal(f, binary.LittleEndian))
	f.Add(marshal(f, binary.BigEndian))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			return
		}
		s.Named("no_such_name", KindStruct)
		for id := range ID(len(s.starts)) {
			if typ, err := s.Type(id); err == nil {
				s.Named(typ.Name, typ.Kind)
				s.Underlying(id)
			}
		}
	})
}

// TestOneName looks up the only name of a BTF, and one it lacks: a table
// of one name must still have room for a lookup to end.
func TestOneName(t *testing.T) {
	b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Named("int", KindInt); len(got) != 1 {
		t.Errorf("Named(int) = %v", got)
	}
	if got := s.Named("long", KindInt); got != nil {
		t.Errorf("Named(long) = %v", got)
	}
}

// TestELFFile opens BTF in the .BTF section of an ELF file, as a vmlinux
// holds it, and refuses an ELF file without one. objcopy (binutils) puts
// the section in.
func TestELFFile(t *testing.T) {
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skipf("no objcopy to write an ELF file with: %v", err)
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.btf")
	if err := os.WriteFile(raw, marshal(t, binary.NativeEndian), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.elf")
	withBTF := filepath.Join(dir, "vmlinux")
	if out, err := exec.Command(objcopy, "--remove-section=.BTF", self, plain).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v: %s", err, out)
	}
	if out, err := exec.Command(objcopy, "--add-section", ".BTF="+raw, plain, withBTF).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v: %s", err, out)
	}
	s, err := File(withBTF)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if skb, err := s.One("sk_buff", KindStruct); err != nil || len(skb.Members) != 3 {
		t.Errorf("One(sk_buff) = %+v, %v; want the struct of 3 members", skb, err)
	}
	if _, err := File(plain); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ".BTF section") {
		t.Errorf("ELF without .BTF: error %v, want one saying so", err)
	}
}

// TestSortByName sorts by name offsets of one, two and three digits: every
// entry is kept, in offset order, and those of one offset in ID order.
func TestSortByName(t *testing.T) {
	for _, largest := range []uint64{0, 1 << 10, 1 << 21, 1 << 27} {
		var entries []uint64
		for id := uint64(1); id <= 5000; id++ {
			off := (id * 7919) % (largest + 1)
			entries = append(entries, off<<32|id)
		}
		want := slices.Clone(entries)
		slices.Sort(want) // offset, then ID
		sortByName(entries)
		if !slices.Equal(entries, want) {
			t.Errorf("largest offset %d: not sorted by offset, then ID", largest)
		}
	}
	sortByName(nil)
}
