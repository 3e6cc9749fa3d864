package layout

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

func TestFuncArgs(t *testing.T) {
	l := newTestKernel().layout(t)
	tests := []struct {
		fn        string
		skb, sock int
		skbErr    string
		sockErr   string
	}{
		{fn: "ip_local_out", skb: 2, sock: 1},
		{fn: "tcp_sendmsg", skbErr: "has no struct sk_buff * parameter", sock: 0},
		{fn: "schedule", skbErr: "has no struct sk_buff * parameter", sockErr: "has no struct sock * parameter"},
		{fn: "kfree_skb", skbErr: "not found", sockErr: "not found"},
	}
	check := func(t *testing.T, what string, got int, err error, want int, wantErr string) {
		t.Helper()
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%s error %v, want one containing %q", what, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", what, got, err, want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.fn, func(t *testing.T) {
			skb, err := l.FuncSkbArg(tt.fn)
			check(t, "FuncSkbArg", skb, err, tt.skb, tt.skbErr)
			sock, err := l.FuncSockArg(tt.fn)
			check(t, "FuncSockArg", sock, err, tt.sock, tt.sockErr)
		})
	}
	if _, err := l.FuncSkbArg("no_such_function"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown function: error %v, want ErrNotFound", err)
	}
}

// TestFuncArgsLive checks functions whose skb position the original tool got
// wrong (ip_local_out) or that differ between rows.
func TestFuncArgsLive(t *testing.T) {
	l := kernelBTF(t)
	tests := []struct {
		fn        string
		skb, sock int
	}{
		{"ip_local_out", 2, 1},
		{"ip_output", 2, 1},
		{"tcp_v4_do_rcv", 1, 0},
	}
	for _, tt := range tests {
		skb, err := l.FuncSkbArg(tt.fn)
		if err != nil || skb != tt.skb {
			t.Errorf("FuncSkbArg(%s) = %d, %v; want %d", tt.fn, skb, err, tt.skb)
		}
		sock, err := l.FuncSockArg(tt.fn)
		if err != nil || sock != tt.sock {
			t.Errorf("FuncSockArg(%s) = %d, %v; want %d", tt.fn, sock, err, tt.sock)
		}
	}
	if _, err := l.FuncSkbArg("tcp_sendmsg"); err == nil {
		t.Error("FuncSkbArg(tcp_sendmsg) found an skb")
	}
}

// kprobeArgOffsets is every architecture's argument registers, written out
// from the kernel's struct pt_regs once more, and from the measured kernels
// (mips, arm, s390x), to check the table against.
var kprobeArgOffsets = map[string]struct {
	size    uint32
	offsets []uint32
}{
	"386":      {4, []uint32{24, 8, 4}},
	"amd64":    {8, []uint32{112, 104, 96, 88, 72, 64}},
	"arm":      {4, []uint32{0, 4, 8, 12}},
	"arm64":    {8, []uint32{0, 8, 16, 24, 32, 40, 48, 56}},
	"loong64":  {8, []uint32{32, 40, 48, 56, 64, 72, 80, 88}},
	"mips":     {4, []uint32{48, 52, 56, 60}},
	"mipsle":   {4, []uint32{48, 52, 56, 60}},
	"mips64":   {8, []uint32{32, 40, 48, 56, 64, 72, 80, 88}},
	"mips64le": {8, []uint32{32, 40, 48, 56, 64, 72, 80, 88}},
	"ppc64":    {8, []uint32{24, 32, 40, 48, 56, 64, 72, 80}},
	"ppc64le":  {8, []uint32{24, 32, 40, 48, 56, 64, 72, 80}},
	"riscv64":  {8, []uint32{80, 88, 96, 104, 112, 120, 128, 136}},
	"s390x":    {8, []uint32{40, 48, 56, 64, 72}},
}

// TestKprobeArgTable checks every architecture's registers without BTF,
// and that the positions past them are refused.
func TestKprobeArgTable(t *testing.T) {
	noBTF := &Layout{}
	if len(kprobeArgRegs) != len(kprobeArgOffsets) {
		t.Errorf("the table has %d architectures, the test %d", len(kprobeArgRegs), len(kprobeArgOffsets))
	}
	for arch, want := range kprobeArgOffsets {
		for i, offset := range want.offsets {
			got, err := noBTF.KprobeArg(arch, i)
			if err != nil || got != (Field{offset, want.size}) {
				t.Errorf("KprobeArg(%s, %d) = %+v, %v; want %+v", arch, i, got, err, Field{offset, want.size})
			}
		}
		for _, i := range []int{-1, len(want.offsets)} {
			wantErr := fmt.Sprintf("%s passes %d arguments in registers, not argument %d", arch, len(want.offsets), i)
			if _, err := noBTF.KprobeArg(arch, i); err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("KprobeArg(%s, %d) error %v, want one containing %q", arch, i, err, wantErr)
			}
		}
	}
	for _, arch := range []string{"sparc64", "x86_64", ""} {
		if _, err := noBTF.KprobeArg(arch, 0); err == nil || !strings.Contains(err.Error(), "is not supported") {
			t.Errorf("KprobeArg(%q, 0) error %v, want one saying it is not supported", arch, err)
		}
	}
}

// TestKprobeArgTableArrays checks that the table's array elements sit where
// their indexes put them: name[i] at the offset of name[0] plus i registers.
func TestKprobeArgTableArrays(t *testing.T) {
	for arch, regs := range kprobeArgRegs {
		base := map[string]uint32{}
		for _, r := range regs.regs {
			if r.index < 0 {
				continue
			}
			start := r.offset - uint32(r.index)*regs.size
			if b, ok := base[r.name]; ok && b != start {
				t.Errorf("%s: %s at %d puts %s[0] at %d, not %d", arch, r, r.offset, r.name, start, b)
			}
			base[r.name] = start
		}
	}
}

