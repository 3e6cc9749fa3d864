package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Datagrams sent per case: every one goes to a closed port, so each is
// dropped once with reason NO_SOCKET and answered by one ICMP error.
const datagrams = 10

const (
	srcPort    = "5555"
	closedPort = "9999"
)

func hostPort(addr, port string) string {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), mustPort(port)).String()
}

func mustPort(s string) uint16 {
	var p uint16
	fmt.Sscan(s, &p)
	return p
}

// sendUDP sends n datagrams from a (source port srcPort) to b's closed port.
func (p *pair) sendUDP(t *testing.T, n int, from, to string, extra ...string) {
	t.Helper()
	args := append([]string{"udp", "-n", fmt.Sprint(n), "-src", hostPort(from, srcPort)}, extra...)
	p.traffic(t, p.a, append(args, hostPort(to, closedPort))...)
}

type filterCase struct {
	args []string
	ns   string // namespace to run skbstat in; "" is the host's
	want uint64 // DROP count with reason NO_SOCKET
}

// TestFilterOptions runs one skbstat per filter at the same time, sends one
// burst of datagrams, and checks that each option includes or excludes it.
func TestFilterOptions(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	for _, fam := range []struct {
		name, src, dst, srcNet, otherNet string
	}{
		{"IPv4", p.a4, p.b4, p.a4 + "/24", "10.99.99.0/24"},
		{"IPv6", p.a6, p.b6, p.a6 + "/64", "fd00:99::/64"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// Every case but -N other and -s/-d on one side names the
			// destination too, so that no other traffic on the machine is
			// counted.
			d := []string{"-d", fam.dst}
			n := uint64(datagrams)
			cases := []filterCase{
				{args: []string{"-s", fam.src}, want: n},
				{args: []string{"-s", fam.dst}, want: 0},
				{args: []string{"-s", fam.srcNet}, want: n},
				{args: []string{"-d", fam.dst}, want: n},
				{args: []string{"-d", fam.src}, want: 0},
				{args: []string{"-N", fam.dst}, want: n},
				{args: []string{"-N", fam.src}, want: n},
				{args: []string{"-N", fam.otherNet}, want: 0},
				{args: append([]string{"-S", srcPort}, d...), want: n},
				{args: append([]string{"-S", "5556"}, d...), want: 0},
				{args: append([]string{"-D", closedPort}, d...), want: n},
				{args: append([]string{"-D", "9990-9998"}, d...), want: 0},
				{args: append([]string{"-D", "9999-10005"}, d...), want: n},
				{args: append([]string{"-P", srcPort}, d...), want: n},
				{args: append([]string{"-P", closedPort}, d...), want: n},
				{args: append([]string{"-P", "1-100"}, d...), want: 0},
				{args: append([]string{"-p", "udp"}, d...), want: n},
				{args: append([]string{"-p", "tcp"}, d...), want: 0},
				{args: append([]string{"-I", p.bDev}, d...), ns: p.b, want: n},
				{args: append([]string{"-I", "lo"}, d...), ns: p.b, want: 0},
				{args: []string{"-s", fam.src, "-d", fam.dst, "-p", "udp", "-S", srcPort, "-D", closedPort}, want: n},
			}
			runs := make([]*run, len(cases))
			for i, c := range cases {
				runs[i] = startSkbstatIn(t, c.ns, append([]string{"-i", "60"}, c.args...)...)
			}
			p.sendUDP(t, datagrams, fam.src, fam.dst)
			settle()
			for i, c := range cases {
				ivs := runs[i].stop(t, syscall.SIGINT)
				if got := sum(ivs, stackCount("DROP", "NO_SOCKET")); got != c.want {
					t.Errorf("skbstat %s: %d NO_SOCKET drops, want %d\n%s", strings.Join(c.args, " "), got, c.want, runs[i].stdout.String())
				}
			}
		})
	}
}

// settle gives the receiving namespace's softirq time to finish with the
// last packet before skbstat is stopped.
func settle() { time.Sleep(300 * time.Millisecond) }

