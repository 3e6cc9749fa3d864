package layout

import (
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// FuncSkbArg returns the position (from 0) of the struct sk_buff * parameter
// of kernel function fn, from its BTF prototype. The error wraps
// btf.ErrNotFound if the kernel's BTF has no function fn.
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
	if l.spec == nil {
		return 0, fmt.Errorf("function %s: %w", fn, errNoBTF)
	}
	types, err := l.spec.AnyTypesByName(fn)
	if err != nil {
		return 0, fmt.Errorf("function %s: %w", fn, err)
	}
	index, funcs := -1, 0
	for _, typ := range types {
		f, ok := typ.(*btf.Func)
		if !ok {
			continue
		}
		funcs++
		proto, ok := btf.As[*btf.FuncProto](f.Type)
		if !ok {
			return 0, fmt.Errorf("function %s has no prototype", fn)
		}
		i := -1
		for j, param := range proto.Params {
			if isPointerTo(param.Type, structName) {
				i = j
				break
			}
		}
		if i < 0 {
			return 0, fmt.Errorf("function %s has no struct %s * parameter", fn, structName)
		}
		if index >= 0 && i != index {
			return 0, fmt.Errorf("functions called %s take struct %s * at different positions (%d, %d)", fn, structName, index, i)
		}
		index = i
	}
	if funcs == 0 {
		return 0, fmt.Errorf("function %s: %w", fn, btf.ErrNotFound)
	}
	return index, nil
}

// Where kprobe programs find a function's arguments: the byte offsets in
// struct pt_regs of the registers that pass the first arguments, per kernel
// architecture (named as GOARCH names them). This is the one layout fact
// that does not come from BTF: kernels without BTF need it, too.
var ptRegsArgs = map[string]struct {
	offsets []uint32
	size    uint32
}{
	// x86-64: di, si, dx, cx, r8, r9 of arch/x86/include/asm/ptrace.h.
	"amd64": {[]uint32{112, 104, 96, 88, 72, 64}, 8},
	// arm64: x0..x7, regs[0..7] at the start of struct pt_regs.
	"arm64": {[]uint32{0, 8, 16, 24, 32, 40, 48, 56}, 8},
	// 32-bit arm: r0..r3, uregs[0..3].
	"arm": {[]uint32{0, 4, 8, 12}, 4},
	// riscv64: a0..a7, after epc, ra, sp, gp, tp, t0..t2, s0, s1.
	"riscv64": {[]uint32{80, 88, 96, 104, 112, 120, 128, 136}, 8},
}

// PtRegsArg returns where struct pt_regs holds argument i (from 0) of a
// probed function on kernel architecture arch (amd64, arm64, arm, riscv64).
// arch is the kernel's: a 32-bit arm binary on an arm64 kernel needs arm64.
func PtRegsArg(arch string, i int) (Field, error) {
	regs, ok := ptRegsArgs[arch]
	if !ok {
		return Field{}, fmt.Errorf("kprobe arguments: architecture %q is not supported", arch)
	}
	if i < 0 || i >= len(regs.offsets) {
		return Field{}, fmt.Errorf("kprobe arguments: %s passes %d arguments in registers, not argument %d", arch, len(regs.offsets), i)
	}
	return Field{Offset: regs.offsets[i], Size: regs.size}, nil
}

// HasFunc reports whether the kernel's BTF describes function fn.
func (l *Layout) HasFunc(fn string) bool {
	if l.spec == nil {
		return false
	}
	types, err := l.spec.AnyTypesByName(fn)
	if err != nil {
		return false
	}
	for _, typ := range types {
		if _, ok := typ.(*btf.Func); ok {
			return true
		}
	}
	return false
}
