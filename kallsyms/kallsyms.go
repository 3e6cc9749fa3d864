// Package kallsyms turns kernel text addresses into symbol names, and names
// into addresses.
//
// Names of addresses come from the running kernel itself where it can give
// them to a BPF program (Kernel, Linux 5.14), else from /proc/kallsyms
// (Table); Running chooses. Addresses of names come from Table only.
//
// /proc/kallsyms is read once. Only function symbols are kept (types t, T, w and
// W, without the __pfx_ and __cfi_ preamble labels), in a compact form: one
// sorted slice of addresses, one slice of name offsets and the names packed
// in fixed-size byte chunks. There are no per-symbol allocations: a kernel
// with 122,000 symbol lines gives a table of 64,000 symbols in 2.3 MB.
package kallsyms

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Path is where the running kernel lists its symbols.
const Path = "/proc/kallsyms"

// Table holds the text symbols of one kernel.
type Table struct {
	// addrs is sorted ascending; symbols at the same address (aliases)
	// keep the order of the file, so the first alias wins, as in the
	// kernel's own lookup.
	addrs []uint64
	// offs[i] locates the name of the symbol at addrs[i]: chunk
	// offs[i]>>chunkBits of names, at byte offs[i]&(chunkSize-1).
	offs []uint32
	// names holds one entry per symbol, in file order: the name, then "\t"
	// and the module name for module symbols, then "\n". Each chunk starts
	// with "\n", so Address and Clones search a chunk with bytes.Index
	// for "\n"+name. Chunks of a fixed size grow the arena without ever
	// copying it, which keeps the peak memory of Load near the table's size.
	names [][]byte
	// restricted is true when kptr_restrict hid every address (all zero).
	restricted bool
}

const (
	chunkBits = 16
	chunkSize = 1 << chunkBits
)

// Shared returns the running kernel's symbols, read from /proc/kallsyms by
// the first call, which the others wait for: one read serves every user,
// and a caller can start it early, in the background.
var Shared = sync.OnceValues(Load)

// Load reads the running kernel's symbols from /proc/kallsyms.
func Load() (*Table, error) {
	return load(nil)
}

// LoadFunctions reads from /proc/kallsyms only the symbols of the functions
// names and of their compiler's copies: what Address and Clones need for
// them, without a table of every symbol (3.3 MB on Debian's 6.12).
func LoadFunctions(names []string) (*Table, error) {
	wanted := make(map[string]bool, len(names))
	for _, n := range names {
		wanted[n] = true
	}
	return load(func(name []byte) bool {
		base, _, _ := bytes.Cut(name, []byte{'.'}) // "ip_rcv.isra.0": ip_rcv's
		return wanted[string(base)]
	})
}

// load reads the symbols of /proc/kallsyms that keep keeps (nil: all).
func load(keep func(name []byte) bool) (*Table, error) {
	f, err := os.Open(Path)
	if err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	defer f.Close()
	t, err := parse(f, keep)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Path, err)
	}
	return t, nil
}

// Parse reads symbols in the format of /proc/kallsyms:
//
//	ffffffff81ff6a80 T ip_rcv
//	ffffffffc0a01000 t veth_xmit	[veth]
//
// Symbols other than text symbols are ignored. A reader without any text
// symbol is an error.
func Parse(r io.Reader) (*Table, error) {
	return parse(r, nil)
}

// parse is Parse, keeping only the symbols that keep keeps (nil: all).
func parse(r io.Reader, keep func(name []byte) bool) (*Table, error) {
	b := builder{keep: keep}
	// A line that fits the reader's buffer fits a chunk of names.
	br := bufio.NewReaderSize(r, chunkSize)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if err := b.addLine(bytes.TrimSuffix(line, []byte{'\n'})); err != nil {
			return nil, fmt.Errorf("line %d: %q: %w", lineNo, line, err)
		}
	}
	if b.text == 0 {
		return nil, errors.New("no text symbols")
	}

	t := &Table{addrs: b.addrs.flat(), offs: b.offs.flat(), names: b.names}
	t.restricted = len(t.addrs) > 0 && !slices.ContainsFunc(t.addrs, func(a uint64) bool { return a != 0 })
	// The kernel lists its own symbols sorted, module symbols are not.
	// Offsets grow in file order, so sorting by (address, offset) keeps
	// aliases in file order.
	if !slices.IsSorted(t.addrs) {
		sort.Sort(byAddress{t})
	}
	return t, nil
}

