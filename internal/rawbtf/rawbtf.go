// Package rawbtf looks up named types in raw BTF (a kernel's
// /sys/kernel/btf/vmlinux, or a file holding such BTF) without decoding the
// rest of it.
//
// A kernel's BTF is 3-6 MB of some 150,000 types, of which skbstat reads a
// few dozen. Open reads the strings and passes over the types once, keeping
// only where each type starts and a hash table of their names; a type is
// read again, from the file, when it is looked up. That holds about 3.5 MB
// of a 5.5 MB BTF in memory, where decoding libraries hold the whole of it
// and more.
package rawbtf

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotFound is returned for a name that no type of the kind asked for has.
var ErrNotFound = errors.New("not found")

// ErrMultipleMatches is returned where a name that must name one type names
// several of the kind asked for.
var ErrMultipleMatches = errors.New("more than one type of that name")

// Kind is a BTF type kind (BTF_KIND_*).
type Kind uint8

// The kinds of include/uapi/linux/btf.h.
const (
	KindVoid Kind = iota
	KindInt
	KindPointer
	KindArray
	KindStruct
	KindUnion
	KindEnum
	KindForward
	KindTypedef
	KindVolatile
	KindConst
	KindRestrict
	KindFunc
	KindFuncProto
	KindVar
	KindDatasec
	KindFloat
	KindDeclTag
	KindTypeTag
	KindEnum64
	kindCount
)

var kindNames = [kindCount]string{"void", "int", "pointer", "array", "struct", "union", "enum", "forward",
	"typedef", "volatile", "const", "restrict", "func", "func_proto", "var", "datasec", "float",
	"decl_tag", "type_tag", "enum64"}

func (k Kind) String() string {
	if k < kindCount {
		return kindNames[k]
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// ID is a type's BTF ID; 0 is void.
type ID uint32

// Member is a struct or union member.
type Member struct {
	Name         string
	Type         ID
	BitOffset    uint32 // from the start of the struct
	BitfieldSize uint32 // 0 unless a bitfield
}

// Param is a function prototype's parameter.
type Param struct {
	Name string
	Type ID
}

// EnumValue is an enumerator; a signed enum's negative values are sign
// extended.
type EnumValue struct {
	Name  string
	Value uint64
}

// Type is one type, decoded alone: the types it refers to are IDs.
type Type struct {
	ID   ID
	Kind Kind
	Name string
	// Size in bytes: of an int, struct, union, enum or float.
	Size uint32
	// Ref is the type referred to: a pointer's target, a typedef's or
	// qualifier's type, a function's prototype, a prototype's return type,
	// an array's element.
	Ref    ID
	Index  ID     // an array's index type
	Nelems uint32 // of an array
	// KindFlag is the kind's flag: a signed enum, a forward declaration of
	// a union, members with bitfield sizes.
	KindFlag bool
	Encoding uint8  // of an int: BTF_INT_SIGNED, _CHAR, _BOOL
	Linkage  uint32 // of a func or var: static 0, global 1, extern 2
	Members  []Member
	Params   []Param
	Values   []EnumValue
}

// Spec is the index of one BTF.
type Spec struct {
	r      io.ReaderAt
	closer io.Closer
	order  binary.ByteOrder
	// typesAt is where the type section starts in r; starts[id-1] is
	// where type id starts in it, and starts[len(starts)-1] where the last
	// ends.
	typesAt int64
	starts  []uint32
	kinds   []Kind // by id-1
	// strings is the string section, from which each name is read when a
	// type is: it is as large as all the tables together, and a run reads
	// a few hundred of its names.
	strings window
	// names is an open-addressing hash table of the IDs of named types.
	names []ID
	seed  maphash.Seed
	// decoded holds the types read so far: the layout revisits sk_buff's
	// anonymous members once per member it looks for.
	decoded map[ID]*Type
}

const (
	magic      = 0xeb9f
	headerSize = 24
	typeSize   = 12 // struct btf_type
	// maxSection bounds what a header may claim: a kernel's BTF is a few
	// MB, and a corrupt file must not make skbstat allocate gigabytes.
	maxSection = 1 << 28
)

// Kernel opens the running kernel's BTF. The error wraps os.ErrNotExist
// where the kernel has none.
func Kernel() (*Spec, error) {
	f, info, err := openFile(kernelPath)
	if err != nil {
		return nil, err
	}
	// Since Linux 6.16 the kernel maps its BTF into the process rather
	// than copying it out on each read (three times faster here); the
	// mapping is of the kernel's own pages, which count in no RSS.
	if mapped, err := unix.Mmap(int(f.Fd()), 0, int(info.Size()), unix.PROT_READ, unix.MAP_PRIVATE); err == nil {
		f.Close()
		s, err := Open(inMemory(mapped), info.Size())
		if err != nil {
			unix.Munmap(mapped)
			return nil, err
		}
		s.closer = munmap(mapped)
		return s, nil
	}
	return open(f, info.Size(), false)
}

// kernelPath is where the running kernel exposes its BTF.
const kernelPath = "/sys/kernel/btf/vmlinux"

// inMemory is BTF in memory (mapped, or a compressed section's data),
// whose strings are read in place.
type inMemory []byte

func (m inMemory) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m).ReadAt(p, off)
}