// TestDropStack checks the stack and reason of a UDP datagram to a closed
// port: dropped in the UDP receive path, reason NO_SOCKET.
func TestDropStack(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	for _, fam := range []struct{ name, src, dst, fn string }{
		{"IPv4", p.a4, p.b4, "__udp4_lib_rcv+0x"},
		{"IPv6", p.a6, p.b6, "__udp6_lib_rcv+0x"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			r := startSkbstat(t, "-i", "60", "-d", fam.dst, "-p", "udp")
			p.sendUDP(t, datagrams, fam.src, fam.dst)
			settle()
			ivs := r.stop(t, syscall.SIGINT)
			if len(ivs) != 1 {
				t.Fatalf("%d intervals, want the one partial interval:\n%s", len(ivs), r.stdout.String())
			}
			// The first datagram takes another path through the neighbour
			// code, so the stacks differ below the drop; each one must be
			// the UDP receive path with reason NO_SOCKET.
			drop := ivs[0]["DROP"]
			if drop == nil || len(drop.stacks) == 0 {
				t.Fatalf("want DROP stacks:\n%s", r.stdout.String())
			}
			if n := drop.total("NO_SOCKET"); n != datagrams {
				t.Errorf("%d NO_SOCKET drops, want %d\n%s", n, datagrams, r.stdout.String())
			}
			for _, st := range drop.stacks {
				if st.reason != "NO_SOCKET" || !hasFramePrefix(st.frames, fam.fn) {
					t.Errorf("DROP stack %q %v, want NO_SOCKET with a %s frame", st.reason, st.frames, fam.fn)
				}
			}
		})
	}
}

// checkTracepointRows checks that each tracepoint row counted want.
func checkTracepointRows(t *testing.T, ivs []interval, want uint64, context string) {
	t.Helper()
	for _, row := range []struct{ section, name string }{
		{"INGRESS", "net:netif_receive_skb"},
		{"EGRESS", "net:net_dev_queue"},
		{"EGRESS", "net:net_dev_xmit"},
	} {
		if n := sum(ivs, rowCount(row.section, row.name)); n != want {
			t.Errorf("%s %s: %d, want %d\n%s", row.section, row.name, n, want, context)
		}
	}
}

func hasFramePrefix(frames []string, prefix string) bool {
	for _, f := range frames {
		if strings.HasPrefix(f, prefix) {
			return true
		}
	}
	return false
}

// TestSections checks the INGRESS and EGRESS tracepoint rows and CONSUME
// for one burst: each datagram leaves a through net_dev_queue and
// net_dev_xmit and enters b through netif_receive_skb; each ICMP error b
// returns is consumed by a's icmp_rcv.
func TestSections(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	for _, fam := range []struct{ name, src, dst, icmp string }{
		{"IPv4", p.a4, p.b4, "icmp"},
		{"IPv6", p.a6, p.b6, "icmp6"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			sections := []string{"--input", "--output", "--no_drop", "-i", "60"}
			udp := startSkbstat(t, append(sections, "-s", fam.src, "-d", fam.dst, "-p", "udp")...)
			other := startSkbstat(t, append(sections, "-s", fam.src, "-d", fam.dst, "-p", "tcp")...)
			consume := startSkbstat(t, "--consume", "--no_drop", "-i", "60", "-s", fam.dst, "-d", fam.src, "-p", fam.icmp)
			p.sendUDP(t, datagrams, fam.src, fam.dst)
			settle()
			checkTracepointRows(t, udp.stop(t, syscall.SIGINT), datagrams, udp.stdout.String())
			none := other.stop(t, syscall.SIGINT)
			for _, sec := range []string{"INGRESS", "EGRESS"} {
				if len(none) != 1 || none[0][sec] == nil || len(none[0][sec].rows) != 0 {
					t.Errorf("-p tcp: want an empty %s section:\n%s", sec, other.stdout.String())
				}
			}
			consumed := consume.stop(t, syscall.SIGINT)
			if n := sum(consumed, stackCount("CONSUME", "")); n != datagrams {
				t.Errorf("CONSUME of ICMP errors: %d, want %d\n%s", n, datagrams, consume.stdout.String())
			}
		})
	}
}

