package progs

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/layout"
)

// TestWantedFuncs checks that the filter chooses the function rows as the
// original did.
func TestWantedFuncs(t *testing.T) {
	for _, c := range []struct {
		opts     filter.Options
		ifindex  int
		netns    uint32
		in, out  bool
		want     []string // rows that must be chosen
		not      []string // rows that must not
		excluded []string
	}{
		{in: true, want: []string{"ip_rcv", "ipv6_rcv", "tcp_v4_rcv", "udpv6_rcv", "icmp_rcv", "tcp_recvmsg"}, not: []string{"ip_output"}},
		{out: true, want: []string{"ip_output", "ip6_finish_output2", "udp_sendmsg", "tcp_sendmsg"}, not: []string{"ip_rcv"}},
		{opts: filter.Options{Saddr: "10.0.0.1"}, in: true, out: true,
			want: []string{"ip_rcv", "udp_rcv", "ip_local_out", "tcp_recvmsg"}, not: []string{"ipv6_rcv", "udpv6_rcv", "__ip6_local_out"}},
		{opts: filter.Options{Addr: "fd00::/8"}, in: true,
			want: []string{"ipv6_rcv", "tcp_v6_rcv", "tcp_recvmsg"}, not: []string{"ip_rcv", "udp_recvmsg"}},
		{opts: filter.Options{Proto: "udp"}, in: true, out: true,
			want: []string{"udp_rcv", "udpv6_rcv", "udp_recvmsg", "udp_sendmsg", "ip_rcv"}, not: []string{"tcp_v4_rcv", "icmp_rcv", "tcp_sendmsg", "icmpv6_rcv"}},
		{opts: filter.Options{Port: "53"}, in: true,
			want: []string{"udp_rcv", "tcp_v4_rcv"}, not: []string{"icmp_rcv", "icmpv6_rcv"}},
		{ifindex: 2, in: true, out: true, want: []string{"ip_rcv"}, not: []string{"tcp_recvmsg", "udp_sendmsg"},
			excluded: []string{"tcp_recvmsg", "udp_recvmsg", "tcp_sendmsg", "udp_sendmsg"}},
		// --netns alone: socket-level rows filter on the socket's namespace.
		{netns: 4026531840, in: true, out: true, want: []string{"ip_rcv", "tcp_recvmsg", "udp_sendmsg"}},
	} {
		f, err := filter.Parse(c.opts)
		if err != nil {
			t.Fatal(err)
		}
		f.Ifindex, f.Netns = c.ifindex, c.netns
		fns, excluded := wantedFuncs(Config{Filter: f, Ingress: c.in, Egress: c.out})
		chosen := map[string]bool{}
		for _, k := range fns {
			chosen[k.name] = true
		}
		for _, name := range c.want {
			if !chosen[name] {
				t.Errorf("%+v: %s not chosen", c.opts, name)
			}
		}
		for _, name := range c.not {
			if chosen[name] {
				t.Errorf("%+v: %s chosen", c.opts, name)
			}
		}
		var names []string
		for _, a := range excluded {
			names = append(names, a.Probe)
		}
		if strings.Join(names, " ") != strings.Join(c.excluded, " ") {
			t.Errorf("%+v: excluded %v, want %v", c.opts, names, c.excluded)
		}
	}
}

