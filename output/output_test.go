package output

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// at is 17:53:34 in a zone that is not UTC, so that a test fails if Write
// formats the time in another location than the caller's.
var at = time.Date(2021, 3, 9, 17, 53, 34, 0, time.FixedZone("UTC+8", 8*3600))

// seedSections are the counts of the example at the top of the seed,
// given in an order other than the printed one.
var seedSections = []Section{
	{Name: "INGRESS", Rows: []Row{
		{Name: "ip_rcv", Rank: 19, Count: 5},
		{Name: "ip_rcv_finish", Rank: 18, Count: 5},
		{Name: "tcp_v4_rcv", Rank: 2, Count: 5},
		{Name: "ip_route_input_noref", Rank: 17, Count: 1},
		{Name: "ip_local_deliver", Rank: 16, Count: 5},
		{Name: "ip_local_deliver_finish", Rank: 15, Count: 5},
	}},
	{Name: "EGRESS", Rows: []Row{
		{Name: "net:net_dev_xmit", Rank: 21, Count: 7},
		{Name: "net:net_dev_queue", Rank: 20, Count: 7},
		{Name: "ip_finish_output2", Rank: 13, Count: 7},
		{Name: "ip_finish_output", Rank: 12, Count: 7},
		{Name: "ip_output", Rank: 11, Count: 7},
	}},
	{Name: "DROP", Stacks: []Stack{{Count: 1, Frames: []string{
		"kfree_skb+0x1",
		"sk_stream_kill_queues+0x52",
		"inet_csk_destroy_sock+0x4f",
		"tcp_fin+0xe7",
		"tcp_data_queue+0x572",
		"tcp_rcv_state_process+0x28d",
		"tcp_v4_do_rcv+0x70",
		"tcp_v4_rcv+0x91b",
		"ip_protocol_deliver_rcu+0x36",
		"ip_local_deliver_finish+0x44",
		"ip_local_deliver+0x6b",
		"ip_rcv+0x52",
		"__netif_receive_skb_one_core+0x50",
		"netif_receive_skb_internal+0x2f",
		"napi_gro_receive+0x107",
	}}}},
}

// TestSeed renders the counts of the seed's example and compares them with
// the seed's own text: from its first header to the "[...]" that ends the
// example, including the empty line after the DROP section.
func TestSeed(t *testing.T) {
	const seed = "../../shared/seed/skbstat_example.txt"
	text, err := os.ReadFile(seed)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("seed example %s is not in this checkout", seed)
	}
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(text, []byte("TIME     NUM    FUNC/STACK\n"))
	end := bytes.Index(text, []byte("\n[...]\n"))
	if start < 0 || end < start {
		t.Fatalf("%s: no example between a TIME header and [...]", seed)
	}
	want := string(text[start : end+1])

	var b strings.Builder
	if err := Write(&b, at, seedSections); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != want {
		t.Errorf("rendering differs from %s:\n--- got\n%s--- want\n%s", seed, got, want)
	}
}

