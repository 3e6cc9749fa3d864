package layout

import (
	"errors"
	"fmt"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// FuncSkbArg returns the position (from 0) of the struct sk_buff * parameter
// of kernel function fn, from its BTF prototype. The error wraps
// ErrNotFound if the kernel's BTF has no function fn.
func (l *Layout) FuncSkbArg(fn string) (int, error) {
	return l.funcArg(fn, "sk_buff")
}

// FuncSockArg returns the position (from 0) of the struct sock * parameter of
// kernel function fn, as FuncSkbArg does for struct sk_buff *.
func (l *Layout) FuncSockArg(fn string) (int, error) {
	return l.funcArg(fn, "sock")
}

// funcArg returns the position of the first parameter of fn that points to
// struct structName. Static functions of the same name in several files must
// agree on it.
func (l *Layout) funcArg(fn, structName string) (int, error) {
	if l.btf == nil {
		return 0, fmt.Errorf("function %s: %w", fn, errNoBTF)
	}
	funcs := l.btf.Named(fn, rawbtf.KindFunc)
	if len(funcs) == 0 {
		return 0, fmt.Errorf("function %s: %w", fn, ErrNotFound)
	}
	index := -1
	for _, id := range funcs {
		i, err := l.pointerParam(id, structName)
		if err != nil {
			return 0, fmt.Errorf("function %s: %w", fn, err)
		}
		if i < 0 {
			return 0, fmt.Errorf("function %s has no struct %s * parameter", fn, structName)
		}
		if index >= 0 && i != index {
			return 0, fmt.Errorf("functions called %s take struct %s * at different positions (%d, %d)", fn, structName, index, i)
		}
		index = i
	}
	return index, nil
}

// pointerParam is the position of the first parameter of function id that
// points to struct structName, or -1.
func (l *Layout) pointerParam(id rawbtf.ID, structName string) (int, error) {
	f, err := l.btf.Type(id)
	if err != nil {
		return 0, err
	}
	proto, err := l.btf.Type(f.Ref)
	if err != nil {
		return 0, err
	}
	if proto.Kind != rawbtf.KindFuncProto {
		return 0, errors.New("no prototype")
	}
	return l.paramPointingTo(proto, structName)
}

// paramPointingTo is the position of the first parameter of prototype proto
// that points to struct structName, or -1.
func (l *Layout) paramPointingTo(proto *rawbtf.Type, structName string) (int, error) {
	for i, param := range proto.Params {
		if ok, err := l.isPointerTo(param.Type, structName); ok || err != nil {
			return i, err
		}
	}
	return -1, nil
}

// Where kprobe programs find a function's arguments: in struct pt_regs, the
// registers saved where the probe hit. kprobeArgRegs names, per kernel
// architecture (as GOARCH names it), the struct pt_regs members that hold the
// registers passing the first arguments, in the order of the kernel's
// calling convention (as regs_get_kernel_argument reads them, where the
// architecture has it), with their byte offsets. With BTF, the offsets
// come from the kernel's struct pt_regs by those names; the offsets here are
// for kernels without BTF, which are the ones that must use kprobes.

// ptReg is a struct pt_regs member that saves an argument register.
type ptReg struct {
	name   string
	index  int    // the element of array name; -1 where name is the register
	offset uint32 // offsetof(struct pt_regs, name[index]), for kernels without BTF
}

// regMember is the register saved in member name at offset.
func regMember(name string, offset uint32) ptReg { return ptReg{name, -1, offset} }

// regElem is the register saved in name[index] at offset.
func regElem(name string, index int, offset uint32) ptReg { return ptReg{name, index, offset} }

func (r ptReg) String() string {
	if r.index < 0 {
		return r.name
	}
	return fmt.Sprintf("%s[%d]", r.name, r.index)
}

// argRegs is the argument registers of one kernel architecture.
type argRegs struct {
	size uint32  // of a register: the kernel's unsigned long
	regs []ptReg // by argument position
}

var (
	// arch/mips/include/asm/ptrace.h: struct pt_regs opens with unsigned
	// long pad0[8] on 32-bit kernels (CONFIG_32BIT), then regs[32]. o32
	// passes a0-a3, regs[4..7] (Debian 6.1 mipsel's debug info agrees).
	mipsO32Regs = argRegs{4, []ptReg{regElem("regs", 4, 48), regElem("regs", 5, 52), regElem("regs", 6, 56),
		regElem("regs", 7, 60)}}
	// 64-bit MIPS kernels have no pad0: regs[32] opens struct pt_regs. n64
	// passes a0-a7, regs[4..11].
	mipsN64Regs = argRegs{8, []ptReg{regElem("regs", 4, 32), regElem("regs", 5, 40), regElem("regs", 6, 48), regElem("regs", 7, 56),
		regElem("regs", 8, 64), regElem("regs", 9, 72), regElem("regs", 10, 80), regElem("regs", 11, 88)}}
	// arch/powerpc/include/asm/ptrace.h: struct pt_regs is a union of struct
	// user_pt_regs and a struct that opens with unsigned long gpr[32]. Both
	// 64-bit ELF ABIs pass r3-r10, gpr[3..10].
	ppc64Regs = argRegs{8, []ptReg{regElem("gpr", 3, 24), regElem("gpr", 4, 32), regElem("gpr", 5, 40), regElem("gpr", 6, 48),
		regElem("gpr", 7, 56), regElem("gpr", 8, 64), regElem("gpr", 9, 72), regElem("gpr", 10, 80)}}
)

// kprobeArgRegs is keyed by the kernel's architecture. The byte order does
// not move a register, so mips and mipsle (and the other pairs) share a row.
var kprobeArgRegs = map[string]argRegs{
	// arch/x86/include/asm/ptrace.h, struct pt_regs for __i386__: bx, cx,
	// dx, si, di, bp, ax, ... The kernel is built with -mregparm=3
	// (arch/x86/Makefile): ax, dx, cx pass the first three arguments.
	"386": {4, []ptReg{regMember("ax", 24), regMember("dx", 8), regMember("cx", 4)}},
	// The same header, struct pt_regs for x86-64: r15, r14, r13, r12, bp, bx,
	// r11, r10, r9, r8, ax, cx, dx, si, di, ... The SysV ABI passes di, si,
	// dx, cx, r8, r9.
	"amd64": {8, []ptReg{regMember("di", 112), regMember("si", 104), regMember("dx", 96), regMember("cx", 88),
		regMember("r8", 72), regMember("r9", 64)}},
	// arch/arm/include/asm/ptrace.h: struct pt_regs is unsigned long
	// uregs[18]. AAPCS passes r0-r3, uregs[0..3] (Debian 6.1 armhf's debug
	// info agrees).
	"arm": {4, []ptReg{regElem("uregs", 0, 0), regElem("uregs", 1, 4), regElem("uregs", 2, 8), regElem("uregs", 3, 12)}},
	// arch/arm64/include/asm/ptrace.h: struct pt_regs opens with a union of
	// struct user_pt_regs and a struct of u64 regs[31], sp, pc, pstate.
	// AAPCS64 passes x0-x7, regs[0..7].
	"arm64": {8, []ptReg{regElem("regs", 0, 0), regElem("regs", 1, 8), regElem("regs", 2, 16), regElem("regs", 3, 24),
		regElem("regs", 4, 32), regElem("regs", 5, 40), regElem("regs", 6, 48), regElem("regs", 7, 56)}},
	// arch/loongarch/include/asm/ptrace.h: unsigned long regs[32] opens
	// struct pt_regs. a0-a7 are regs[4..11].
	"loong64": {8, []ptReg{regElem("regs", 4, 32), regElem("regs", 5, 40), regElem("regs", 6, 48), regElem("regs", 7, 56),
		regElem("regs", 8, 64), regElem("regs", 9, 72), regElem("regs", 10, 80), regElem("regs", 11, 88)}},
	"mips":     mipsO32Regs,
	"mipsle":   mipsO32Regs,
	"mips64":   mipsN64Regs,
	"mips64le": mipsN64Regs,
	"ppc64":    ppc64Regs,
	"ppc64le":  ppc64Regs,
	// arch/riscv/include/asm/ptrace.h: struct pt_regs is epc, ra, sp, gp,
	// tp, t0, t1, t2, s0, s1, a0, ..., a7, ..., one unsigned long each.
	// a0-a7 pass the arguments.
	"riscv64": {8, []ptReg{regMember("a0", 80), regMember("a1", 88), regMember("a2", 96), regMember("a3", 104),
		regMember("a4", 112), regMember("a5", 120), regMember("a6", 128), regMember("a7", 136)}},
	// arch/s390/include/asm/ptrace.h: struct pt_regs opens with a union of
	// user_pt_regs and a struct of unsigned long args[1], psw_t psw (two
	// unsigned long), unsigned long gprs[16]. r2-r6, gprs[2..6], pass the
	// arguments (Debian 6.1 s390x's debug info agrees).
	"s390x": {8, []ptReg{regElem("gprs", 2, 40), regElem("gprs", 3, 48), regElem("gprs", 4, 56), regElem("gprs", 5, 64),
		regElem("gprs", 6, 72)}},
}

// KprobeArg returns where a kprobe finds argument i (from 0) of the probed
// function in struct pt_regs, on kernel architecture arch (a GOARCH name):
// the offset of its register in the BTF's struct pt_regs, or without BTF
// the table's. arch is the kernel's, not this binary's: a 32-bit arm binary
// on an arm64 kernel needs arm64, and loads 8-byte registers.
func (l *Layout) KprobeArg(arch string, i int) (Field, error) {
	regs, ok := kprobeArgRegs[arch]
	if !ok {
		return Field{}, fmt.Errorf("kprobe arguments: architecture %q is not supported", arch)
	}
	if i < 0 || i >= len(regs.regs) {
		return Field{}, fmt.Errorf("kprobe arguments: %s passes %d arguments in registers, not argument %d", arch, len(regs.regs), i)
	}
	r := regs.regs[i]
	s, err := l.typeByName("pt_regs", rawbtf.KindStruct)
	if errors.Is(err, errNoBTF) {
		return Field{Offset: r.offset, Size: regs.size}, nil
	}
	if err != nil {
		return Field{}, fmt.Errorf("kprobe arguments: struct pt_regs: %w", err)
	}
	f, err := l.ptRegsField(s, r)
	if err == nil && f.Size != regs.size {
		err = fmt.Errorf("struct pt_regs member %s has %d bytes, not the %d of a register", r, f.Size, regs.size)
	}
	if err != nil {
		// The BTF describes no arch kernel: it is another kernel's, or
		// arch is wrong.
		return Field{}, fmt.Errorf("kprobe arguments on %s: %w", arch, err)
	}
	return f, nil
}

// ptRegsField is the position of register r in s, BTF's struct pt_regs.
func (l *Layout) ptRegsField(s *rawbtf.Type, r ptReg) (Field, error) {
	if r.index < 0 {
		return l.member(s, r.name)
	}
	m, bits, ok, err := l.findMember(s, r.name)
	if err != nil {
		return Field{}, err
	}
	if !ok {
		return Field{}, fmt.Errorf("struct %s has no member %s", s.Name, r.name)
	}
	arr, err := l.btf.Underlying(m.Type)
	if err != nil {
		return Field{}, err
	}
	if arr.Kind != rawbtf.KindArray || uint32(r.index) >= arr.Nelems {
		return Field{}, fmt.Errorf("struct %s member %s has no element %d", s.Name, r.name, r.index)
	}
	size, err := l.loadSize(arr.Ref)
	if err != nil {
		return Field{}, fmt.Errorf("struct %s member %s: %w", s.Name, r.name, err)
	}
	return Field{Offset: bits/8 + uint32(r.index)*size, Size: size}, nil
}

// HasFuncBTF reports whether l has BTF to give kernel functions' prototypes.
// Without it, argument positions must come from elsewhere.
func (l *Layout) HasFuncBTF() bool { return l.btf != nil }

// HasFunc reports whether the kernel's BTF describes function fn.
func (l *Layout) HasFunc(fn string) bool {
	return l.btf != nil && len(l.btf.Named(fn, rawbtf.KindFunc)) > 0
}

// FuncTarget is the BTF ID that a program attaching to kernel function fn
// (fentry) is loaded with: that of the one function fn in the running
// kernel's BTF.
func (l *Layout) FuncTarget(fn string) (uint32, error) {
	return l.target(fn, rawbtf.KindFunc)
}

// target is the ID of the one type of kind called name in the running
// kernel's BTF. A file's IDs are not the kernel's, and several functions of
// one name leave it unknown which one a program would attach to.
func (l *Layout) target(name string, kind rawbtf.Kind) (uint32, error) {
	switch {
	case l.btf == nil:
		return 0, errNoBTF
	case l.btfPath != "":
		return 0, fmt.Errorf("the layout is not from the running kernel's BTF but from %s", l.Source)
	}
	t, err := l.btf.One(name, kind)
	if err != nil {
		return 0, err
	}
	return uint32(t.ID), nil
}