func TestParseFunc(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    funcOption
		wantErr string
	}{
		{in: "ip_send_skb", want: funcOption{"ip_send_skb", -1}},
		{in: "ip_send_skb:1", want: funcOption{"ip_send_skb", 1}},
		{in: "ip6_pkt_drop.isra.0:0", want: funcOption{"ip6_pkt_drop.isra.0", 0}},
		{in: "", wantErr: "no function name"},
		{in: ":1", wantErr: "no function name"},
		{in: "ip_send_skb:", wantErr: `"" is not an argument position`},
		{in: "ip_send_skb:x", wantErr: `"x" is not an argument position`},
		{in: "ip_send_skb:-1", wantErr: `"-1" is not an argument position`},
		{in: "ip_send_skb:+1", wantErr: `"+1" is not an argument position`},
		{in: "ip_send_skb:1:2", wantErr: `"1:2" is not an argument position`},
		{in: "ip_send_skb:99999999999", wantErr: `"99999999999" is not an argument position`},
	} {
		got, err := parseFunc(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseFunc(%q) = %+v, %v; want an error containing %q", c.in, got, err, c.wantErr)
			}
			// CheckFunc refuses it, with BTF or without.
			if err := CheckFunc(&layout.Layout{}, c.in); err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("CheckFunc(%q) = %v, want an error containing %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseFunc(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// registerArgs is how many arguments a kprobe reads from registers on this
// kernel.
func registerArgs(t *testing.T) int {
	t.Helper()
	n := 0
	for ; ; n++ {
		if _, err := (&layout.Layout{}).KprobeArg(kernelArch(), n); err != nil {
			break
		}
	}
	if n == 0 {
		t.Fatalf("no kprobe argument registers for %q", kernelArch())
	}
	return n
}

// TestCheckFuncWithoutBTF checks that without BTF -f needs the argument's
// position, one that a kprobe reads from a register.
func TestCheckFuncWithoutBTF(t *testing.T) {
	noBTF := &layout.Layout{}
	err := CheckFunc(noBTF, "ip_send_skb")
	want := "this kernel has no BTF to tell the struct sk_buff * argument: give its position, -f ip_send_skb:N (N from 0)"
	if err == nil || err.Error() != want {
		t.Errorf("plain -f without BTF: error %v, want %q", err, want)
	}
	n := registerArgs(t)
	for i := 0; i < n; i++ {
		if err := CheckFunc(noBTF, fmt.Sprintf("ip_send_skb:%d", i)); err != nil {
			t.Errorf("-f ip_send_skb:%d without BTF: %v", i, err)
		}
	}
	err = CheckFunc(noBTF, fmt.Sprintf("ip_send_skb:%d", n))
	if want := fmt.Sprintf("passes %d arguments in registers, not argument %d", n, n); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("-f ip_send_skb:%d without BTF: error %v, want one containing %q", n, err, want)
	}
}

// TestCheckFuncLive checks -f against the running kernel's BTF.
func TestCheckFuncLive(t *testing.T) {
	l, err := layout.Kernel()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	for _, c := range []struct {
		value   string
		wantErr string
	}{
		{value: "ip_send_skb"},
		{value: "ip_send_skb:1"},
		{value: "ip_send_skb:0", wantErr: "the kernel's BTF puts the struct sk_buff * argument of ip_send_skb at position 1, not 0"},
		{value: "schedule:0", wantErr: "function schedule has no struct sk_buff * parameter"},
		{value: "no_such_function_xyz", wantErr: "no kernel function no_such_function_xyz in the kernel's BTF"},
		// A function that BTF lacks may still be in the kernel: the
		// position given is taken.
		{value: "no_such_function_xyz:1"},
		{value: "no_such_function_xyz:99", wantErr: "arguments in registers, not argument 99"},
	} {
		err := CheckFunc(l, c.value)
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("CheckFunc(%s) = %v, want error %q", c.value, err, c.wantErr)
		}
	}
}