// TestCountLine pins the lines that differ from the original's Python
// formats: "%-8s %-6d" % (" ", 1) is "         1     ", but the seed's
// count lines have no trailing spaces, and neither do ours.
func TestCountLine(t *testing.T) {
	var b strings.Builder
	err := Write(&b, at, []Section{{Name: "DROP", Stacks: []Stack{
		{Count: 1, Frames: []string{"kfree_skb+0x1"}},
		{Count: 2, Reason: "NO_SOCKET", Frames: []string{"sk_skb_reason_drop+0x5"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"TIME     NUM    FUNC/STACK",
		"17:53:34        [DROP]",
		"         1",
		"                kfree_skb+0x1",
		"         2      NO_SOCKET",
		"                sk_skb_reason_drop+0x5",
		"",
		"",
	}
	if got := strings.Split(b.String(), "\n"); !slices.Equal(got, want) {
		t.Errorf("got lines\n%q\nwant\n%q", got, want)
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sections []Section
	}{
		{"seed", seedSections},
		{"empty", []Section{{Name: "INGRESS"}, {Name: "EGRESS"}, {Name: "CONSUME"}, {Name: "DROP"}}},
		{"ingress", []Section{{Name: "INGRESS", Rows: []Row{
			{Name: "net:netif_receive_skb", Rank: 30, Count: 1234567}, // wider than the column
			{Name: "ip_rcv", Rank: 19, Count: 10},
			{Name: "udp_rcv", Rank: 2, Count: 10},
			{Name: "icmp_rcv", Rank: 2, Count: 4},   // same rank: by name
			{Name: "tcp_v4_rcv", Rank: 1, Count: 0}, // counted nothing: not printed
			{Name: "udp_recvmsg", Rank: 0, Count: 3},
			{Name: "ip_local_deliver", Rank: 16, Count: 10},
		}}}},
		{"egress", []Section{{Name: "EGRESS", Rows: []Row{
			{Name: "net:net_dev_xmit", Rank: 21, Count: 10},
			{Name: "net:net_dev_queue", Rank: 20, Count: 10},
			{Name: "ip6_output", Rank: 11, Count: 4},
			{Name: "ip_output", Rank: 11, Count: 6},
			{Name: "udp_sendmsg", Rank: 0, Count: 19},
		}}}},
		{"consume", []Section{{Name: "CONSUME", Stacks: []Stack{
			{Count: 9, Frames: []string{"consume_skb+0x5", "skb_free_datagram+0x11", "udp_recvmsg+0x1a2"}},
			{Count: 2, Frames: []string{"consume_skb+0x5", "icmp_rcv+0x18e", "ip_protocol_deliver_rcu+0x2d"}},
			{Count: 2, Frames: []string{"consume_skb+0x5", "arp_process+0x2f1", "arp_rcv+0x1a4 [veth]"}}, // same count: by frames
		}}}},
		{"drop", []Section{{Name: "DROP", Notes: []Note{{4, "not counted: count map full", "count_map_full"}, {0, "not decided: no device or socket to tell the network namespace", "not_decided_namespace"}, {2, "not decided: IPv6 header chain longer than 64", "not_decided_ipv6_chain"}}, Stacks: []Stack{
			{Count: 10, Reason: "NO_SOCKET", Location: "__udp4_lib_rcv+0x7a1", Frames: []string{"sk_skb_reason_drop+0x5", "__udp4_lib_rcv+0x7a1", "ip_protocol_deliver_rcu+0x2d"}},
			{Count: 3, Reason: "TCP_INVALID_SEQUENCE", Frames: []string{"sk_skb_reason_drop+0x5", "tcp_validate_incoming+0x1c2"}},
			{Count: 3, Reason: "NETFILTER_DROP", Frames: []string{"sk_skb_reason_drop+0x5", "nf_hook_slow+0xa8"}}, // same count: by reason
			{Count: 2, Reason: "NOT_SPECIFIED", LostID: -17, Frames: []string{"tcp_v4_rcv+0x1b2"}},
			{Count: 1, Reason: "NO_SOCKET", Frames: []string{"0xffffffffc0a0102a"}},
		}}}},
		{"restricted", []Section{{Name: "DROP", Stacks: []Stack{
			{Count: 5, Reason: "NO_SOCKET", Frames: []string{"0xffffffff81e42dc5", "0xffffffff82040b21"}},
			{Count: 1, LostID: -14, Frames: []string{"0xffffffff82040b21"}},
		}}}},
		// Where the kernel gave no usable stack: lost (a MIPS kernel's
		// -EFAULT, a full stack map's -EEXIST) or one frame (32-bit ARM),
		// the location is the frame; consume_skb before 6.3 has none.
		{"unusable", []Section{
			{Name: "CONSUME", Stacks: []Stack{
				{Count: 4, LostID: -14},
				{Count: 2},
				{Count: 1, LostID: -17, Frames: []string{"icmp_rcv+0x2e4"}},
			}},
			{Name: "DROP", Stacks: []Stack{
				{Count: 6, Reason: "NO_SOCKET", LostID: -14, Frames: []string{"__udp4_lib_rcv+0x4bc"}},
				{Count: 3, Reason: "NO_SOCKET", Frames: []string{"__udp4_lib_rcv+0x4bc"}},
				{Count: 1, Reason: "NETFILTER_DROP", LostID: -17, Frames: []string{"nft_do_chain+0x3a [nf_tables]"}},
			}},
		}},
		{"all", []Section{ // a FUNC section, and sections in the order given
			{Name: "FUNC", Rows: []Row{{Name: "veth_xmit", Count: 8}}},
			{Name: "INGRESS", Rows: []Row{{Name: "ip_rcv", Rank: 19, Count: 8}}},
			{Name: "EGRESS"},
			{Name: "CONSUME", Notes: []Note{{1, "not counted: count map full", "count_map_full"}}},
			{Name: "DROP", Stacks: []Stack{{Count: 8, Reason: "NO_SOCKET", Frames: []string{"sk_skb_reason_drop+0x5"}}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, at, tc.sections); err != nil {
				t.Fatal(err)
			}
			for line := range strings.Lines(b.String()) {
				if strings.HasSuffix(line, " \n") {
					t.Errorf("trailing space in %q", line)
				}
			}
			compareGolden(t, tc.name+".golden", b.Bytes())
			b.Reset()
			if err := WriteJSON(&b, at, 1500*time.Millisecond, tc.sections); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(b.String(), "\n"); n != 1 || !strings.HasSuffix(b.String(), "\n") {
				t.Errorf("JSON: %d lines, want one: %q", n, b.String())
			}
			compareGolden(t, tc.name+".json.golden", b.Bytes())
			b.Reset()
			if err := WriteFolded(&b, tc.sections); err != nil {
				t.Fatal(err)
			}
			checkFoldedSums(t, b.String(), tc.sections)
			compareGolden(t, tc.name+".folded.golden", b.Bytes())
		})
	}
}

// checkFoldedSums checks that the folded lines of each stack section sum to
// its stacks' and notes' counts.
func checkFoldedSums(t *testing.T, folded string, sections []Section) {
	t.Helper()
	for _, s := range sections {
		var want, got uint64
		for _, st := range s.Stacks {
			want += st.Count
		}
		for _, n := range s.Notes {
			want += n.Count
		}
		for line := range strings.Lines(folded) {
			path, count, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
			n, err := strconv.ParseUint(count, 10, 64)
			if !ok || err != nil || strings.Contains(path, " ") {
				t.Fatalf("folded line %q: want \"frame;frame COUNT\"", line)
			}
			if root, _, _ := strings.Cut(path, ";"); root == s.Name || slices.ContainsFunc(s.Stacks, func(st Stack) bool { return st.Reason == root }) {
				got += n
			}
		}
		if got != want {
			t.Errorf("%s: folded lines sum to %d, want %d:\n%s", s.Name, got, want, folded)
		}
	}
}

// compareGolden compares got with testdata/name, or with -update writes it.
func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestWriteKeepsInput(t *testing.T) {
	rows := []Row{{Name: "b", Rank: 2}, {Name: "a", Rank: 1}}
	stacks := []Stack{{Count: 2}, {Count: 1}}
	if err := Write(new(bytes.Buffer), at, []Section{{Name: "X", Rows: rows, Stacks: stacks}}); err != nil {
		t.Fatal(err)
	}
	if rows[0].Name != "b" || stacks[0].Count != 2 {
		t.Errorf("Write reordered its input: rows %v, stacks %v", rows, stacks)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriteError(t *testing.T) {
	err := Write(failingWriter{}, at, []Section{{Name: "DROP"}})
	if !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write error = %v, want one wrapping %v", err, os.ErrClosed)
	}
}