// builder collects a Table's symbols while Parse reads them.
type builder struct {
	keep  func(name []byte) bool // nil: every symbol
	text  int                    // text symbols read, kept or not
	addrs blocks[uint64]
	offs  blocks[uint32]
	names [][]byte
}

// addLine adds the symbol of one line "ADDR TYPE NAME[\t[MODULE]]" if it is a
// text symbol.
func (b *builder) addLine(line []byte) error {
	addr, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(rest) < 3 || rest[1] != ' ' {
		return errors.New("want ADDRESS TYPE NAME")
	}
	switch rest[0] {
	case 't', 'T', 'w', 'W':
	default:
		return nil
	}
	a, err := parseHex(addr)
	if err != nil {
		return err
	}
	name, module, isModule := bytes.Cut(rest[2:], []byte{'\t'})
	if len(name) == 0 || bytes.IndexByte(name, ' ') >= 0 {
		return errors.New("bad symbol name")
	}
	if isPreamble(name) {
		return nil
	}
	if b.text++; b.keep != nil && !b.keep(name) {
		return nil
	}
	module = bytes.TrimSuffix(bytes.TrimPrefix(module, []byte{'['}), []byte{']'})

	size := len(name) + 1 // name, '\n'
	if isModule {
		size += 1 + len(module) // '\t', module
	}
	last := len(b.names) - 1
	if last < 0 || len(b.names[last])+size > chunkSize {
		if last+1 == 1<<(32-chunkBits) {
			return errors.New("symbol names exceed 4 GiB")
		}
		b.names = append(b.names, append(make([]byte, 0, chunkSize), '\n'))
		last++
	}
	chunk := b.names[last]
	b.addrs.add(a)
	b.offs.add(uint32(last)<<chunkBits | uint32(len(chunk)))
	chunk = append(chunk, name...)
	if isModule {
		chunk = append(append(chunk, '\t'), module...)
	}
	b.names[last] = append(chunk, '\n')
	return nil
}

// blocks collects values in blocks of a fixed size, so that growing never
// copies them and leaves no garbage behind.
type blocks[T any] struct {
	full [][]T
	last []T
}

func (b *blocks[T]) add(v T) {
	if len(b.last) == cap(b.last) {
		if b.last != nil {
			b.full = append(b.full, b.last)
		}
		b.last = make([]T, 0, 8<<10)
	}
	b.last = append(b.last, v)
}

// flat returns all values in one slice of exactly their number.
func (b *blocks[T]) flat() []T {
	return slices.Concat(append(b.full, b.last)...)
}

// isPreamble reports whether name labels the padding or CFI hash in front of
// a function (__pfx_ip_rcv, __cfi_ip_rcv). They are half of all symbols of a
// kernel built with them, and no stack frame points into them: leaving them
// out halves the table.
func isPreamble(name []byte) bool {
	return bytes.HasPrefix(name, []byte("__pfx_")) || bytes.HasPrefix(name, []byte("__cfi_"))
}

// parseHex parses an address without allocating, unlike strconv.ParseUint.
func parseHex(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 16 {
		return 0, fmt.Errorf("bad address %q", b)
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("bad address %q", b)
		}
		v = v<<4 | uint64(d)
	}
	return v, nil
}

type byAddress struct{ t *Table }

func (s byAddress) Len() int { return len(s.t.addrs) }
func (s byAddress) Less(i, j int) bool {
	a := s.t.addrs
	return a[i] < a[j] || a[i] == a[j] && s.t.offs[i] < s.t.offs[j]
}
func (s byAddress) Swap(i, j int) {
	s.t.addrs[i], s.t.addrs[j] = s.t.addrs[j], s.t.addrs[i]
	s.t.offs[i], s.t.offs[j] = s.t.offs[j], s.t.offs[i]
}

// Learn does nothing: the table holds every symbol.
func (t *Table) Learn([]uint64) error { return nil }

// Restricted reports whether kptr_restrict hid the addresses (they all read
// as zero). Symbolize then prints raw addresses, and Address reports zero.
func (t *Table) Restricted() bool { return t.restricted }