// TestIntervals sends a paced stream across several short intervals: every
// datagram is counted in exactly one of them.
func TestIntervals(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	const n = 40
	r := startSkbstat(t, "-i", "0.1", "-d", p.b4, "-p", "udp")
	p.sendUDP(t, n, p.a4, p.b4, "-interval", "20ms")
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	if got := sum(ivs, stackCount("DROP", "NO_SOCKET")); got != n {
		t.Errorf("%d drops over %d intervals, want %d", got, len(ivs), n)
	}
	busy := 0
	for _, iv := range ivs {
		if iv["DROP"].total("") > 0 {
			busy++
		}
	}
	if busy < 3 {
		t.Errorf("the stream spread over %d intervals, want at least 3 (of %d)", busy, len(ivs))
	}
}

// TestCount checks that -c ends skbstat by itself after that many intervals.
func TestCount(t *testing.T) {
	requireRoot(t)
	r := startSkbstat(t, "-i", "0.05", "-c", "3", "--consume", "-p", "udp", "-d", "192.0.2.1")
	ivs := r.wait(t)
	if len(ivs) != 3 {
		t.Errorf("%d intervals, want 3:\n%s", len(ivs), r.stdout.String())
	}
	for _, iv := range ivs {
		if iv["CONSUME"] == nil || iv["DROP"] == nil {
			t.Errorf("each interval prints CONSUME and DROP, even empty:\n%s", r.stdout.String())
		}
	}
}

// TestCleanup checks that after SIGINT and after SIGTERM no program or link
// of skbstat's is left in the kernel, and that the check sees them while
// skbstat runs.
func TestCleanup(t *testing.T) {
	requireRoot(t)
	// Another skbstat, attached throughout: the checks see only the
	// test's own programs, and it keeps its own.
	bystander := startSkbstat(t, "-i", "60")
	theirs := heldBy(t, bystander.cmd.Process.Pid)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			r := startSkbstat(t, "--input", "--output", "--consume", "-i", "60")
			mine := heldBy(t, r.cmd.Process.Pid)
			// The program that has the kernel name addresses for stacks,
			// where it can, is loaded in the background: it may be
			// held already, or not yet.
			probes := slices.DeleteFunc(slices.Clone(mine.names), func(name string) bool { return name == "skbstat_names" })
			sort.Strings(probes)
			want := []string{"skbstat_consume", "skbstat_drop", "skbstat_queue", "skbstat_rx", "skbstat_xmit"}
			if !slices.Equal(probes, want) || len(mine.links) != len(want) {
				t.Fatalf("while running: programs %v and %d links, want %v and one link each", mine.names, len(mine.links), want)
			}
			mine = heldBy(t, r.cmd.Process.Pid) // with the naming program, if it came since
			r.stop(t, sig)
			// The kernel frees programs shortly after their last reference
			// goes, not at once.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				left := mine.left(t)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %s: %v of skbstat's are left", sig, left)
				}
			}
		})
	}
	if left := theirs.left(t); len(left) != len(theirs.progs)+len(theirs.links) {
		t.Errorf("the other skbstat lost programs or links: %d of %d are left", len(left), len(theirs.progs)+len(theirs.links))
	}
	bystander.stop(t, syscall.SIGINT)
}

