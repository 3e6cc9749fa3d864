package layout

import (
	"errors"
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
	if _, err := l.FuncSkbArg("no_such_function"); !errors.Is(err, btf.ErrNotFound) {
		t.Errorf("unknown function: error %v, want btf.ErrNotFound", err)
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

func TestPtRegsArg(t *testing.T) {
	tests := []struct {
		arch    string
		i       int
		want    Field
		wantErr string
	}{
		{arch: "amd64", i: 0, want: Field{112, 8}},
		{arch: "amd64", i: 5, want: Field{64, 8}},
		{arch: "amd64", i: 6, wantErr: "passes 6 arguments in registers, not argument 6"},
		{arch: "arm64", i: 2, want: Field{16, 8}},
		{arch: "arm", i: 3, want: Field{12, 4}},
		{arch: "arm", i: 4, wantErr: "passes 4 arguments"},
		{arch: "riscv64", i: 0, want: Field{80, 8}},
		{arch: "riscv64", i: 7, want: Field{136, 8}},
		{arch: "mips", i: 0, wantErr: `architecture "mips" is not supported`},
		{arch: "arm64", i: -1, wantErr: "not argument -1"},
	}
	for _, tt := range tests {
		got, err := PtRegsArg(tt.arch, tt.i)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("PtRegsArg(%s, %d) error %v, want one containing %q", tt.arch, tt.i, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("PtRegsArg(%s, %d) = %+v, %v; want %+v", tt.arch, tt.i, got, err, tt.want)
		}
	}
}

// TestPtRegsArgLive checks the running architecture's table entry against
// struct pt_regs in the kernel's BTF.
func TestPtRegsArgLive(t *testing.T) {
	registers := map[string][]string{
		"amd64":   {"di", "si", "dx", "cx", "r8", "r9"},
		"riscv64": {"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"},
	}[runtime.GOARCH]
	if registers == nil {
		t.Skipf("pt_regs names its argument registers only on amd64 and riscv64 (an array elsewhere); this test binary is %s", runtime.GOARCH)
	}
	l := kernelBTF(t)
	var regs *btf.Struct
	if err := l.typeByName("pt_regs", &regs); err != nil {
		t.Fatal(err)
	}
	for i, name := range registers {
		want, err := l.member(regs, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := PtRegsArg(runtime.GOARCH, i)
		if err != nil || got != want {
			t.Errorf("PtRegsArg(%s, %d) = %+v, %v; BTF pt_regs.%s is %+v", runtime.GOARCH, i, got, err, name, want)
		}
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