// munmap unmaps a mapping when closed.
type munmap []byte

func (m munmap) Close() error { return unix.Munmap(m) }

// File opens a BTF file: raw BTF, or an ELF (a vmlinux) with a .BTF section.
func File(path string) (*Spec, error) {
	f, info, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return open(f, info.Size(), true)
}

// openFile opens path and says what size it is.
func openFile(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, info, nil
}

// open opens the BTF of size bytes in f, or in its .BTF section where it
// may be an ELF file and is one; the Spec closes f.
func open(f *os.File, size int64, maybeELF bool) (*Spec, error) {
	r := io.ReaderAt(f)
	var head [4]byte
	if _, err := f.ReadAt(head[:], 0); maybeELF && err == nil && string(head[:]) == elf.ELFMAG {
		if r, size, err = elfSection(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	s, err := Open(r, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.closer = f
	return s, nil
}

// elfSection returns the .BTF section of ELF file f.
func elfSection(f *os.File) (io.ReaderAt, int64, error) {
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, 0, fmt.Errorf("ELF: %w", err)
	}
	sec := ef.Section(".BTF")
	if sec == nil {
		return nil, 0, fmt.Errorf("ELF has no .BTF section (need a vmlinux built with CONFIG_DEBUG_INFO_BTF, or raw BTF): %w", ErrNotFound)
	}
	if sec.Type == elf.SHT_NOBITS || sec.Flags&elf.SHF_COMPRESSED != 0 {
		data, err := sec.Data()
		if err != nil {
			return nil, 0, fmt.Errorf("ELF section .BTF: %w", err)
		}
		return inMemory(data), int64(len(data)), nil
	}
	return sec.ReaderAt, int64(sec.Size), nil
}

// Open indexes the raw BTF of size bytes in r, which it reads again on each
// lookup of a type not yet read.
func Open(r io.ReaderAt, size int64) (*Spec, error) {
	var h [headerSize]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, fmt.Errorf("BTF header: %w", err)
	}
	s := &Spec{r: r, seed: maphash.MakeSeed(), decoded: map[ID]*Type{}}
	switch {
	case binary.LittleEndian.Uint16(h[:]) == magic:
		s.order = binary.LittleEndian
	case binary.BigEndian.Uint16(h[:]) == magic:
		s.order = binary.BigEndian
	default:
		return nil, errors.New("not BTF: no BTF magic")
	}
	if h[2] != 1 {
		return nil, fmt.Errorf("BTF version %d, not 1", h[2])
	}
	u32 := func(i int) int64 { return int64(s.order.Uint32(h[i:])) }
	hdrLen, typeOff, typeLen, strOff, strLen := u32(4), u32(8), u32(12), u32(16), u32(20)
	if hdrLen < headerSize || typeLen > maxSection || strLen > maxSection ||
		hdrLen+typeOff+typeLen > size || hdrLen+strOff+strLen > size {
		return nil, fmt.Errorf("BTF header: sections (types %d+%d, strings %d+%d) outside the %d bytes", typeOff, typeLen, strOff, strLen, size)
	}
	var ends [2]byte
	_, err0 := r.ReadAt(ends[:1], hdrLen+strOff)
	_, err1 := r.ReadAt(ends[1:], hdrLen+strOff+strLen-1)
	if strLen == 0 || err0 != nil || err1 != nil || ends != [2]byte{} {
		return nil, errors.New("BTF strings: not a table of NUL-terminated strings")
	}
	s.typesAt = hdrLen + typeOff
	strings := newWindow(r, hdrLen+strOff, uint32(strLen), 64<<10)
	if err := s.index(io.NewSectionReader(r, s.typesAt, typeLen), &strings); err != nil {
		return nil, err
	}
	s.strings = newWindow(r, strings.base, strings.size, 256)
	return s, nil
}

// index passes over the type section once, noting where each type starts
// and its kind (a kernel's 150,000 types take 0.7 MB of tables). The names
// of the named ones are then hashed: in the order they are stored in, so
// that the strings are read once, from start to end, through a window, or,
// where they are in memory, in the order of the types.
func (s *Spec) index(types *io.SectionReader, strings *window) error {
	// A kernel's types average 25 bytes: room for that many, so that the
	// tables rarely grow.
	estimate := types.Size()/24 + 1
	s.starts = make([]uint32, 0, estimate+1)
	s.kinds = make([]Kind, 0, estimate)
	// byName holds each named type as its name's offset (high half) and
	// its ID (low half).
	byName := make([]uint64, 0, estimate)
	err := eachType(types, make([]byte, 64<<10), s.order, func(at uint32, info uint32, nameOff uint32) error {
		s.starts = append(s.starts, at)
		s.kinds = append(s.kinds, Kind(info>>24&0x1f))
		if nameOff != 0 {
			byName = append(byName, uint64(nameOff)<<32|uint64(len(s.kinds)))
		}
		return nil
	})
	s.starts = append(s.starts, uint32(types.Size()))
	if err != nil {
		return err
	}
	if strings.held == nil {
		sortByName(byName)
	}
	// At most two thirds full, so that probes stay short and end.
	size := 1
	for size <= len(byName)+len(byName)/2 {
		size <<= 1
	}
	s.names = make([]ID, size)
	// Written through before it is probed: a fresh page that is read first
	// maps the shared zero page, and the write after it is a copy-on-write
	// fault that flushes the TLB of every CPU the process runs on (two
	// thirds of the index's time in a fresh process, measured).
	clear(s.names)
	mask := uint64(size - 1)
	for _, entry := range byName {
		name, err := strings.stringAt(int64(entry >> 32))
		if err != nil {
			return fmt.Errorf("BTF type %d: %w", uint32(entry), err)
		}
		slot := maphash.Bytes(s.seed, name) & mask
		for s.names[slot] != 0 {
			slot = (slot + 1) & mask
		}
		s.names[slot] = ID(uint32(entry))
	}
	return nil
}

// sortByName sorts entries by their high half, a name's offset, with a
// radix sort in digits of 11 bits, as many as the largest offset has, which
// keeps entries of one name in ID order.
func sortByName(entries []uint64) {
	if len(entries) == 0 {
		return
	}
	var largest uint64
	for _, e := range entries {
		largest = max(largest, e>>32)
	}
	sorted, tmp := entries, make([]uint64, len(entries))
	for shift := 32; largest>>(shift-32) != 0; shift += 11 {
		var counts [1 << 11]int
		for _, e := range sorted {
			counts[e>>shift&(1<<11-1)]++
		}
		total := 0
		for i, c := range counts {
			counts[i], total = total, total+c
		}
		for _, e := range sorted {
			d := e >> shift & (1<<11 - 1)
			tmp[counts[d]] = e
			counts[d]++
		}
		sorted, tmp = tmp, sorted
	}
	// An odd number of passes leaves them in the scratch copy.
	if &sorted[0] != &entries[0] {
		copy(entries, sorted)
	}
}

// eachType calls fn with the offset, the info word and the name offset of
// each type in types, in order, reading them in pieces of buf's size.
func eachType(types io.Reader, buf []byte, order binary.ByteOrder, fn func(at, info, nameOff uint32) error) error {
	c := chunks{r: types, buf: buf}
	for at, id := uint32(0), 1; ; id++ {
		h, err := c.next(typeSize)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("BTF type %d: %w", id, err)
		}
		info, nameOff := order.Uint32(h[4:]), order.Uint32(h[0:])
		trailing, err := trailingSize(Kind(info>>24&0x1f), info&0xffff)
		if err != nil {
			return fmt.Errorf("BTF type %d: %w", id, err)
		}
		if _, err := c.next(int(trailing)); err == io.EOF {
			return fmt.Errorf("BTF type %d: %w", id, io.ErrUnexpectedEOF)
		} else if err != nil {
			return fmt.Errorf("BTF type %d: %w", id, err)
		}
		if err := fn(at, info, nameOff); err != nil {
			return err
		}
		at += typeSize + trailing
	}
}

