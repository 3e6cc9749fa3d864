package kallsyms

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

func TestParseSymbol(t *testing.T) {
	const addr = 0xffffffff81000105
	for _, c := range []struct {
		text, want string
		start      uint64
	}{
		{"ip_rcv+0x5/0x100", "ip_rcv+0x5", addr - 5},
		{"ip_rcv+0x0/0x100", "ip_rcv+0x0", addr},
		{"veth_xmit+0x1a/0x3c0 [veth]", "veth_xmit+0x1a [veth]", addr - 0x1a},
		{"bpf_prog_6deef7357e7b4530_skbstat_drop+0x4c/0x120 [bpf]", "bpf_prog_6deef7357e7b4530_skbstat_drop+0x4c [bpf]", addr - 0x4c},
		{"bpf_prog_6deef7357e7b4530+0x4c/0x120", "bpf_prog_6deef7357e7b4530+0x4c [bpf]", addr - 0x4c},
		{"bpf_trampoline_6442537435+0x4c/0x120", "bpf_trampoline_6442537435+0x4c [bpf]", addr - 0x4c},
		{"bpf_prog_run_xdp+0x4c/0x120", "bpf_prog_run_xdp+0x4c", addr - 0x4c}, // the kernel's own
		{"bpf_trampoline_link_prog+0x4c/0x120", "bpf_trampoline_link_prog+0x4c", addr - 0x4c},
		{"0xffffffff81000105", "", 0},               // no symbol
		{"ip_rcv+5/0x100", "", 0},                   // not hexadecimal as %pS prints it
		{"ip_rcv+0x1ffffffff81000105/0x100", "", 0}, // before address zero
		{"+0x5/0x100", "", 0},
		{"", "", 0},
	} {
		got := parseSymbol(addr, []byte(c.text))
		if got.text != c.want || got.start != c.start {
			t.Errorf("parseSymbol(%q) = %q at %#x, want %q at %#x", c.text, got.text, got.start, c.want, c.start)
		}
	}
}

// openRunningKernel opens the kernel's naming, or skips where the kernel lacks
// what it needs (syscall programs, bpf_snprintf in them).
func openRunningKernel(t *testing.T) *Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loading BPF programs")
	}
	for _, probe := range []func() error{
		func() error { return features.HaveProgramType(ebpf.Syscall) },
		func() error { return features.HaveProgramHelper(ebpf.Syscall, asm.FnSnprintf) },
	} {
		if err := probe(); errors.Is(err, ebpf.ErrNotSupported) {
			t.Skipf("the kernel cannot name addresses for a BPF program: %v", err)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	k, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestKernelMatchesTable names addresses of the running kernel both ways,
// by the kernel and by /proc/kallsyms, and expects the same text and
// function for each: functions of the kernel and of modules, at their
// first byte and inside, and addresses of no symbol.
func TestKernelMatchesTable(t *testing.T) {
	k := openRunningKernel(t)
	tab, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if tab.Restricted() {
		t.Skip("kptr_restrict hides kernel addresses from /proc/kallsyms: nothing to compare with")
	}
	addrs := []uint64{1, 0x1000}
	modules := 0
	for i := 0; i < len(tab.addrs); i++ {
		_, module := tab.entry(tab.offs[i])
		if i%500 != 0 && (len(module) == 0 || modules >= 50) {
			continue
		}
		// Inside the function and not in a next one's preamble, which
		// the table does not hold (__pfx_): the kernel's first alias
		// at an address is the table's.
		if i+1 < len(tab.addrs) && tab.addrs[i+1]-tab.addrs[i] > 8 {
			addrs = append(addrs, tab.addrs[i], tab.addrs[i]+3)
			if len(module) > 0 {
				modules++
			}
		}
	}
	if err := k.Learn(addrs); err != nil {
		t.Fatal(err)
	}
	mismatches, named := 0, 0
	for _, a := range addrs {
		got, want := k.Symbolize(a), tab.Symbolize(a)
		gotStart, gotOK := k.Function(a)
		wantStart, wantOK := tab.Function(a)
		if gotOK {
			named++
		}
		if got != want || gotStart != wantStart || gotOK != wantOK {
			if mismatches++; mismatches <= 10 {
				t.Errorf("%#x: kernel names %q in the function at %#x (%v), /proc/kallsyms %q at %#x (%v)",
					a, got, gotStart, gotOK, want, wantStart, wantOK)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d addresses differ", mismatches, len(addrs))
	}
	if named != len(addrs)-2 {
		t.Errorf("the kernel named %d of %d addresses, want all but 0x1 and 0x1000", named, len(addrs))
	}
	t.Logf("%d addresses compared, those of %d functions of modules among them", len(addrs), modules)
}

// TestLearnForgets checks that Learn keeps only the addresses of its last
// call, and that an address it was not given is still named, alone.
func TestLearnForgets(t *testing.T) {
	k := openRunningKernel(t)
	tab, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := tab.Address("kfree_skb_reason")
	if !ok {
		addr, ok = tab.Address("sk_skb_reason_drop")
	}
	if !ok || tab.Restricted() {
		t.Skip("no drop function's address in /proc/kallsyms")
	}
	if err := k.Learn([]uint64{addr, addr + 1, 0, addr}); err != nil {
		t.Fatal(err)
	}
	if len(k.named) != 2 {
		t.Fatalf("after learning two addresses (a zero and a repeat ignored), %d held", len(k.named))
	}
	if err := k.Learn([]uint64{addr + 1}); err != nil {
		t.Fatal(err)
	}
	if _, held := k.named[addr]; held || len(k.named) != 1 {
		t.Fatalf("after learning one address, %d held, the forgotten one among them: %v", len(k.named), held)
	}
	if got, want := k.Symbolize(addr+2), tab.Symbolize(addr+2); got != want {
		t.Errorf("unlearned %#x named %q, want %q", addr+2, got, want)
	}
}