func TestBadInput(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-S", "70000"}, "-S 70000: port out of range 0-65535"},
		{[]string{"-P", "9-3"}, "-P 9-3: range is reversed"},
		{[]string{"-p", "foo"}, "-p foo: unknown protocol (a name such as tcp, or a number 0-255)"},
		{[]string{"-s", "300.1.1.1"}, "-s 300.1.1.1: not an IP address or prefix"},
		{[]string{"-s", "10.0.0.0/8", "-d", "fd00::1"}, "-s 10.0.0.0/8 -d fd00::1: -s is IPv4 and -d is IPv6, so no packet can match"},
		{[]string{"-i", "0"}, "-i 0: not a positive number of seconds"},
		{[]string{"-i", "abc"}, "-i abc: not a positive number of seconds"},
		{[]string{"-c", "-1"}, "-c -1: not a count of intervals"},
		{[]string{"-I", "nosuchdev0"}, "-I nosuchdev0: no such network device (devices: "},
		{[]string{"--no_drop"}, "--no_drop: nothing left to trace (add --input, --output or --consume)"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--btf", "/nonexistent/vmlinux"}, "--btf /nonexistent/vmlinux: BTF file /nonexistent/vmlinux: "},
		{[]string{"--layout", "guess"}, "--layout guess: not btf, calibrate or auto"},
		{[]string{"--layout", "calibrate", "--btf", "/x"}, "--layout calibrate: --btf /x gives the layout already"},
		{[]string{"--attach", "uprobe"}, "--attach uprobe: unknown attach mechanism (auto, fentry, kprobe-multi or kprobe)"},
		{[]string{"-f", "no_such_function_xyz"}, "-f no_such_function_xyz: no kernel function no_such_function_xyz in the kernel's BTF"},
		{[]string{"-f", "schedule"}, "-f schedule: function schedule has no struct sk_buff * parameter"},
		{[]string{"--folded", "--json"}, "--folded: not with --json: one format at a time"},
		{[]string{"--listen", "127.0.0.1:http-alt-x"}, "--listen 127.0.0.1:http-alt-x: listen tcp: "},
		{[]string{"--listen", "192.0.2.1:9432"}, "--listen 192.0.2.1:9432: listen tcp 192.0.2.1:9432: bind: cannot assign requested address"},
		{[]string{"--listen", busyAddr(t)}, "--listen " + busyAddr(t) + ": listen tcp " + busyAddr(t) + ": bind: address already in use"},
		{[]string{"--textfile", "/nonexistent/skbstat.prom"}, "--textfile /nonexistent/skbstat.prom: no directory /nonexistent"},
		{[]string{"-q"}, "--quiet: nothing would be output (add --listen or --textfile)"},
		{[]string{"--stack-depth", "0"}, "--stack-depth 0: not a number of frames from 1 to 127"},
		{[]string{"--stack-depth", "128"}, "--stack-depth 128: not a number of frames from 1 to 127"},
		{[]string{"--locations", "--stack-depth", "5"}, "--stack-depth 5: not with --locations, which records no stack"},
		{[]string{"--locations", "--no_drop", "--input"}, "--locations: no DROP or CONSUME section to count by location (add --consume)"},
		{[]string{"--max-series", "0", "--textfile", "/tmp/x.prom"}, "--max-series 0: not a positive number"},
		{[]string{"--folded", "--input"}, "--folded: prints DROP and CONSUME stacks only: not with --input, --output or -f"},
		{[]string{"--folded", "--no_drop", "--output"}, "--folded: prints DROP and CONSUME stacks only"},
	} {
		// Bad input exits at once; a run that traces instead is ended.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, skbstatBin, c.args...)
		out, err := cmd.CombinedOutput()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("skbstat %s: exit %d (%v), want 2; output %q", strings.Join(c.args, " "), code, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "skbstat: "+c.msg) {
			t.Errorf("skbstat %s: %q, want one line starting %q", strings.Join(c.args, " "), out, "skbstat: "+c.msg)
		}
	}
}

var busy struct {
	once sync.Once
	ln   net.Listener // held: a listener no longer referenced is closed when collected
	addr string
}

// busyAddr is a loopback address that this test process listens on, for
// the whole run.
func busyAddr(t *testing.T) string {
	busy.once.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		busy.ln, busy.addr = ln, ln.Addr().String()
	})
	return busy.addr
}

func startSkbstatIn(t *testing.T, ns string, args ...string) *run {
	t.Helper()
	if ns == "" {
		return startSkbstat(t, args...)
	}
	return startCommand(t, append(append([]string{"ip", "netns", "exec", ns}, skbstatArgv()...), args...))
}