// chunks reads r in pieces of its buffer's size.
type chunks struct {
	r        io.Reader
	buf      []byte
	pos, end int // the unread bytes in buf
	eof      bool
}

// next returns the next n bytes, valid until the next call; io.EOF where r
// has none left, io.ErrUnexpectedEOF where it has fewer.
func (c *chunks) next(n int) ([]byte, error) {
	if c.end-c.pos < n {
		if err := c.fill(n); err != nil {
			return nil, err
		}
	}
	b := c.buf[c.pos : c.pos+n]
	c.pos += n
	return b, nil
}

// fill moves the unread bytes to the start of the buffer and reads until
// it holds n.
func (c *chunks) fill(n int) error {
	c.end = copy(c.buf, c.buf[c.pos:c.end])
	c.pos = 0
	if n > len(c.buf) {
		c.buf = append(c.buf, make([]byte, n-len(c.buf))...)
	}
	for c.end < n && !c.eof {
		m, err := c.r.Read(c.buf[c.end:])
		c.end += m
		if err == io.EOF {
			c.eof = true
		} else if err != nil {
			return err
		}
	}
	switch {
	case c.end == 0:
		return io.EOF
	case c.end < n:
		return io.ErrUnexpectedEOF
	}
	return nil
}

// trailing gives, per kind, the size of what follows struct btf_type: a
// fixed part and a part per vlen entry; kinds it lacks are unknown.
var trailing = [kindCount]struct{ fixed, perEntry uint8 }{
	KindInt: {4, 0}, KindVar: {4, 0}, KindDeclTag: {4, 0}, KindArray: {12, 0},
	KindStruct: {0, 12}, KindUnion: {0, 12}, KindDatasec: {0, 12}, KindEnum64: {0, 12},
	KindEnum: {0, 8}, KindFuncProto: {0, 8},
}

