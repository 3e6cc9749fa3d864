package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dropsPerReason is the README's jq line: drops per reason, per interval.
const dropsPerReason = `reduce .sections.DROP.stacks[] as $s ({}; .[$s.reason] += $s.count)`

// jsonInterval is the README's schema of one --json line.
type jsonInterval struct {
	Time     string  `json:"time"`
	Seconds  float64 `json:"seconds"`
	Sections map[string]struct {
		Rows []struct {
			Probe string  `json:"probe"`
			Count *uint64 `json:"count"`
		} `json:"rows"`
		Stacks []struct {
			Count       *uint64  `json:"count"`
			Reason      *string  `json:"reason"`
			Location    *string  `json:"location"`
			Frames      []string `json:"frames"`
			LostStackID *int64   `json:"lost_stack_id"`
		} `json:"stacks"`
		Notes []struct {
			Cause string  `json:"cause"`
			Text  string  `json:"text"`
			Count *uint64 `json:"count"`
		} `json:"notes"`
	} `json:"sections"`
}

// TestJSONLines counts datagrams to a closed port with --json: one object
// per line and interval, as the README's schema says, every row and note
// there with its count, and the README's jq line summing to the drops.
func TestJSONLines(t *testing.T) {
	requireRoot(t)
	jq, err := exec.LookPath("jq")
	if err != nil {
		t.Fatal("jq is not installed (test/all.sh installs it): the README's example needs it")
	}
	p := newPair(t)
	r := startSkbstat(t, "--json", "--input", "-i", "0.2", "-d", p.b4, "-D", closedPort, "-p", "udp")
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	out := r.stopRaw(t, syscall.SIGINT)
	var rows, drops uint64
	lines := 0
	for sc := bufio.NewScanner(strings.NewReader(out)); sc.Scan(); lines++ {
		var iv jsonInterval
		if err := json.Unmarshal(sc.Bytes(), &iv); err != nil {
			t.Fatalf("line %d: %v: %s", lines+1, err, sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, iv.Time); err != nil || !strings.Contains(iv.Time, ".") || !(iv.Seconds > 0) {
			t.Errorf("line %d: time %q, seconds %v: want RFC 3339 with sub-seconds and a length", lines+1, iv.Time, iv.Seconds)
		}
		for _, name := range []string{"INGRESS", "DROP"} {
			sec, ok := iv.Sections[name]
			if !ok || len(sec.Notes) < 3 {
				t.Fatalf("line %d: section %s missing or without its notes: %s", lines+1, name, sc.Text())
			}
			for _, n := range sec.Notes {
				if n.Count == nil || n.Cause == "" || n.Text == "" {
					t.Errorf("line %d: %s note without cause, text or count: %s", lines+1, name, sc.Text())
				}
			}
		}
		in := iv.Sections["INGRESS"].Rows
		if len(in) != 1 || in[0].Probe != "net:netif_receive_skb" || in[0].Count == nil {
			t.Fatalf("line %d: INGRESS rows %s: want net:netif_receive_skb with its count, zero included", lines+1, sc.Text())
		}
		rows += *in[0].Count
		for _, st := range iv.Sections["DROP"].Stacks {
			if st.Count == nil || st.Reason == nil || st.Location == nil || st.Frames == nil || st.LostStackID == nil {
				t.Fatalf("line %d: DROP stack without count, reason, location, frames or lost_stack_id: %s", lines+1, sc.Text())
			}
			drops += *st.Count
		}
	}
	if lines < 2 || rows != datagrams || drops != datagrams {
		t.Errorf("%d lines, INGRESS %d, DROP %d: want at least 2 lines (0.2 s intervals) and %d of each\n%s", lines, rows, drops, datagrams, out)
	}
	cmd := exec.Command(jq, "-c", dropsPerReason)
	cmd.Stdin = strings.NewReader(out)
	perReason, err := cmd.Output()
	if err != nil {
		t.Fatalf("jq -c %q: %v", dropsPerReason, err)
	}
	var noSocket uint64
	for _, line := range strings.Split(strings.TrimSpace(string(perReason)), "\n") {
		var m map[string]uint64
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("jq printed %q: %v", line, err)
		}
		noSocket += m["NO_SOCKET"]
	}
	if noSocket != datagrams {
		t.Errorf("jq -c %q: NO_SOCKET %d in all, want %d\n%s", dropsPerReason, noSocket, datagrams, perReason)
	}
}

// TestFolded counts datagrams to a closed port with --folded: every line is
// "reason;frame;...;frame count", outermost frame first (the caller before
// the function it called), without offsets, and the lines sum to the drops.
func TestFolded(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	r := startSkbstat(t, "--folded", "-i", "60", "-d", p.b4, "-D", closedPort, "-p", "udp")
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	out := r.stopRaw(t, syscall.SIGINT)
	var drops uint64
	for line := range strings.Lines(out) {
		path, count, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		n, err := strconv.ParseUint(count, 10, 64)
		frames := strings.Split(path, ";")
		if !ok || err != nil || frames[0] != "NO_SOCKET" || strings.Contains(path, "+0x") ||
			!(slices.Index(frames, "ip_protocol_deliver_rcu") < slices.Index(frames, "__udp4_lib_rcv")) {
			t.Fatalf("folded line %q: want NO_SOCKET;...;ip_protocol_deliver_rcu;__udp4_lib_rcv;... COUNT, outermost first, without offsets\n%s", line, out)
		}
		drops += n
	}
	if drops != datagrams {
		t.Errorf("folded lines sum to %d, want %d\n%s", drops, datagrams, out)
	}
}