// TestNoFunctionTracing runs --input and --output on this machine's kernel,
// which has neither kprobes nor fentry: the tracepoint rows still count,
// one line names the functions that could not be attached and why, and
// forcing a mechanism the kernel lacks is a runtime error (exit 1).
func TestNoFunctionTracing(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe"); err == nil {
		t.Skip("this kernel has kprobes: the VM kernel matrix covers function rows")
	}
	p := newPair(t)
	r := startSkbstat(t, "--input", "--output", "--no_drop", "-i", "60", "-s", p.a4, "-d", p.b4, "-p", "udp")
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	if n := sum(ivs, rowCount("INGRESS", "net:netif_receive_skb")); n != datagrams {
		t.Errorf("net:netif_receive_skb %d, want %d", n, datagrams)
	}
	var notAttached []string
	for _, line := range strings.Split(r.stderr.String(), "\n") {
		if strings.HasPrefix(line, "skbstat: not attached: ") {
			notAttached = append(notAttached, line)
		}
	}
	if len(notAttached) != 1 || !strings.Contains(notAttached[0], "udp_rcv, ") || !strings.Contains(notAttached[0], "ip_output") ||
		!strings.Contains(notAttached[0], "kprobe: this kernel has no kprobes") {
		t.Errorf("want one line naming the functions and the cause, got %q", notAttached)
	}

	cmd := exec.Command(skbstatBin, "--attach", "kprobe", "--input", "-c", "1", "-i", "0.01")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "skbstat: --attach kprobe: this kernel has no kprobes") {
		t.Errorf("--attach kprobe: exit %d, %q; want exit 1 saying the kernel has no kprobes", code, out)
	}
	// A function the user names must count, or skbstat says why not.
	cmd = exec.Command(skbstatBin, "-f", "ip_send_skb:1", "-c", "1", "-i", "0.01")
	out, _ = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(string(out), "skbstat: -f ip_send_skb: ") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("-f ip_send_skb:1: exit %d, %q; want exit 1 with one line naming -f and the cause", code, out)
	}
}

// TestExternalBTF reads the kernel layout from a BTF file, as on kernels
// without /sys/kernel/btf/vmlinux, and counts as with the kernel's own.
func TestExternalBTF(t *testing.T) {
	requireRoot(t)
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		t.Fatalf("this test copies the kernel's BTF: %v", err)
	}
	file := t.TempDir() + "/vmlinux.btf"
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPair(t)
	r := startSkbstat(t, "--btf", file, "-i", "60", "-d", p.b4, "-p", "udp")
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	if n := sum(r.stop(t, syscall.SIGINT), stackCount("DROP", "NO_SOCKET")); n != datagrams {
		t.Errorf("%d NO_SOCKET drops with --btf, want %d", n, datagrams)
	}
}

// TestUnprivileged runs skbstat as nobody: a runtime failure (exit 1) that
// says what to do.
func TestUnprivileged(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is needed to drop privileges")
	}
	bin := t.TempDir() + "/skbstat"
	raw, err := os.ReadFile(skbstatBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "-c", "1", "-i", "0.1")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "as root, or with CAP_BPF and CAP_PERFMON") {
		t.Errorf("as nobody: exit %d, %q; want exit 1 saying to run as root", code, out)
	}
	if progs := createdBy(t, 65534); len(progs) != 0 {
		t.Errorf("programs loaded as nobody: %v", progs)
	}
	// A port below 1024 needs a privilege nobody lacks: bad input, found
	// before anything is loaded.
	cmd = exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "--listen", "127.0.0.1:80")
	out, _ = cmd.CombinedOutput()
	if want := "skbstat: --listen 127.0.0.1:80: listen tcp 127.0.0.1:80: bind: permission denied\n"; cmd.ProcessState.ExitCode() != 2 || string(out) != want {
		t.Errorf("as nobody, --listen 127.0.0.1:80: exit %d, %q; want exit 2, %q", cmd.ProcessState.ExitCode(), out, want)
	}
}