// TestKprobeArgLive checks that the running kernel's BTF puts the argument
// registers where the table does.
func TestKprobeArgLive(t *testing.T) {
	l := kernelBTF(t)
	want, ok := kprobeArgOffsets[runtime.GOARCH]
	if !ok {
		t.Skipf("no argument registers for %s", runtime.GOARCH)
	}
	for i := range want.offsets {
		fromBTF, err := l.KprobeArg(runtime.GOARCH, i)
		if err != nil {
			t.Fatal(err)
		}
		fromTable, _ := (&Layout{}).KprobeArg(runtime.GOARCH, i)
		if fromBTF != fromTable {
			t.Errorf("argument %d: BTF's struct pt_regs has %s at %+v, the table at %+v",
				i, kprobeArgRegs[runtime.GOARCH].regs[i], fromBTF, fromTable)
		}
	}
}

// mipsPtRegs is a 32-bit MIPS kernel's struct pt_regs: pad0 before the
// registers, padded by pad more registers than the kernel's 8, so that BTF
// and the table disagree where pad is not 0.
func mipsPtRegs(ulong *btf.Int, pad uint32) *btf.Struct {
	array := func(n uint32) *btf.Array { return &btf.Array{Index: ulong, Type: ulong, Nelems: n} }
	pad0 := (8 + pad) * 4
	return &btf.Struct{Name: "pt_regs", Size: pad0 + 32*4 + 4, Members: []btf.Member{
		{Name: "pad0", Type: array(8 + pad), Offset: 0},
		{Name: "regs", Type: array(32), Offset: btf.Bits(pad0 * 8)},
		{Name: "cp0_status", Type: ulong, Offset: btf.Bits((pad0 + 32*4) * 8)},
	}}
}

// TestKprobeArgBTF reads the argument registers from a hand-built 32-bit
// MIPS kernel's BTF: from BTF's struct pt_regs, not from the table, and
// only where BTF and the architecture agree.
func TestKprobeArgBTF(t *testing.T) {
	for _, c := range []struct {
		name    string
		pad     uint32
		arch    string
		i       int
		want    Field
		wantErr string
	}{
		{name: "as the table", arch: "mipsle", i: 0, want: Field{48, 4}},
		{name: "as the table", arch: "mips", i: 3, want: Field{60, 4}},
		{name: "moved", pad: 2, arch: "mipsle", i: 1, want: Field{60, 4}},
		{name: "past the registers", arch: "mips", i: 4, wantErr: "mips passes 4 arguments in registers, not argument 4"},
		{name: "64-bit kernel", arch: "mips64le", i: 0, wantErr: "kprobe arguments on mips64le: struct pt_regs member regs[4] has 4 bytes, not the 8 of a register"},
		{name: "another architecture", arch: "arm", i: 0, wantErr: "kprobe arguments on arm: struct pt_regs has no member uregs"},
		{name: "another architecture", arch: "riscv64", i: 0, wantErr: "kprobe arguments on riscv64: struct pt_regs has no member a0"},
	} {
		k := newTestKernel()
		k.others = append(k.others, mipsPtRegs(k.ulong, c.pad))
		got, err := k.layout(t).KprobeArg(c.arch, c.i)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: KprobeArg(%s, %d) error %v, want one containing %q", c.name, c.arch, c.i, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: KprobeArg(%s, %d) = %+v, %v; want %+v", c.name, c.arch, c.i, got, err, c.want)
		}
	}
	if _, err := newTestKernel().layout(t).KprobeArg("mips", 0); err == nil || !strings.Contains(err.Error(), "struct pt_regs: not found") {
		t.Errorf("BTF without struct pt_regs: error %v, want one saying it is not found", err)
	}
}

// TestSockCommonLive checks the socket fields socket-level rows read: the
// remote IPv4 address opens struct sock_common (skc_addrpair), and the
// IPv6 addresses are whole 16-byte members.
func TestSockCommonLive(t *testing.T) {
	l := kernelBTF(t)
	sk, err := l.SockCommon()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    Field
		size uint32
	}{{"skc_family", sk.Family, 2}, {"skc_num", sk.Num, 2}, {"skc_dport", sk.Dport, 2},
		{"skc_daddr", sk.Daddr, 4}, {"skc_rcv_saddr", sk.RcvSaddr, 4},
		{"skc_v6_daddr", sk.V6Daddr, 16}, {"skc_v6_rcv_saddr", sk.V6RcvSaddr, 16}} {
		if c.f.Size != c.size {
			t.Errorf("%s: size %d, want %d", c.name, c.f.Size, c.size)
		}
	}
	if sk.Daddr.Offset != 0 || sk.RcvSaddr.Offset != 4 {
		t.Errorf("skc_daddr at %d, skc_rcv_saddr at %d; want 0 and 4", sk.Daddr.Offset, sk.RcvSaddr.Offset)
	}
	if sk.V6RcvSaddr.Offset != sk.V6Daddr.Offset+16 {
		t.Errorf("skc_v6_rcv_saddr at %d, want right after skc_v6_daddr at %d", sk.V6RcvSaddr.Offset, sk.V6Daddr.Offset)
	}
}

func TestHasFunc(t *testing.T) {
	l := kernelBTF(t)
	for fn, want := range map[string]bool{"ip_rcv": true, "no_such_function_xyz": false, "sk_buff": false} {
		if got := l.HasFunc(fn); got != want {
			t.Errorf("HasFunc(%q) = %v, want %v", fn, got, want)
		}
	}
	if (&Layout{}).HasFunc("ip_rcv") {
		t.Error("a Layout without BTF has no functions")
	}
}
