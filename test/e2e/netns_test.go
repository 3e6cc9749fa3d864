package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// trio is three network namespaces as on a container host, with
// same-numbered devices: a is joined to b and to c by veth pairs, and the
// ends in b and c (both named dev) and a's end towards b have one index.
// a's end towards c has the next.
type trio struct {
	a, b, c  string // namespace names
	index    int
	dev      string // the name of the ends in b and c
	aB, aC   string // a's ends, towards b and towards c
	aB4, b4  string // IPv4 addresses of the a-b link
	aC4, c4  string // of the a-c link
	loPort   string // closed port of the datagrams over b's loopback
	cProcess int    // a process in c, for --netns pid:N
}

// newTrio makes the namespaces with names, addresses and an index unique
// to this test process and removes them when the test ends. The index is
// above those the lab's devices take.
func newTrio(t *testing.T) *trio {
	t.Helper()
	id, net := uniqueNames()
	tr := &trio{
		a: "sknA-" + id, b: "sknB-" + id, c: "sknC-" + id,
		index: 1<<30 + rand.IntN(1<<29), dev: "veth0",
		aB: "tob" + id, aC: "toc" + id,
		aB4: fmt.Sprintf("10.202.%d.1", net), b4: fmt.Sprintf("10.202.%d.2", net),
		aC4: fmt.Sprintf("10.203.%d.1", net), c4: fmt.Sprintf("10.203.%d.2", net),
		loPort: fmt.Sprint(40000 + rand.IntN(20000)),
	}
	t.Cleanup(func() {
		for _, ns := range []string{tr.a, tr.b, tr.c} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	idx := func(i int) string { return fmt.Sprint(tr.index + i) }
	cmds := [][]string{
		{"netns", "add", tr.a}, {"netns", "add", tr.b}, {"netns", "add", tr.c},
		{"link", "add", tr.aB, "netns", tr.a, "index", idx(0), "type", "veth", "peer", "name", tr.dev, "netns", tr.b, "index", idx(0)},
		{"link", "add", tr.aC, "netns", tr.a, "index", idx(1), "type", "veth", "peer", "name", tr.dev, "netns", tr.c, "index", idx(0)},
	}
	for _, l := range []struct{ ns, dev, addr, peerNs, peerDev, peer string }{
		{tr.a, tr.aB, tr.aB4, tr.b, tr.dev, tr.b4},
		{tr.a, tr.aC, tr.aC4, tr.c, tr.dev, tr.c4},
	} {
		cmds = append(cmds,
			[]string{"-n", l.ns, "addr", "add", l.addr + "/24", "dev", l.dev},
			[]string{"-n", l.peerNs, "addr", "add", l.peer + "/24", "dev", l.peerDev},
			[]string{"-n", l.ns, "link", "set", l.dev, "up"},
			[]string{"-n", l.peerNs, "link", "set", l.peerDev, "up"},
		)
	}
	for _, ns := range []string{tr.a, tr.b, tr.c} {
		cmds = append(cmds, []string{"-n", ns, "link", "set", "lo", "up"})
	}
	for _, args := range cmds {
		ip(t, args...)
	}
	// Permanent neighbours: no ARP joins the counted traffic. Unlimited
	// ICMP errors: one per datagram to a closed port.
	p := &pair{}
	bMAC, cMAC := p.mac(t, tr.b, tr.dev), p.mac(t, tr.c, tr.dev)
	aBMAC, aCMAC := p.mac(t, tr.a, tr.aB), p.mac(t, tr.a, tr.aC)
	for _, args := range [][]string{
		{"-n", tr.a, "neigh", "replace", tr.b4, "lladdr", bMAC, "dev", tr.aB, "nud", "permanent"},
		{"-n", tr.a, "neigh", "replace", tr.c4, "lladdr", cMAC, "dev", tr.aC, "nud", "permanent"},
		{"-n", tr.b, "neigh", "replace", tr.aB4, "lladdr", aBMAC, "dev", tr.dev, "nud", "permanent"},
		{"-n", tr.c, "neigh", "replace", tr.aC4, "lladdr", aCMAC, "dev", tr.dev, "nud", "permanent"},
		{"netns", "exec", tr.b, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"},
		{"netns", "exec", tr.c, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"},
	} {
		ip(t, args...)
	}
	tr.cProcess = processIn(t, tr.c)
	return tr
}

// processIn starts a process in namespace ns that lives as long as the
// test, and returns its pid once it is in ns.
func processIn(t *testing.T, ns string) int {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	want := inode(t, "/run/netns/"+ns)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &st) == nil && st.Ino == want {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("ip netns exec %s: process %d did not enter the namespace", ns, cmd.Process.Pid)
		}
	}
}

// inode is the inode number of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// send sends n datagrams from namespace ns, from address from to to's
// port.
func (tr *trio) send(t *testing.T, ns string, n int, from, to, port string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, trafficBin, "udp", "-n", fmt.Sprint(n),
		"-src", hostPort(from, srcPort), hostPort(to, port)).CombinedOutput()
	if err != nil {
		t.Fatalf("traffic in %s: %v: %s", ns, err, out)
	}
}

// nsCase is one skbstat of TestNetns and what it must count.
type nsCase struct {
	ns   string // where skbstat runs; "" is the host
	args []string
	// rx, queue, xmit: the INGRESS and EGRESS tracepoint rows; drop: DROP
	// NO_SOCKET; consume: CONSUME. Only what the case's sections print.
	rx, queue, xmit, drop, consume uint64
}

// Datagrams of TestNetns: a sends toB to b and toC to c, each to a closed
// port, so each is dropped and answered by one ICMP error, which a
// consumes; in b, overLo go over b's loopback to a closed port.
const toB, toC, overLo = 10, 6, 4

// TestNetns runs skbstat with -I and --netns in and for three namespaces
// with same-numbered devices, as on a container host: each counts exactly
// the packets of its device or namespace, in every section, and none of
// the same-numbered device of another namespace. Index-only -I would count
// b's and c's together, a's end towards b with b's veth, and every
// namespace's loopback on the host's.
func TestNetns(t *testing.T) {
	requireRoot(t)
	tr := newTrio(t)
	pathA, pathB := "/run/netns/"+tr.a, "/run/netns/"+tr.b
	pidC := fmt.Sprintf("pid:%d", tr.cProcess)
	inodeA := fmt.Sprintf("inode:%d", inode(t, "/run/netns/"+tr.a))
	udp := []string{"--input", "--output", "-p", "udp", "-D", closedPort}
	lo := []string{"--input", "--output", "-p", "udp", "-d", "127.0.0.1", "-D", tr.loPort}
	icmp := []string{"--consume", "--no_drop", "-p", "icmp"}
	with := func(base []string, args ...string) []string { return append(append([]string{}, base...), args...) }
	// At net:net_dev_xmit a veth has handed the skb to its peer already:
	// skb->dev is the peer, in the peer's namespace, so the row counts
	// there (the tracepoint's own dev argument is not read).
	cases := []nsCase{
		// The veth ends in b and c, and a's towards b: one index.
		{ns: tr.b, args: with(udp, "-I", tr.dev), rx: toB, xmit: toB, drop: toB},
		{ns: tr.c, args: with(udp, "-I", tr.dev), rx: toC, xmit: toC, drop: toC},
		{ns: tr.a, args: with(udp, "-I", tr.aB), queue: toB},
		{args: with(udp, "--netns", pathB), rx: toB, xmit: toB, drop: toB},
		{args: with(udp, "--netns", pidC), rx: toC, xmit: toC, drop: toC},
		{args: with(udp, "--netns", inodeA), queue: toB + toC},
		{args: with(udp, "--netns", pathB, "-I", tr.dev), rx: toB, xmit: toB, drop: toB},
		{args: with(udp, "--netns", pidC, "-I", tr.dev), rx: toC, xmit: toC, drop: toC},
		{args: with(udp, "--netns", inodeA, "-I", tr.aB), queue: toB},
		// Every namespace's lo is index 1.
		{args: with(lo, "-I", "lo")},
		{ns: tr.b, args: with(lo, "-I", "lo"), rx: overLo, queue: overLo, xmit: overLo, drop: overLo},
		{ns: tr.c, args: with(lo, "-I", "lo")},
		{args: with(lo, "--netns", pathB), rx: overLo, queue: overLo, xmit: overLo, drop: overLo},
		// a consumes the ICMP errors, on its end towards their sender.
		{ns: tr.a, args: with(icmp, "-I", tr.aB), consume: toB},
		{ns: tr.a, args: with(icmp, "-I", tr.aC), consume: toC},
		{ns: tr.b, args: with(icmp, "-I", tr.dev)},
		{args: with(icmp, "--netns", pathA), consume: toB + toC},
	}
	runs := make([]*run, len(cases))
	for i, c := range cases {
		runs[i] = startSkbstatIn(t, c.ns, append([]string{"-i", "60"}, c.args...)...)
	}
	tr.send(t, tr.a, toB, tr.aB4, tr.b4, closedPort)
	tr.send(t, tr.a, toC, tr.aC4, tr.c4, closedPort)
	tr.send(t, tr.b, overLo, "127.0.0.1", "127.0.0.1", tr.loPort)
	settle()
	for i, c := range cases {
		ivs := runs[i].stop(t, syscall.SIGINT)
		name := fmt.Sprintf("skbstat %s (in %q)", strings.Join(c.args, " "), c.ns)
		for _, m := range []struct {
			what    string
			section string
			got     uint64
			want    uint64
		}{
			{"INGRESS net:netif_receive_skb", "INGRESS", sum(ivs, rowCount("INGRESS", "net:netif_receive_skb")), c.rx},
			{"EGRESS net:net_dev_queue", "EGRESS", sum(ivs, rowCount("EGRESS", "net:net_dev_queue")), c.queue},
			{"EGRESS net:net_dev_xmit", "EGRESS", sum(ivs, rowCount("EGRESS", "net:net_dev_xmit")), c.xmit},
			{"DROP NO_SOCKET", "DROP", sum(ivs, stackCount("DROP", "NO_SOCKET")), c.drop},
			{"CONSUME", "CONSUME", sum(ivs, stackCount("CONSUME", "")), c.consume},
		} {
			if len(ivs) == 0 || ivs[0][m.section] == nil {
				continue // not a section of this case
			}
			if m.got != m.want {
				t.Errorf("%s: %s %d, want %d\n%s", name, m.what, m.got, m.want, runs[i].stdout.String())
			}
		}
	}
}

// TestNetnsBadInput: --netns values that name no network namespace, and
// -I devices not in the namespace, are usage errors: exit 2, one line, no
// program loaded and nothing attached. (Every run makes one map, at
// init: cilium/ebpf's rlimit package probes memory accounting with it.)
func TestNetnsBadInput(t *testing.T) {
	requireRoot(t)
	tr := newTrio(t)
	b := "/run/netns/" + tr.b
	unknown := fmt.Sprintf("inode:%d", 1+rand.IntN(1000)) // no namespace has so low a number
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--netns", "/etc/hostname"}, "--netns /etc/hostname: not a network namespace"},
		{[]string{"--netns", "/proc/self/ns/mnt"}, "--netns /proc/self/ns/mnt: not a network namespace"},
		{[]string{"--netns", "/nonexistent/netns"}, "--netns /nonexistent/netns: open /nonexistent/netns: no such file or directory"},
		{[]string{"--netns", "pid:2147483647"}, "--netns pid:2147483647: no such process"},
		{[]string{"--netns", "pid:x"}, "--netns pid:x: not a process id"},
		{[]string{"--netns", "inode:-1"}, "--netns inode:-1: not an inode number"},
		{[]string{"--netns", unknown, "-I", "lo"}, "--netns " + unknown + ": no file under /proc/[0-9]*/ns/net or /run/netns/* opens that namespace, so -I cannot name its devices"},
		{[]string{"--netns", b, "-I", tr.aB}, "-I " + tr.aB + ": no such network device in netns " + b + " (devices: lo, " + tr.dev + ")"},
		{[]string{"--netns", fmt.Sprintf("pid:%d", tr.cProcess), "-I", tr.aC}, "-I " + tr.aC + ": no such network device in netns pid:"},
	} {
		argv := append([]string{skbstatBin}, c.args...)
		straced := haveStrace()
		trace := t.TempDir() + "/strace"
		if straced {
			argv = append([]string{"strace", "-f", "-qq", "-e", "trace=bpf", "-o", trace}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		cmd.Run()
		out := stderr.String()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("skbstat %s: exit %d, want 2; stderr %q", strings.Join(c.args, " "), code, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "skbstat: "+c.msg) {
			t.Errorf("skbstat %s: %q, want one line starting %q", strings.Join(c.args, " "), out, "skbstat: "+c.msg)
		}
		if !straced {
			continue
		}
		calls, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"BPF_PROG_LOAD", "BPF_LINK_CREATE", "BPF_RAW_TRACEPOINT_OPEN"} {
			if strings.Contains(string(calls), cmd) {
				t.Errorf("skbstat %s: %s before the usage error:\n%s", strings.Join(c.args, " "), cmd, calls)
			}
		}
	}
	if !haveStrace() {
		t.Skip("strace is not installed: exit statuses and messages checked, not the absence of BPF system calls")
	}
}

func haveStrace() bool {
	_, err := exec.LookPath("strace")
	return err == nil
}

// TestNetnsUndecided drops datagrams that have neither device nor socket:
// queued unread to a UDP socket (which overwrites skb->dev with scratch
// values) and dropped when it closes. --netns cannot tell their namespace,
// so DROP counts each in its note, and none in a stack.
func TestNetnsUndecided(t *testing.T) {
	requireRoot(t)
	tr := newTrio(t)
	const n = 5
	port := fmt.Sprint(40000 + rand.IntN(20000))
	undecided := "[not decided: no device or socket to tell the network namespace]"
	r := startSkbstat(t, "-i", "60", "--netns", "/run/netns/"+tr.b, "-p", "udp", "-d", "127.0.0.1", "-D", port)
	hold := exec.Command("ip", "netns", "exec", tr.b, trafficBin, "serve", "-udp", port, "-addr", "127.0.0.1", "-unread", "-timeout", "1s")
	out := &lockedBuffer{}
	hold.Stdout, hold.Stderr = out, out
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "serve: listening udp"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("traffic serve -unread did not listen: %s", out.String())
		}
	}
	tr.send(t, tr.b, n, "127.0.0.1", "127.0.0.1", port)
	if err := hold.Wait(); err != nil {
		t.Fatalf("traffic serve -unread: %v: %s", err, out.String())
	}
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	if got, all := sum(ivs, stackCount("DROP", undecided)), sum(ivs, stackCount("DROP", "")); got != n || all != n {
		t.Errorf("DROP %s %d of %d, want %d of %d\n%s", undecided, got, all, n, n, r.stdout.String())
	}
}