// Symbolize names a kernel text address as "sym+0xoff", or
// "sym+0xoff [module]" for a module symbol. An address below the first
// symbol, or any address of a restricted table, prints as "0x..." .
func (t *Table) Symbolize(addr uint64) string {
	i, ok := t.lookup(addr)
	if !ok {
		return "0x" + strconv.FormatUint(addr, 16)
	}
	name, module := t.entry(t.offs[i])
	b := make([]byte, 0, len(name)+len(module)+24)
	b = append(b, name...)
	b = append(b, "+0x"...)
	b = strconv.AppendUint(b, addr-t.addrs[i], 16)
	if len(module) > 0 {
		b = append(b, " ["...)
		b = append(b, module...)
		b = append(b, ']')
	}
	return string(b)
}

// Function returns the address of the function that addr is in, so that
// two addresses can be told to be in the same function; ok is false where
// Symbolize prints a raw address.
func (t *Table) Function(addr uint64) (start uint64, ok bool) {
	i, ok := t.lookup(addr)
	if !ok {
		return 0, false
	}
	return t.addrs[i], true
}

// lookup returns the index of the symbol that addr is in: the nearest at or
// below addr, and of its aliases the first. ok is false for an address
// below the first symbol, and for every address of a restricted table.
func (t *Table) lookup(addr uint64) (i int, ok bool) {
	if t.restricted {
		return 0, false
	}
	// i is the first symbol at addr, or the one after addr.
	i, exact := slices.BinarySearch(t.addrs, addr)
	if exact {
		return i, true
	}
	if i == 0 {
		return 0, false
	}
	i, _ = slices.BinarySearch(t.addrs[:i], t.addrs[i-1])
	return i, true
}

// entry returns the name and module (empty for the kernel itself) of the
// symbol at off.
func (t *Table) entry(off uint32) (name, module []byte) {
	e := t.names[off>>chunkBits][off&(chunkSize-1):]
	name, module, _ = bytes.Cut(e[:bytes.IndexByte(e, '\n')], []byte{'\t'})
	return name, module
}

// named yields, in file order, the offset and name of each symbol whose name
// starts with prefix.
func (t *Table) named(prefix string) iter.Seq2[uint32, []byte] {
	return func(yield func(uint32, []byte) bool) {
		needle := []byte("\n" + prefix)
		for c, chunk := range t.names {
			for from := 0; ; {
				i := bytes.Index(chunk[from:], needle)
				if i < 0 {
					break
				}
				off := uint32(c)<<chunkBits | uint32(from+i+1)
				name, _ := t.entry(off)
				if !yield(off, name) {
					return
				}
				from += i + 1 + len(name)
			}
		}
	}
}

// Address returns the address of the text symbol called name; ok is false
// when there is none. Where several symbols share the name (static functions
// of different files, or of modules), the first in /proc/kallsyms wins, as
// for the kernel's kallsyms_lookup_name. In a restricted table ok still says
// whether the symbol exists, and the address is zero.
func (t *Table) Address(name string) (addr uint64, ok bool) {
	if !validName(name) {
		return 0, false
	}
	for off, n := range t.named(name) {
		if len(n) == len(name) {
			return t.addrs[slices.Index(t.offs, off)], true
		}
	}
	return 0, false
}

// Clones returns the names of the compiler's copies of function name, sorted:
// "name.isra.0", "name.constprop.0", "name.part.0", "name.llvm.123" and
// combinations of them. A probe on name alone misses the calls that go to
// them. "name.cold" and the like are not included: they hold the cold tail of
// a function and are never called at their start.
func (t *Table) Clones(name string) []string {
	if !validName(name) {
		return nil
	}
	var clones []string
	for _, n := range t.named(name + ".") {
		if isCloneSuffix(string(n[len(name):])) {
			clones = append(clones, string(n))
		}
	}
	slices.Sort(clones)
	return slices.Compact(clones)
}

// isCloneSuffix reports whether s is one or more ".KIND.NUMBER" parts, where
// KIND names a way GCC or clang copies a function.
func isCloneSuffix(s string) bool {
	parts := strings.Split(s, ".") // "", KIND, NUMBER, KIND, NUMBER...
	if len(parts) < 3 || parts[0] != "" || len(parts)%2 != 1 {
		return false
	}
	for i := 1; i < len(parts); i += 2 {
		switch parts[i] {
		case "isra", "constprop", "part", "llvm":
		default:
			return false
		}
		if _, err := strconv.ParseUint(parts[i+1], 10, 64); err != nil {
			return false
		}
	}
	return true
}

// validName rejects what cannot be a symbol name, and would otherwise match
// across the separators of the arena.
func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, " \t\n")
}