// trailingSize is the size of what follows struct btf_type for kind.
func trailingSize(kind Kind, vlen uint32) (uint32, error) {
	if kind == KindVoid || kind >= kindCount {
		return 0, fmt.Errorf("unknown kind %d", kind)
	}
	t := trailing[kind]
	return uint32(t.fixed) + uint32(t.perEntry)*vlen, nil
}

// window reads NUL-terminated strings out of a section of r through a
// buffer, which holds the bytes read last: reading strings in the order
// they are stored in reads the section once.
type window struct {
	r     io.ReaderAt
	base  int64  // where the section starts in r
	size  uint32 // of the section, which ends in a NUL
	buf   []byte
	start int64 // the section offset of buf[0]
	n     int   // bytes of buf read
	// held is the section where r holds it in memory: strings are read
	// from it in place, and buf is not used.
	held []byte
}

// newWindow reads the strings of the section of size bytes at base in r
// through a buffer of bufSize, or in place where r holds them in memory.
func newWindow(r io.ReaderAt, base int64, size uint32, bufSize int) window {
	if m, ok := r.(inMemory); ok {
		return window{r: r, base: base, size: size, held: m[base : base+int64(size)]}
	}
	return window{r: r, base: base, size: size, buf: make([]byte, bufSize)}
}