// TestWantedFuncsNamed checks that -f rows print the plain name and carry
// the position given.
func TestWantedFuncsNamed(t *testing.T) {
	f, err := filter.Parse(filter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fns, excluded := wantedFuncs(Config{Filter: f, Funcs: []string{"ip_send_skb:1", "bad:x", "udp_send_skb"}})
	want := []kernelFunc{
		{name: "ip_send_skb", section: Func, rank: 0, tableArg: 1},
		{name: "udp_send_skb", section: Func, rank: 2, tableArg: -1},
	}
	if !slices.Equal(fns, want) {
		t.Errorf("wantedFuncs = %+v, want %+v", fns, want)
	}
	if len(excluded) != 1 || excluded[0].Probe != "bad:x" || excluded[0].Err == nil {
		t.Errorf("excluded %+v, want bad:x with its error", excluded)
	}
}

func TestArchOfMachine(t *testing.T) {
	for _, c := range []struct {
		machine      string
		littleEndian bool
		want         string
	}{
		{"x86_64", true, "amd64"},
		{"i386", true, "386"},
		{"i686", true, "386"},
		{"aarch64", true, "arm64"},
		{"armv8l", true, "arm64"}, // a 32-bit process in PER_LINUX32 on arm64
		{"armv7l", true, "arm"},
		{"armv6l", true, "arm"},
		{"armv5tel", true, "arm"},
		{"loongarch64", true, "loong64"},
		// uname says mips and mips64 in both byte orders.
		{"mips", true, "mipsle"},
		{"mips", false, "mips"},
		{"mips64", true, "mips64le"},
		{"mips64", false, "mips64"},
		{"ppc64le", true, "ppc64le"},
		{"ppc64", false, "ppc64"},
		{"riscv64", true, "riscv64"},
		{"s390x", false, "s390x"},
	} {
		got := archOfMachine(c.machine, c.littleEndian)
		if got != c.want {
			t.Errorf("archOfMachine(%q, little endian %v) = %q, want %q", c.machine, c.littleEndian, got, c.want)
		}
		if _, err := (&layout.Layout{}).KprobeArg(got, 0); err != nil {
			t.Errorf("%s: %v", c.machine, err)
		}
	}
}

// TestKernelArch checks the running kernel's architecture: a native test
// binary's own.
func TestKernelArch(t *testing.T) {
	if strconv.IntSize == 32 {
		t.Skip("a 32-bit test binary may run on a 64-bit kernel")
	}
	if got := kernelArch(); got != runtime.GOARCH {
		t.Errorf("kernelArch() = %q, want %q", got, runtime.GOARCH)
	}
}

// TestKprobeRegisterSize checks that a kprobe loads the kernel's register
// size: 8 bytes for a 32-bit mipsle binary on a 64-bit MIPS kernel, 4 on a
// 32-bit one.
func TestKprobeRegisterSize(t *testing.T) {
	for _, c := range []struct {
		arch   string
		offset int16
		size   asm.Size
	}{{"mips64le", 32, asm.DWord}, {"mipsle", 48, asm.Word}, {"arm64", 0, asm.DWord}, {"arm", 0, asm.Word}} {
		target := funcTarget{symbol: "ip_send_skb", arg: 0, layout: &layout.Layout{}}
		h, err := target.kprobe(c.arch)
		if err != nil {
			t.Fatal(err)
		}
		load := h.loadArg(asm.R1)[0]
		if load.OpCode != asm.LoadMemOp(c.size) || load.Offset != c.offset {
			t.Errorf("%s: argument loaded with %v, want %v at offset %d", c.arch, load, asm.LoadMem(asm.R1, asm.R6, c.offset, c.size), c.offset)
		}
	}
}

// TestSocketRowsVerify loads the socket-level rows' programs as kprobes,
// without attaching them (which needs kprobes: the VM kernel matrix does),
// with filters that read the socket's addresses, ports and namespace: the
// verifier must accept them.
func TestSocketRowsVerify(t *testing.T) {
	l := kernelLayout(t)
	rows, err := ebpf.NewMap(rowsSpec(1))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	udp := filter.Protocol{Number: protoUDP, Set: true}
	for _, f := range []filter.Filter{
		{Netns: 4026531840},
		{Netns: 4026531840, Proto: udp, Dport: filter.PortRange{Lo: 53, Hi: 53, Set: true}},
		{Addr: netip.MustParsePrefix("fd00::/8"), Netns: 4026531840},
	} {
		for _, k := range kernelFuncs {
			if !k.sock {
				continue
			}
			target := funcTarget{fn: k.name, symbol: k.name, arg: k.tableArg, sock: true, proto: k.proto, received: k.section == Ingress, layout: l}
			h, err := target.kprobe(kernelArch())
			if err != nil {
				t.Fatal(err)
			}
			g, err := program(&probe{section: k.section, name: k.name, fn: &target}, h, Config{Layout: l, Filter: f}, 1)
			if err != nil {
				t.Fatal(err)
			}
			insns := g.insns
			if err := insns.AssociateMap(rowsMap, rows); err != nil {
				t.Fatal(err)
			}
			spec := &ebpf.ProgramSpec{Name: "skbstat_verify", Instructions: insns, License: "GPL"}
			h.configure(spec)
			prog, err := loadProgram(spec, h.target())
			if err != nil {
				t.Fatalf("%s with %q: %v", k.name, f, err)
			}
			prog.Close()
		}
	}
}

// TestLackFoundWhileAttaching loads the INGRESS rows without first asking
// which mechanisms the kernel has, so that the attaches find out:
// a kernel that refuses fentry (as this machine's does, EPERM) must fail
// every function row with the first row's reason for fentry, as if tried
// one after another, and leave only the tracepoint rows' programs and links
// behind.
func TestLackFoundWhileAttaching(t *testing.T) {
	l := kernelLayout(t)
	f, err := filter.Parse(filter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Layout: l, Filter: f, Ingress: true, Attach: Auto}
	p, err := newPlan(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	target, err := l.FuncTarget("bpf_fentry_test1")
	if err != nil {
		t.Fatal(err)
	}
	if lack := kernelLacks(Fentry, tryFentry(target)); lack == nil {
		t.Skip("fentry attaches on this kernel: the test needs one that refuses it")
	}
	s, err := load(cfg, p, StartKernel(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, a := range s.Attached {
		if a.Mechanism != "tp_btf" && a.Mechanism != "raw tracepoint" && a.Mechanism != "perf tracepoint" {
			t.Errorf("%s attached as %s on a kernel that refuses fentry", a.Probe, a.Mechanism)
		}
	}
	if len(s.progs) != len(s.Attached) || len(s.links) != len(s.Attached) {
		t.Errorf("%d programs and %d links for %d attached probes", len(s.progs), len(s.links), len(s.Attached))
	}
	var first string
	funcs := 0
	for _, a := range s.Skipped {
		var tried attempts
		if !errors.As(a.Err, &tried) {
			continue // not in this kernel
		}
		funcs++
		fentry := tried[0].Error()
		if first == "" {
			first = fentry
		} else if fentry != first {
			t.Errorf("%s: %s, want the first row's reason: %s", a.Probe, fentry, first)
		}
	}
	if funcs < 10 {
		t.Fatalf("%d function rows failed, want every INGRESS function row this kernel has", funcs)
	}
	if !strings.Contains(first, "skbstat_fn0") {
		t.Errorf("the fentry reason is %q, want the first program's (skbstat_fn0)", first)
	}
	t.Logf("%d function rows: %s", funcs, first)
}
