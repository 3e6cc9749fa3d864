package kallsyms

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func parseFile(t testing.TB, name string) *Table {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Parse(f)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return tab
}

func TestSymbolize(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms.txt")
	if tab.Restricted() {
		t.Fatal("Restricted() = true for a table with addresses")
	}
	for _, tc := range []struct {
		addr uint64
		want string
	}{
		{0xffffffff81ff69a0, "ip_rcv_finish+0x0"},
		{0xffffffff81ff69a4, "ip_rcv_finish+0x4"},
		{0xffffffff81ff6a80 + 0x52, "ip_rcv+0x52"},
		{0xffffffff81ff6995, "ip_rcv_core+0xb85"},                // __pfx_ip_rcv_finish left out
		{0xffffffff81207611, "abort+0x1"},                        // weak symbol
		{0xffffffff81000000, "srso_alias_untrain_ret+0x0"},       // first of three aliases
		{0xffffffff81000005, "srso_alias_untrain_ret+0x5"},       // first of three aliases
		{0xffffffff81ff69f0 + 0x1f, "ip_rcv_finish.isra.0+0x1f"}, // clone
		{0xffffffff82400010, "_etext+0x1f6688"},                  // data symbol __start_rodata ignored
		{0xffffffff90000000, "vlsi_router_probe+0xc80ce00"},      // last kernel symbol
		{0xffffffffc0a01000, "veth_xmit+0x0 [veth]"},             // module
		{0xffffffffc0a0102a, "veth_xmit+0x2a [veth]"},            // module
		{0xffffffffc0a00010, "veth_get_stats64+0x10 [veth]"},     // listed after a higher address
		{0xffffffffc0a03004, "init_once+0x804 [veth]"},           // module data symbol ignored
		{0xffffffffc0100040, "bpf_prog_6deef7357e7b4530_sd_fw_egress+0x40 [bpf]"},
		{0xffffffffc090003a, "nft_do_chain+0x3a [nf_tables]"},                         // exported module symbol (T)
		{0xffffffffc0900812, "nft_immediate_eval+0x12 [nf_tables]"},                   // module
		{0xffffffffc08ffff8, "bpf_prog_6deef7357e7b4530_sd_fw_egress+0x7ffff8 [bpf]"}, // __pfx_nft_do_chain left out
		{0xffffffffffffffff, "init_once+0x3f5fd7ff [veth]"},                           // beyond the last symbol
		{0xffffffff80ffffff, "0xffffffff80ffffff"},                                    // below the first symbol
		{0x1000, "0x1000"}, // absolute symbol cpu_debug_store ignored
		{0, "0x0"},
	} {
		if got := tab.Symbolize(tc.addr); got != tc.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestFunction checks that addresses in one function, aliases and module
// functions included, give that function's address, and that an address
// Symbolize cannot name gives none.
func TestFunction(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms.txt")
	for _, tc := range []struct {
		addr, want uint64
		ok         bool
	}{
		{0xffffffff81ff6a80, 0xffffffff81ff6a80, true},
		{0xffffffff81ff6a80 + 0x52, 0xffffffff81ff6a80, true},
		{0xffffffff81000005, 0xffffffff81000000, true}, // three aliases: one function
		{0xffffffffc090003a, 0xffffffffc0900000, true}, // module
		{0xffffffffc0900812, 0xffffffffc0900800, true}, // module
		{0xffffffff80ffffff, 0, false},                 // below the first symbol
	} {
		if got, ok := tab.Function(tc.addr); got != tc.want || ok != tc.ok {
			t.Errorf("Function(%#x) = %#x, %v, want %#x, %v", tc.addr, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := parseFile(t, "testdata/restricted.txt").Function(0xffffffff81ff6ad2); ok {
		t.Errorf("restricted table: Function = %#x, true; want false", got)
	}
}

func TestRestricted(t *testing.T) {
	tab := parseFile(t, "testdata/restricted.txt")
	if !tab.Restricted() {
		t.Fatal("Restricted() = false for all-zero addresses")
	}
	for addr, want := range map[uint64]string{
		0xffffffff81ff69a4: "0xffffffff81ff69a4",
		0xffffffffc0a01000: "0xffffffffc0a01000",
		0:                  "0x0",
	} {
		if got := tab.Symbolize(addr); got != want {
			t.Errorf("Symbolize(%#x) = %q, want %q", addr, got, want)
		}
	}
	if addr, ok := tab.Address("ip_rcv"); addr != 0 || !ok {
		t.Errorf("Address(ip_rcv) = %#x, %v, want 0, true", addr, ok)
	}
	if got, want := tab.Clones("ip_rcv_finish"), []string{"ip_rcv_finish.constprop.0.isra.0", "ip_rcv_finish.isra.0"}; !slices.Equal(got, want) {
		t.Errorf("Clones(ip_rcv_finish) = %q, want %q", got, want)
	}
}

func TestAddress(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms.txt")
	for _, tc := range []struct {
		name string
		addr uint64
		ok   bool
	}{
		{"ip_rcv", 0xffffffff81ff6a80, true},
		{"ip_rcv_finish", 0xffffffff81ff69a0, true},
		{"ip_rcv_finish.isra.0", 0xffffffff81ff69f0, true},
		{"abort", 0xffffffff81207610, true},
		{"_text", 0xffffffff81000000, true},
		{"veth_xmit", 0xffffffffc0a01000, true},
		{"nft_do_chain", 0xffffffffc0900000, true},
		{"init_once", 0xffffffff81300000, true}, // the kernel's, listed before the module's
		{"bpf_prog_6deef7357e7b4530_sd_fw_egress", 0xffffffffc0100000, true},
		{"ip_rc", 0, false},               // prefix of a name
		{"rcv", 0, false},                 // suffix of a name
		{"veth", 0, false},                // a module, not a symbol
		{"[veth]", 0, false},              // a module, not a symbol
		{"__pfx_ip_rcv_finish", 0, false}, // left out
		{"__start_rodata", 0, false},
		{"net_namespace_list", 0, false},
		{"veth_netdev_ops", 0, false},
		{"fixed_percpu_data", 0, false},
		{"", 0, false},
		{"ip_rcv\n", 0, false},
		{"veth_xmit\tveth", 0, false},
	} {
		addr, ok := tab.Address(tc.name)
		if addr != tc.addr || ok != tc.ok {
			t.Errorf("Address(%q) = %#x, %v, want %#x, %v", tc.name, addr, ok, tc.addr, tc.ok)
		}
	}
}

func TestClones(t *testing.T) {
	tab := parseFile(t, "testdata/kallsyms.txt")
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"ip_rcv_finish", []string{"ip_rcv_finish.constprop.0.isra.0", "ip_rcv_finish.isra.0"}},
		{"ip_route_input_rcu", []string{"ip_route_input_rcu.part.0"}},
		{"ip_fragment", []string{"ip_fragment.constprop.0"}},
		{"tcp_v4_fill_cb", []string{"tcp_v4_fill_cb.llvm.4469183574357958085"}},
		{"ip_rcv_finish_core", nil}, // only a .cold part
		{"ip_tun_parse_opts", nil},  // only a .part.0.cold part
		{"ip_rcv", nil},             // ip_rcv_finish.isra.0 is another function's clone
		{"tcp_v4_rcv", nil},
		{"", nil},
	} {
		if got := tab.Clones(tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("Clones(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestIsCloneSuffix(t *testing.T) {
	for s, want := range map[string]bool{
		".isra.0":               true,
		".constprop.12":         true,
		".part.0":               true,
		".llvm.987654321":       true,
		".constprop.0.isra.0":   true,
		".part.0.constprop.0":   true,
		".cold":                 false,
		".cold.1":               false,
		".part.0.cold":          false,
		".isra.0.cold":          false,
		".localalias":           false,
		".isra":                 false,
		".isra.":                false,
		".isra.x":               false,
		".isra.0.":              false,
		"isra.0":                false,
		"":                      false,
		".isra.0.constprop":     false,
		".constprop.0.isra.-1":  false,
		".constprop.0.isra.+1":  false,
		".constprop.0..isra.0":  false,
		".constprop.0.isra.0.0": false,
	} {
		if got := isCloneSuffix(s); got != want {
			t.Errorf("isCloneSuffix(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	// The last line may lack its newline.
	tab, err := Parse(strings.NewReader("ffffffff81000000 T _text\nffffffff81000100 t second"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Symbolize(0xffffffff81000101); got != "second+0x1" {
		t.Errorf("Symbolize = %q, want second+0x1", got)
	}

	for _, tc := range []struct{ in, wantErr string }{
		{"", "no text symbols"},
		{"ffffffff82400000 D __start_rodata\n", "no text symbols"},
		{"ffffffff81000000 T\n", `line 1: "ffffffff81000000 T\n": want ADDRESS TYPE NAME`},
		{"ffffffff81000000T _text\n", "want ADDRESS TYPE NAME"},
		{"ffffffff81000000 T _text\n\n", `line 2: "\n": want ADDRESS TYPE NAME`},
		{"ffffffff8100000g T _text\n", `bad address "ffffffff8100000g"`},
		{"1ffffffff81000000 T _text\n", `bad address "1ffffffff81000000"`},
		{"ffffffff81000000 T  _text\n", "bad symbol name"},
		{"ffffffff81000000 T \t[veth]\n", "bad symbol name"},
		{"ffffffff81000000 T " + strings.Repeat("x", 70<<10) + "\n", "line 1: bufio: buffer full"},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Parse(%.40q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
		}
	}
}

// TestChunks checks lookups across the chunks of the name arena, with the
// symbols listed in descending order so that Parse must sort them.
func TestChunks(t *testing.T) {
	const n = 20000
	var in strings.Builder
	for i := n - 1; i >= 0; i-- {
		fmt.Fprintf(&in, "%x t function_number_%d_with_a_longish_name\t[mod%d]\n", 0xffffffffc0000000+uint64(i)*0x100, i, i%7)
		fmt.Fprintf(&in, "%x t function_number_%d_with_a_longish_name.isra.0\t[mod%d]\n", 0xffffffffc0000000+uint64(i)*0x100+0x80, i, i%7)
	}
	tab, err := Parse(strings.NewReader(in.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.names) < 10 {
		t.Fatalf("names in %d chunks, want the test to span at least 10", len(tab.names))
	}
	for i := range n {
		name := fmt.Sprintf("function_number_%d_with_a_longish_name", i)
		addr := 0xffffffffc0000000 + uint64(i)*0x100
		if got, want := tab.Symbolize(addr+0x7f), fmt.Sprintf("%s+0x7f [mod%d]", name, i%7); got != want {
			t.Fatalf("Symbolize(%#x) = %q, want %q", addr+0x7f, got, want)
		}
		if got, want := tab.Symbolize(addr+0x81), fmt.Sprintf("%s.isra.0+0x1 [mod%d]", name, i%7); got != want {
			t.Fatalf("Symbolize(%#x) = %q, want %q", addr+0x81, got, want)
		}
		if i%100 != 0 {
			continue // Address and Clones scan all names: check a sample
		}
		if got, ok := tab.Address(name); got != addr || !ok {
			t.Fatalf("Address(%s) = %#x, %v, want %#x, true", name, got, ok, addr)
		}
		if got := tab.Clones(name); len(got) != 1 || got[0] != name+".isra.0" {
			t.Fatalf("Clones(%s) = %q, want [%s.isra.0]", name, got, name)
		}
	}
}

// TestLoad checks the table of the running kernel against the text of
// /proc/kallsyms itself.
func TestLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: /proc/kallsyms shows zero addresses to others")
	}
	text, err := os.ReadFile(Path)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(text, []byte("0000000000000000 ")) || bytes.HasPrefix(text, []byte("00000000 ")) {
		if !tab.Restricted() {
			t.Fatal("addresses are hidden (kptr_restrict), but Restricted() = false")
		}
		t.Skip("kptr_restrict hides kernel addresses; only Restricted() could be checked")
	}
	if tab.Restricted() {
		t.Fatal("Restricted() = true, but /proc/kallsyms shows addresses")
	}

	// The drop function: sk_skb_reason_drop since 6.11, kfree_skb_reason before.
	for _, name := range []string{"sk_skb_reason_drop", "kfree_skb_reason"} {
		addrHex, ok := textSymbolAddress(text, name)
		if !ok {
			continue
		}
		if n := bytes.Count(text, []byte("\n"+addrHex+" ")); n != 1 {
			t.Fatalf("%s at %s shares its address with %d other symbols; pick another", name, addrHex, n-1)
		}
		addr, err := strconv.ParseUint(addrHex, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tab.Symbolize(addr+5), name+"+0x5"; got != want {
			t.Errorf("Symbolize(%#x) = %q, want %q", addr+5, got, want)
		}
		if got, ok := tab.Address(name); got != addr || !ok {
			t.Errorf("Address(%s) = %#x, %v, want %#x, true", name, got, ok, addr)
		}
		return
	}
	t.Fatal("neither sk_skb_reason_drop nor kfree_skb_reason in " + Path)
}

// TestLoadFunctions checks that the table of a few functions answers
// Address and Clones for them as the table of every symbol does, and holds
// little else.
func TestLoadFunctions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: /proc/kallsyms shows zero addresses to others")
	}
	all, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"ip_rcv", "kfree_skb_reason", "sk_skb_reason_drop", "no_such_function_xyz"}
	// A function with a compiler's copy, and one that is only a copy.
	for i := range all.addrs {
		name, _ := all.entry(all.offs[i])
		base, suffix, ok := strings.Cut(string(name), ".")
		if ok && isCloneSuffix("."+suffix) && !slices.Contains(names, base) {
			names = append(names, base)
			if len(names) == 8 {
				break
			}
		}
	}
	few, err := LoadFunctions(names)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		gotAddr, gotOK := few.Address(name)
		wantAddr, wantOK := all.Address(name)
		if gotAddr != wantAddr || gotOK != wantOK {
			t.Errorf("Address(%s) = %#x, %v; from every symbol %#x, %v", name, gotAddr, gotOK, wantAddr, wantOK)
		}
		if got, want := few.Clones(name), all.Clones(name); !slices.Equal(got, want) {
			t.Errorf("Clones(%s) = %q; from every symbol %q", name, got, want)
		}
	}
	if len(few.addrs) > 16*len(names) {
		t.Errorf("%d symbols held for %d functions", len(few.addrs), len(names))
	}
	t.Logf("%d of %d symbols held for %q", len(few.addrs), len(all.addrs), names)
}

// textSymbolAddress finds "ADDR T name" or "ADDR t name" in the text of
// /proc/kallsyms.
func textSymbolAddress(text []byte, name string) (string, bool) {
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == name && (f[1] == "T" || f[1] == "t") {
			return f[0], true
		}
	}
	return "", false
}

func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	var tab *Table
	for b.Loop() {
		var err error
		if tab, err = Load(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(tab.addrs)), "symbols")
	size := cap(tab.addrs)*8 + cap(tab.offs)*4
	for _, c := range tab.names {
		size += cap(c)
	}
	b.ReportMetric(float64(size), "table-bytes")
}

// BenchmarkAddress measures a name lookup in the running kernel's table, which
// scans all names.
func BenchmarkAddress(b *testing.B) {
	tab, err := Load()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok := tab.Address("ip_rcv"); !ok {
			b.Fatal("no ip_rcv")
		}
		tab.Clones("ip_rcv_finish")
	}
}