// stringAt returns the string at section offset off, valid until the next call.
func (w *window) stringAt(off int64) ([]byte, error) {
	if off >= int64(w.size) {
		return nil, fmt.Errorf("name at %d is outside the strings", off)
	}
	if w.held != nil {
		return w.held[off : off+int64(bytes.IndexByte(w.held[off:], 0))], nil // the section ends in a NUL
	}
	for {
		if rel := off - w.start; rel >= 0 && rel < int64(w.n) {
			if i := bytes.IndexByte(w.buf[rel:w.n], 0); i >= 0 {
				return w.buf[rel : rel+int64(i)], nil
			}
			if rel == 0 { // longer than the buffer
				w.buf = make([]byte, 2*len(w.buf))
			}
		}
		n := min(int64(len(w.buf)), int64(w.size)-off)
		if _, err := w.r.ReadAt(w.buf[:n], w.base+off); err != nil {
			return nil, fmt.Errorf("name at %d: %w", off, err)
		}
		w.start, w.n = off, int(n)
	}
}

// name is the string at off.
func (s *Spec) name(off uint32) (string, error) {
	b, err := s.strings.stringAt(int64(off))
	return string(b), err
}

// ByteOrder is the byte order the BTF is encoded in.
func (s *Spec) ByteOrder() binary.ByteOrder { return s.order }

// Close closes the file the BTF is read from.
func (s *Spec) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// Named returns the IDs of the types of kind called name, in ID order.
func (s *Spec) Named(name string, kind Kind) []ID {
	var ids []ID
	mask := uint64(len(s.names) - 1)
	for slot := maphash.String(s.seed, name) & mask; s.names[slot] != 0; slot = (slot + 1) & mask {
		id := s.names[slot]
		if s.kinds[id-1] != kind {
			continue
		}
		if n, err := s.typeName(id); err == nil && n == name {
			ids = append(ids, id)
		}
	}
	// Probing visits the IDs of one name in the order they were hashed.
	return ids
}

// OfKind returns the IDs of every type of kind.
func (s *Spec) OfKind(kind Kind) []ID {
	var ids []ID
	for i, k := range s.kinds {
		if k == kind {
			ids = append(ids, ID(i+1))
		}
	}
	return ids
}

// typeName is the name of type id, read without the rest of it.
func (s *Spec) typeName(id ID) (string, error) {
	if t, ok := s.decoded[id]; ok {
		return t.Name, nil
	}
	var nameOff [4]byte
	if _, err := s.r.ReadAt(nameOff[:], s.typesAt+int64(s.starts[id-1])); err != nil {
		return "", fmt.Errorf("BTF type %d: %w", id, err)
	}
	return s.name(s.order.Uint32(nameOff[:]))
}

// One returns the one type of kind called name.
func (s *Spec) One(name string, kind Kind) (*Type, error) {
	ids := s.Named(name, kind)
	switch len(ids) {
	case 0:
		return nil, fmt.Errorf("%s %s: %w", kind, name, ErrNotFound)
	case 1:
		return s.Type(ids[0])
	}
	return nil, fmt.Errorf("%s %s: %w (IDs %v)", kind, name, ErrMultipleMatches, ids)
}

