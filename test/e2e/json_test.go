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

// TestLocations counts IPv4 and IPv6 datagrams to a closed port with
// --locations: one line per place and reason, each the family's UDP
// receive function, exact; the same in --json (no frames) and --folded.
func TestLocations(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	args := []string{"--locations", "-i", "60", "-D", closedPort, "-p", "udp", "-N"}
	text := startSkbstat(t, append(args, p.b4+"/32")...)
	text6 := startSkbstat(t, append(args, p.b6+"/128")...)
	folded := startSkbstat(t, append([]string{"--folded"}, append(args, p.b4)...)...)
	jsonRun := startSkbstat(t, append([]string{"--json"}, append(args, p.b4)...)...)
	p.sendUDP(t, datagrams, p.a4, p.b4)
	p.sendUDP(t, datagrams, p.a6, p.b6)
	settle()
	for _, c := range []struct {
		r  *run
		fn string
	}{{text, "__udp4_lib_rcv+0x"}, {text6, "__udp6_lib_rcv+0x"}} {
		out := c.r.stopRaw(t, syscall.SIGINT)
		var n uint64
		for line := range strings.Lines(out) {
			fields := strings.Fields(line)
			if len(fields) == 3 && fields[1] == "NO_SOCKET" && strings.HasPrefix(fields[2], c.fn) {
				v, _ := strconv.ParseUint(fields[0], 10, 64)
				n += v
			} else if len(fields) > 1 && !strings.HasPrefix(line, "TIME") && !strings.Contains(line, "[DROP]") {
				t.Errorf("line %q: want COUNT NO_SOCKET %s...", line, c.fn)
			}
		}
		if n != datagrams {
			t.Errorf("--locations: NO_SOCKET at %s: %d, want %d\n%s", c.fn, n, datagrams, out)
		}
	}
	if out := folded.stopRaw(t, syscall.SIGINT); !strings.HasPrefix(out, "NO_SOCKET;__udp4_lib_rcv "+strconv.Itoa(datagrams)+"\n") {
		t.Errorf("--folded --locations: %q, want NO_SOCKET;__udp4_lib_rcv %d", out, datagrams)
	}
	out := jsonRun.stopRaw(t, syscall.SIGINT)
	var iv jsonInterval
	if err := json.Unmarshal([]byte(out), &iv); err != nil {
		t.Fatalf("--json --locations: %v: %s", err, out)
	}
	st := iv.Sections["DROP"].Stacks
	if len(st) != 1 || *st[0].Count != datagrams || len(st[0].Frames) != 0 || !strings.HasPrefix(*st[0].Location, "__udp4_lib_rcv+0x") {
		t.Errorf("--json --locations: DROP %s: want one entry of %d at __udp4_lib_rcv, no frames", out, datagrams)
	}
}

// TestStackDepth records at most 3 frames of each drop's stack: every
// stack printed has at most 3, and the drops are all counted.
func TestStackDepth(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	r := startSkbstat(t, "--stack-depth", "3", "-i", "60", "-d", p.b4, "-D", closedPort, "-p", "udp")
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	if n := sum(ivs, stackCount("DROP", "NO_SOCKET")); n != datagrams {
		t.Errorf("DROP NO_SOCKET: %d, want %d\n%s", n, datagrams, r.stdout.String())
	}
	for _, iv := range ivs {
		for _, st := range iv["DROP"].stacks {
			if len(st.frames) == 0 || len(st.frames) > 3 {
				t.Errorf("stack of %d frames, want 1 to 3: %v", len(st.frames), st.frames)
			}
		}
	}
}
