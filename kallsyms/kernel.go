package kallsyms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Symbols names kernel text addresses: the running kernel itself (Kernel),
// or a table of /proc/kallsyms (Table). Neither is safe for concurrent use
// (Kernel remembers what it named).
type Symbols interface {
	// Learn is told every address that will be named until the next
	// Learn, before they are: Kernel names them a batch at a time and
	// forgets the others; Table holds every symbol already.
	Learn(addrs []uint64) error
	// Symbolize names addr as "sym+0xoff", or "sym+0xoff [module]" for a
	// module's symbol; "0x..." where no symbol holds it.
	Symbolize(addr uint64) string
	// Function returns the address of the function that addr is in, so
	// that two addresses can be told to be in the same function; ok is
	// false where Symbolize prints a raw address.
	Function(addr uint64) (start uint64, ok bool)
}

// Running returns what names the running kernel's addresses, chosen by the
// first call, which the others wait for: the kernel itself where it can
// name them for a BPF program (Kernel), else /proc/kallsyms (Shared).
func Running() (Symbols, error) { return running() }

// NotByKernel says why the kernel does not name Running's addresses (nil
// where it does).
func NotByKernel() error {
	running()
	return notByKernel
}

var (
	running = sync.OnceValues(func() (Symbols, error) {
		k, err := OpenKernel()
		if err == nil {
			return k, nil
		}
		notByKernel = err
		t, err := Shared()
		if err != nil {
			return nil, fmt.Errorf("%w; %w", notByKernel, err)
		}
		return t, nil
	})
	notByKernel error // set by running, before it returns
)

// Kernel names kernel text addresses by asking the running kernel: a BPF
// program formats each with bpf_snprintf's "%pS", the kernel's own lookup,
// as its backtraces print. Nothing of /proc/kallsyms is read: that costs
// tens of milliseconds and megabytes for a table of every symbol, where a
// stack prints twenty. It needs Linux 5.14 (syscall programs).
type Kernel struct {
	prog   *ebpf.Program
	format *ebpf.Map // "%pS", frozen: bpf_snprintf takes only a constant format
	out    *ebpf.Map // one value: a slot of text per address of a batch
	named  map[uint64]symbol
}

// symbol is what the kernel said of an address: its text as Table.Symbolize
// prints it, and the address of its function (zero where it named none).
type symbol struct {
	text  string
	start uint64
}

const (
	// batch is how many addresses one run of the program names.
	batch = 16
	// slotSize holds the longest "%pS": a name of KSYM_NAME_LEN (512),
	// "+0x" and "/0x" with 16 digits each, and " [module]" of
	// MODULE_NAME_LEN (56).
	slotSize = 640
)

// OpenKernel loads the program that has the kernel name addresses. An error
// says that it cannot, and why; /proc/kallsyms still can (Load).
func OpenKernel() (*Kernel, error) {
	k, err := openKernel()
	if err != nil {
		return nil, fmt.Errorf("kallsyms: the kernel cannot name addresses for a BPF program: %w", err)
	}
	return k, nil
}

func openKernel() (*Kernel, error) {
	format, err := ebpf.NewMap(&ebpf.MapSpec{Name: "skbstat_format", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1,
		Flags: unix.BPF_F_RDONLY_PROG, Contents: []ebpf.MapKV{{Key: uint32(0), Value: []byte("%pS\x00")}}})
	if err != nil {
		return nil, fmt.Errorf("format map: %w", err)
	}
	if err := format.Freeze(); err != nil {
		format.Close()
		return nil, fmt.Errorf("freeze the format map: %w", err)
	}
	out, err := ebpf.NewMap(&ebpf.MapSpec{Name: "skbstat_names", Type: ebpf.Array, KeySize: 4, ValueSize: batch * slotSize, MaxEntries: 1})
	if err != nil {
		format.Close()
		return nil, fmt.Errorf("names map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "skbstat_names", Type: ebpf.Syscall, Flags: unix.BPF_F_SLEEPABLE,
		License: "GPL", Instructions: namingProgram(format, out)})
	if err != nil {
		format.Close()
		out.Close()
		return nil, err
	}
	return &Kernel{prog: prog, format: format, out: out, named: map[uint64]symbol{}}, nil
}