// Type returns type id.
func (s *Spec) Type(id ID) (*Type, error) {
	if id == 0 {
		return &Type{Kind: KindVoid}, nil
	}
	if t, ok := s.decoded[id]; ok {
		return t, nil
	}
	if int(id) >= len(s.starts) {
		return nil, fmt.Errorf("BTF type %d: no such type (there are %d)", id, len(s.starts)-1)
	}
	start, end := s.starts[id-1], s.starts[id]
	raw := make([]byte, end-start)
	if _, err := s.r.ReadAt(raw, s.typesAt+int64(start)); err != nil {
		return nil, fmt.Errorf("BTF type %d: %w", id, err)
	}
	t, err := s.decode(id, raw)
	if err != nil {
		return nil, fmt.Errorf("BTF type %d: %w", id, err)
	}
	s.decoded[id] = t
	return t, nil
}

// decode decodes raw, type id's struct btf_type and what follows it.
func (s *Spec) decode(id ID, raw []byte) (*Type, error) {
	u32 := func(i int) uint32 { return s.order.Uint32(raw[i:]) }
	info := u32(4)
	kindFlag, vlen := info>>31 == 1, int(info&0xffff)
	t := &Type{ID: id, Kind: Kind(info >> 24 & 0x1f), KindFlag: kindFlag}
	var err error
	if t.Name, err = s.name(u32(0)); err != nil {
		return nil, err
	}
	sizeOrType := u32(8)
	rest := raw[typeSize:]
	var names []uint32
	switch t.Kind {
	case KindInt, KindStruct, KindUnion, KindEnum, KindEnum64, KindFloat, KindDatasec:
		t.Size = sizeOrType
	default:
		t.Ref = ID(sizeOrType)
	}
	switch t.Kind {
	case KindInt:
		t.Encoding = uint8(s.order.Uint32(rest) >> 24 & 0xf)
	case KindFunc:
		t.Linkage = uint32(vlen)
	case KindVar:
		t.Linkage = s.order.Uint32(rest)
	case KindArray:
		t.Ref, t.Index, t.Nelems = ID(s.order.Uint32(rest)), ID(s.order.Uint32(rest[4:])), s.order.Uint32(rest[8:])
	case KindStruct, KindUnion:
		for i := range vlen {
			m := rest[12*i:]
			offset := s.order.Uint32(m[8:])
			member := Member{Type: ID(s.order.Uint32(m[4:])), BitOffset: offset}
			if kindFlag {
				member.BitOffset, member.BitfieldSize = offset&0xffffff, offset>>24
			}
			t.Members = append(t.Members, member)
			names = append(names, s.order.Uint32(m))
		}
	case KindFuncProto:
		t.Ref = ID(sizeOrType)
		for i := range vlen {
			p := rest[8*i:]
			t.Params = append(t.Params, Param{Type: ID(s.order.Uint32(p[4:]))})
			names = append(names, s.order.Uint32(p))
		}
	case KindEnum:
		for i := range vlen {
			v := rest[8*i:]
			value := uint64(s.order.Uint32(v[4:]))
			if kindFlag {
				value = uint64(int64(int32(value)))
			}
			t.Values = append(t.Values, EnumValue{Value: value})
			names = append(names, s.order.Uint32(v))
		}
	case KindEnum64:
		for i := range vlen {
			v := rest[12*i:]
			value := uint64(s.order.Uint32(v[8:]))<<32 | uint64(s.order.Uint32(v[4:]))
			t.Values = append(t.Values, EnumValue{Value: value})
			names = append(names, s.order.Uint32(v))
		}
	}
	for i, off := range names {
		name, err := s.name(off)
		if err != nil {
			return nil, err
		}
		switch {
		case t.Members != nil:
			t.Members[i].Name = name
		case t.Params != nil:
			t.Params[i].Name = name
		default:
			t.Values[i].Name = name
		}
	}
	return t, nil
}

// Underlying returns the type that id names once typedefs, qualifiers
// (const, volatile, restrict) and type tags are looked through.
func (s *Spec) Underlying(id ID) (*Type, error) {
	for range len(s.starts) {
		t, err := s.Type(id)
		if err != nil {
			return nil, err
		}
		switch t.Kind {
		case KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag:
			id = t.Ref
			continue
		}
		return t, nil
	}
	return nil, fmt.Errorf("BTF type %d: typedefs in a cycle", id)
}