// createdBy lists the BPF programs on the machine that uid loaded.
func createdBy(t *testing.T, uid uint32) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return ids
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		if by, ok := info.CreatedByUID(); ok && by == uid {
			ids = append(ids, id)
		}
	}
}

// TestDumpBPF checks that --dump-bpf prints each program with the filter's
// constants as immediates, and loads nothing, also where function rows are
// asked for (no trial program, no feature probe): it runs without a capability
// (loading a program or making a map would need CAP_BPF or CAP_SYS_ADMIN),
// so that other BPF tools on the machine cannot blur the check.
// TestNoBPFCalls runs, as root, what must create nothing in the kernel:
// --dump-bpf of every section with -f, bad input and --help make no bpf()
// or perf_event_open() call at all, not even a feature probe.
func TestNoBPFCalls(t *testing.T) {
	requireRoot(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is not installed (test/all.sh installs it)")
	}
	for _, args := range [][]string{
		{"--dump-bpf", "--input", "--output", "--consume", "-f", "ip_rcv", "-d", "10.1.2.3", "-p", "udp"},
		{"-S", "70000"},
		{"--listen", "300.0.0.1:1"},
		// Refused once the layout is read: nothing may be prepared before.
		{"-f", "skbstat_no_such_function"},
		{"--btf", "/nonexistent/vmlinux"},
		{"--help"},
	} {
		trace := filepath.Join(t.TempDir(), "trace")
		cmd := exec.Command(strace, append([]string{"-f", "-qq", "-e", "trace=bpf,perf_event_open", "-e", "signal=none", "-o", trace, skbstatBin}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil && cmd.ProcessState.ExitCode() != 2 {
			t.Fatalf("skbstat %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		calls, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) > 0 {
			t.Errorf("skbstat %s called into BPF:\n%s", strings.Join(args, " "), calls)
		}
	}
}

func TestDumpBPF(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--",
		skbstatBin, "--dump-bpf", "--input", "--consume", "-d", "10.1.2.3", "-p", "udp")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	text := string(out)
	// 10.1.2.3 as an immediate: the address's bytes loaded as this
	// machine's 32-bit word.
	addr := netip.MustParseAddr("10.1.2.3").As4()
	imm := fmt.Sprintf("imm: %d <", int32(binary.NativeEndian.Uint32(addr[:])))
	for _, want := range []string{
		"; skb:consume_skb (skbstat_consume, ", "; skb:kfree_skb (skbstat_drop, ", "; net:netif_receive_skb (skbstat_rx, ",
		"; filter: address at header offset 16 in 10.1.2.3/32", imm, "Call FnGetStackid",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("--dump-bpf output lacks %q:\n%s", want, text)
		}
	}
	checkDumpHeaders(t, text)
}

var (
	dumpHeaderRE = regexp.MustCompile(`^; (\S+) \([^)]+\): (\d+) instructions(?:, (\d+) run by a packet the last condition rejects)?$`)
	dumpInsnRE   = regexp.MustCompile(`^\s+\d+: `)
)

// checkDumpHeaders fails unless each program's header in a --dump-bpf of a
// filter counts the instructions listed under it, and the run of a packet
// the filter rejects as shorter than that.
func checkDumpHeaders(t *testing.T, dump string) {
	t.Helper()
	var name string
	var said, listed int
	end := func() {
		if name != "" && listed != said {
			t.Errorf("--dump-bpf: %s: header says %d instructions, %d listed", name, said, listed)
		}
	}
	for line := range strings.Lines(dump) {
		line = strings.TrimSuffix(line, "\n")
		if m := dumpHeaderRE.FindStringSubmatch(line); m != nil {
			end()
			name, listed = m[1], 0
			said, _ = strconv.Atoi(m[2])
			rejected, _ := strconv.Atoi(m[3])
			if rejected <= 0 || rejected >= said {
				t.Errorf("--dump-bpf: %q: want the run of a rejected packet, shorter than the program", line)
			}
			continue
		}
		if dumpInsnRE.MatchString(line) {
			listed++
		}
	}
	end()
	if name == "" {
		t.Errorf("--dump-bpf: no program header:\n%s", dump)
	}
}