// namingProgram formats each address of its context (batch of them; zero
// ends a batch) into its slot of out's value, and writes bpf_snprintf's
// return value over the address: the length with the final NUL, or an
// error. The slots are never cleared, so that return value is what tells a
// name of this run from a stale one.
func namingProgram(format, out *ebpf.Map) asm.Instructions {
	const ctx, slots, key, arg = asm.R6, asm.R7, -4, -16
	insns := asm.Instructions{
		asm.Mov.Reg(ctx, asm.R1),
		asm.StoreImm(asm.RFP, key, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, out.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(slots, asm.R0),
	}
	for i := range batch {
		off := int16(8 * i)
		insns = append(insns,
			asm.LoadMem(asm.R1, ctx, off, asm.DWord),
			asm.JEq.Imm(asm.R1, 0, "exit"),
			asm.StoreMem(asm.RFP, arg, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, slots),
			asm.Add.Imm(asm.R1, int32(i*slotSize)),
			asm.Mov.Imm(asm.R2, slotSize),
			asm.LoadMapValue(asm.R3, format.FD(), 0),
			asm.Mov.Reg(asm.R4, asm.RFP),
			asm.Add.Imm(asm.R4, arg),
			asm.Mov.Imm(asm.R5, 8),
			asm.FnSnprintf.Call(),
			asm.StoreMem(ctx, off, asm.R0, asm.DWord),
		)
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"), asm.Return())
}

// Close unloads the program and its maps.
func (k *Kernel) Close() error {
	return errors.Join(k.prog.Close(), k.format.Close(), k.out.Close())
}

// Learn names addrs, a run of the program per batch of those not named
// before, and forgets every other address: the caller passes all it will
// name until it learns again, and what Kernel holds stays that small.
func (k *Kernel) Learn(addrs []uint64) error {
	named := make(map[uint64]symbol, len(addrs))
	var unnamed []uint64
	for _, a := range addrs {
		if s, ok := k.named[a]; ok {
			named[a] = s
		} else if _, dup := named[a]; !dup && a != 0 {
			named[a] = symbol{}
			unnamed = append(unnamed, a)
		}
	}
	k.named = named
	for len(unnamed) > 0 {
		n := min(len(unnamed), batch)
		if err := k.name(unnamed[:n]); err != nil {
			return err
		}
		unnamed = unnamed[n:]
	}
	return nil
}

// name has the kernel name up to batch addresses, none of them zero.
func (k *Kernel) name(addrs []uint64) error {
	ctx := make([]byte, 8*batch)
	for i, a := range addrs {
		binary.NativeEndian.PutUint64(ctx[8*i:], a)
	}
	if _, err := k.prog.Run(&ebpf.RunOptions{Context: ctx, ContextOut: ctx}); err != nil {
		return fmt.Errorf("kallsyms: run the naming program: %w", err)
	}
	slots := make([]byte, batch*slotSize)
	if err := k.out.Lookup(uint32(0), &slots); err != nil {
		return fmt.Errorf("kallsyms: read the names: %w", err)
	}
	for i, a := range addrs {
		n := int64(binary.NativeEndian.Uint64(ctx[8*i:]))
		if n <= 0 || n > slotSize {
			continue // unnamed: printed as the address
		}
		k.named[a] = parseSymbol(a, slots[i*slotSize:i*slotSize+int(n)-1])
	}
	return nil
}

// parseSymbol reads the kernel's "%pS" of addr: "name+0xoff/0xsize", with
// " [module]" after it for a module's symbol, or "0x..." where the kernel
// knows no symbol.
func parseSymbol(addr uint64, text []byte) symbol {
	s := string(text)
	name, module := s, ""
	if i := strings.LastIndex(s, " ["); i > 0 && strings.HasSuffix(s, "]") {
		name, module = s[:i], s[i:]
	}
	plus := strings.LastIndexByte(name, '+')
	if plus <= 0 {
		return symbol{}
	}
	offText, _, _ := strings.Cut(name[plus+1:], "/")
	off, err := strconv.ParseUint(strings.TrimPrefix(offText, "0x"), 16, 64)
	if err != nil || !strings.HasPrefix(offText, "0x") || off > addr {
		return symbol{}
	}
	if module == "" && isBPFSymbol(name[:plus]) {
		module = " [bpf]"
	}
	return symbol{text: name[:plus+1] + offText + module, start: addr - off}
}

// isBPFSymbol reports whether name is that of a BPF program
// ("bpf_prog_<tag>", "bpf_prog_<tag>_<name>") or trampoline
// ("bpf_trampoline_<key>"), which "%pS" names without the module that
// /proc/kallsyms gives them, "bpf": Symbolize adds it, as Table's does.
func isBPFSymbol(name string) bool {
	if rest, ok := strings.CutPrefix(name, "bpf_prog_"); ok {
		tag, _, _ := strings.Cut(rest, "_")
		return len(tag) == 16 && strings.Trim(tag, "0123456789abcdef") == ""
	}
	if key, ok := strings.CutPrefix(name, "bpf_trampoline_"); ok {
		return key != "" && strings.Trim(key, "0123456789") == ""
	}
	return false
}

// lookup returns what the kernel said of addr, naming it alone if Learn did
// not; ok is false where the kernel named no symbol, or failed to.
func (k *Kernel) lookup(addr uint64) (symbol, bool) {
	s, ok := k.named[addr]
	if !ok && addr != 0 {
		k.named[addr] = symbol{} // tried once, whatever the outcome
		if err := k.name([]uint64{addr}); err == nil {
			s = k.named[addr]
		}
	}
	return s, s.start != 0
}

// Symbolize names addr as Table.Symbolize does: "sym+0xoff", or
// "sym+0xoff [module]"; "0x..." where the kernel knows no symbol.
func (k *Kernel) Symbolize(addr uint64) string {
	if s, ok := k.lookup(addr); ok {
		return s.text
	}
	return "0x" + strconv.FormatUint(addr, 16)
}

// Function returns the address of the function that addr is in; ok is false
// where Symbolize prints a raw address.
func (k *Kernel) Function(addr uint64) (start uint64, ok bool) {
	s, ok := k.lookup(addr)
	return s.start, ok
}
