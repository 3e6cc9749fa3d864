package metrics

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/output"
)

func drop(count uint64, reason, location string) output.Stack {
	return output.Stack{Count: count, Reason: reason, Location: location, Frames: []string{location}}
}

// TestCounters adds two intervals and checks every metric's samples.
func TestCounters(t *testing.T) {
	c := New(200, Info{Version: "v1.2.3", GoArch: "mipsle", Filter: `dst port 53 and "quoted"`})
	c.Attached("DROP", "raw tracepoint")
	c.Attached("INGRESS", "raw tracepoint")
	c.Attached("INGRESS", "fentry")
	for range 2 {
		c.Add([]output.Section{
			{Name: "INGRESS", Rows: []output.Row{{Name: "ip_rcv", Count: 3}, {Name: "net:netif_receive_skb", Count: 0}}},
			{Name: "CONSUME", Stacks: []output.Stack{{Count: 4}, drop(1, "", "skb_free_datagram+0x11 [udp]")}},
			{Name: "DROP", Stacks: []output.Stack{
				drop(5, "NO_SOCKET", "__udp4_lib_rcv+0x4bc"),
				drop(2, "NO_SOCKET", "__udp4_lib_rcv+0x4c0"), // another offset, the same function
				{Count: 1, Reason: "NOT_SPECIFIED", LostID: -17, Location: "tcp_v4_rcv+0x12"},
				{Count: 6}, // a kernel without drop reasons or locations
			}, Notes: []output.Note{{Count: 2, Cause: "count_map_full"}, {Count: 1, Cause: RecursionCause}}},
		})
	}
	var b bytes.Buffer
	if err := c.Write(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`skbstat_packets_total{section="INGRESS",probe="ip_rcv"} 6`,
		`skbstat_packets_total{section="INGRESS",probe="net:netif_receive_skb"} 0`,
		`skbstat_drops_total{reason="NO_SOCKET",location="__udp4_lib_rcv"} 14`,
		`skbstat_drops_total{reason="NOT_SPECIFIED",location="tcp_v4_rcv"} 2`,
		`skbstat_drops_total{reason="unknown",location="unknown"} 12`,
		`skbstat_consumed_total{location="unknown"} 8`,
		`skbstat_consumed_total{location="skb_free_datagram"} 2`,
		`skbstat_lost_stacks_total 2`,
		`skbstat_uncounted_total{section="DROP",cause="count_map_full"} 4`,
		`skbstat_recursion_misses_total{section="DROP"} 2`,
		`skbstat_probes{section="INGRESS",mechanism="raw tracepoint"} 1`,
		`skbstat_probes{section="INGRESS",mechanism="fentry"} 1`,
		`skbstat_build_info{version="v1.2.3",goarch="mipsle"} 1`,
		`skbstat_filter_info{filter="dst port 53 and \"quoted\""} 1`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("no line %s in\n%s", want, b.String())
		}
	}
	checkWithPromtool(t, b.Bytes())
}

// TestSeriesBound: past the bound, new locations go to "other", per
// reason; a series exported before stays and keeps counting.
func TestSeriesBound(t *testing.T) {
	c := New(2, Info{})
	c.Add([]output.Section{{Name: "DROP", Stacks: []output.Stack{drop(1, "NO_SOCKET", "a+0x1"), drop(1, "NO_SOCKET", "b+0x1")}}})
	c.Add([]output.Section{{Name: "DROP", Stacks: []output.Stack{
		drop(1, "NO_SOCKET", "a+0x1"), drop(3, "NO_SOCKET", "c+0x1"), drop(4, "NO_SOCKET", "d+0x1"), drop(5, "OTHERHOST", "a+0x1"),
	}}})
	var b bytes.Buffer
	c.Write(&b)
	var drops []string
	for line := range strings.Lines(b.String()) {
		if strings.HasPrefix(line, "skbstat_drops_total{") {
			drops = append(drops, strings.TrimSpace(line))
		}
	}
	want := []string{
		`skbstat_drops_total{reason="NO_SOCKET",location="a"} 2`,
		`skbstat_drops_total{reason="NO_SOCKET",location="b"} 1`,
		`skbstat_drops_total{reason="NO_SOCKET",location="other"} 7`,
		`skbstat_drops_total{reason="OTHERHOST",location="other"} 5`,
	}
	if strings.Join(drops, "\n") != strings.Join(want, "\n") {
		t.Errorf("drops:\n%s\nwant:\n%s", strings.Join(drops, "\n"), strings.Join(want, "\n"))
	}
}

// checkWithPromtool checks the exposition with Prometheus's own linter.
func checkWithPromtool(t *testing.T, exposition []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (Debian's prometheus package; test/all.sh installs it)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, exposition)
	}
}
