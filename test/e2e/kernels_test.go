package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skbstat/skbstat/test/vm"
)

// mechanisms says which attach mechanisms each kernel of the matrix offers,
// as measured (../shared/docs/kernel-matrix.md). The test checks that skbstat
// finds exactly these by trying.
var mechanisms = map[string][]string{
	"5.10-amd64": {"fentry", "kprobe"},
	"6.1-amd64":  {"fentry", "kprobe"},
	"6.12-amd64": {"fentry", "kprobe-multi", "kprobe"},
	"6.1-arm64":  {"kprobe"},
	"6.1-armhf":  {"kprobe"},
	"6.1-mipsel": {"kprobe"},
	"6.1-s390x":  {"kprobe"},
}

// vmPackets is how many packets of each kind the VM script sends.
const vmPackets = 10

// vmScript runs skbstat in the VM. For each mechanism it starts one skbstat
// per traffic kind (and one whose filter excludes everything), sends the
// traffic over loopback, stops them with SIGINT and prints their output
// between markers. Drops, consumes and --func run once.
const vmScript = `
sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 net.ipv6.icmp.ratelimit=0 2>/dev/null
# A second network namespace, joined by a veth pair.
unshare -n sleep 100000 &
peer=$!
sleep 0.5
traffic veth -pid $peer 10.77.0.1/24 10.77.0.2/24 || exit 1
start() { # name, skbstat arguments...
	name=$1; shift
	skbstat -v -i 600 "$@" >/tmp/$name.out 2>/tmp/$name.err &
	echo $! >/tmp/$name.pid
}
ready() { # name: wait until attached, or say why not
	until grep -q "skbstat: tracing" /tmp/$1.err; do
		kill -0 $(cat /tmp/$1.pid) 2>/dev/null || return 1
		sleep 0.2
	done
}
stop() { # name
	kill -INT $(cat /tmp/$1.pid) 2>/dev/null
	wait $(cat /tmp/$1.pid)
	echo "=== $1 exit=$?"
	cat /tmp/$1.err
	echo "=== $1 stdout"
	cat /tmp/$1.out
	echo "=== $1 end"
}
send() {
	traffic udp -n $N -src 127.0.0.1:5555 127.0.0.1:9999 >/dev/null
	traffic udp -n $N -src [::1]:5555 [::1]:9999 >/dev/null
	traffic tcp -n $N -src 127.0.0.1:5557 127.0.0.1:9998 >/dev/null
	traffic tcp -n $N -src [::1]:5558 [::1]:9998 >/dev/null
	traffic udp -n $N -src 10.77.0.1:5555 10.77.0.2:9999 >/dev/null
}
for m in fentry kprobe-multi kprobe; do
	start $m-udp4 --attach $m --input --output --no_drop -s 127.0.0.1 -S 5555 -p udp
	if ! ready $m-udp4; then
		echo "=== mechanism $m unavailable: $(grep -- "--attach" /tmp/$m-udp4.err)"
		continue
	fi
	start $m-udp6 --attach $m --input --output --no_drop -s ::1 -S 5555 -p udp
	start $m-tcp4 --attach $m --input --output --no_drop -s 127.0.0.1 -S 5557 -p tcp
	start $m-tcp6 --attach $m --input --output --no_drop -s ::1 -S 5558 -p tcp
	start $m-veth4 --attach $m --input --output --no_drop -s 10.77.0.1 -S 5555 -p udp
	start $m-none --attach $m --input --output --no_drop -N 127.0.0.2 -p udp
	start $m-func --attach $m --no_drop -f ip_send_skb:1 -f ip_output:2 -s 127.0.0.1 -S 5555
	for c in udp6 tcp4 tcp6 veth4 none func; do ready $m-$c; done
	send
	sleep 1
	for c in udp4 udp6 tcp4 tcp6 veth4 none func; do stop $m-$c; done
done
start drop -p udp -d 127.0.0.1 -D 9999
start consume --consume --no_drop -p icmp -d 127.0.0.1
# One run per kind of filter, each including or excluding the traffic.
# (A loop at the end of a pipe would run in a subshell, whose children
# the script could not wait for.)
echo "$FILTERS" >/tmp/filters
while read name args; do start f-$name $args; done </tmp/filters
ready drop; ready consume
for name in $(echo "$FILTERS" | cut -d' ' -f1); do ready f-$name; done
send
sleep 1
stop drop; stop consume
for name in $(echo "$FILTERS" | cut -d' ' -f1); do stop f-$name; done
sleep 1
# Counter updates with the JIT on, where the kernel has one (32-bit ARM's
# has no atomic add).
jit=$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null)
echo "=== JIT by default: $jit"
if [ -n "$jit" ]; then
	echo 1 >/proc/sys/net/core/bpf_jit_enable
	start jit --input -p udp -d 127.0.0.1 -D 9999
	ready jit
	send
	sleep 1
	stop jit
	echo $jit >/proc/sys/net/core/bpf_jit_enable
fi
echo "=== left: $(traffic progs | grep -c skbstat_)"
if [ -x /bin/layout.test ]; then
	layout.test -test.run '^TestCalibrateMatchesBTF$' -test.v >/tmp/calibrate.out 2>&1
	echo "=== calibrate-vs-btf exit=$?"
	cat /tmp/calibrate.out
	echo "=== calibrate-vs-btf end"
fi
`

// filterRuns are the VM script's runs of one kind of filter each, with what
// they must count of its traffic: in DROP, datagrams to the closed port
// 9999 (udp4, udp6 over lo, veth4 into the other namespace); with
// --output, net:net_dev_queue of the datagrams leaving through the veth
// device skbstat0 (not net:net_dev_xmit: by then the veth has handed the skb
// to its peer, and skb->dev is the peer).
var filterRuns = []struct {
	name, args string
	section    string
	row        string // a row of section; "" for DROP's NO_SOCKET stacks
	want       int    // in multiples of vmPackets
}{
	{"v4addr", "-d 127.0.0.1 -p udp", "DROP", "", 1},
	{"v4net", "-N 10.77.0.0/24 -D 9999", "DROP", "", 1},
	{"v4none", "-d 127.0.0.2 -p udp", "DROP", "", 0},
	{"v6addr", "-s ::1 -D 9999", "DROP", "", 1},
	{"v6net", "-d ::/120 -p udp", "DROP", "", 1},
	// Not fd00::/8: the calibration namespaces of the other skbstat
	// instances drop packets of unique local addresses at closed ports.
	{"v6none", "-d 2001:db8::/32 -p udp", "DROP", "", 0},
	{"port", "-D 9999", "DROP", "", 3},
	{"range", "-S 5550-5559 -D 9990-9999 -p udp", "DROP", "", 3},
	{"rangenone", "-P 10000-10010", "DROP", "", 0},
	{"proto", "-p udp -S 5555", "DROP", "", 3},
	{"protonone", "-p sctp", "DROP", "", 0},
	{"dev", "-I lo -p udp -D 9999", "DROP", "", 2},
	{"devnone", "-I skbstat0 -p udp", "DROP", "", 0},
	{"devqueue", "--output --no_drop -I skbstat0 -s 10.77.0.1 -p udp -D 9999", "EGRESS", "net:net_dev_queue", 1},
	{"devqueuenone", "--output --no_drop -I lo -s 10.77.0.1 -p udp", "EGRESS", "net:net_dev_queue", 0},
}

// filterScript lists filterRuns for the VM script, one "name args" a line.
func filterScript() string {
	var lines []string
	for _, f := range filterRuns {
		lines = append(lines, f.name+" "+f.args)
	}
	return strings.Join(lines, "\n")
}

// onPath lists, per traffic kind, the rows every matching packet passes (on
// loopback, and for veth4 from one namespace to another over a veth pair),
// and those it passes unless the kernel inlined the call (the original saw
// ip_local_out run 0 times on 6.1 for that reason).
var onPath = map[string]struct{ always, unlessInlined []string }{
	"udp4": {
		always: []string{"udp_sendmsg", "ip_output", "ip_finish_output", "ip_finish_output2",
			"net:net_dev_queue", "net:net_dev_xmit", "net:netif_receive_skb",
			"ip_rcv", "ip_local_deliver", "ip_local_deliver_finish", "udp_rcv"},
		unlessInlined: []string{"ip_local_out", "ip_rcv_finish"},
	},
	"veth4": {
		always: []string{"udp_sendmsg", "ip_output", "ip_finish_output", "ip_finish_output2",
			"net:net_dev_queue", "net:net_dev_xmit", "net:netif_receive_skb",
			"ip_rcv", "ip_local_deliver", "ip_local_deliver_finish", "udp_rcv"},
		unlessInlined: []string{"ip_local_out", "ip_rcv_finish", "ip_route_input_noref"},
	},
	"udp6": {
		always: []string{"ip6_output", "ip6_finish_output", "ip6_finish_output2",
			"net:net_dev_queue", "net:net_dev_xmit", "net:netif_receive_skb",
			"ipv6_rcv", "ip6_input", "udpv6_rcv"},
		unlessInlined: []string{"__ip6_local_out", "ip6_rcv_finish", "ip6_input_finish"},
	},
	"tcp4": {
		always: []string{"ip_output", "ip_finish_output", "ip_finish_output2",
			"net:net_dev_queue", "net:net_dev_xmit", "net:netif_receive_skb",
			"ip_rcv", "ip_local_deliver", "ip_local_deliver_finish", "tcp_v4_rcv"},
		unlessInlined: []string{"ip_local_out", "ip_rcv_finish"},
	},
	"tcp6": {
		always: []string{"ip6_output", "ip6_finish_output", "ip6_finish_output2",
			"net:net_dev_queue", "net:net_dev_xmit", "net:netif_receive_skb",
			"ipv6_rcv", "ip6_input", "tcp_v6_rcv"},
		unlessInlined: []string{"__ip6_local_out", "ip6_rcv_finish", "ip6_input_finish"},
	},
}

// TestKernelMatrix boots each Debian kernel of the matrix under qemu and
// checks skbstat's function rows, with every attach mechanism the kernel
// offers, and its drops and consumes, against known traffic.
func TestKernelMatrix(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("boots Debian kernels under qemu: not with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	vm.Each(t, vm.Matrix, func(t *testing.T, k vm.Kernel) {
		files := map[string]string{}
		for guest, pkg := range map[string]string{"/bin/skbstat": "github.com/skbstat/skbstat", "/bin/traffic": "github.com/skbstat/skbstat/test/traffic"} {
			bin, err := vm.BuildStatic(ctx, k, pkg, dir)
			if err != nil {
				t.Fatal(err)
			}
			files[guest] = bin
		}
		// Where the kernel has BTF, calibration must find exactly its
		// offsets: the layout package's own test says so in the VM.
		if k.BTF {
			bin, err := vm.BuildTest(ctx, k, "github.com/skbstat/skbstat/layout", dir)
			if err != nil {
				t.Fatal(err)
			}
			files["/bin/layout.test"] = bin
		}
		res, err := vm.Run(ctx, k, vm.Options{
			Files: files,
			// dummy, for calibration's private namespace.
			Modules: []string{"veth", "dummy"},
			Script:  fmt.Sprintf("N=%d\nFILTERS='%s'\n%s", vmPackets, filterScript(), vmScript),
			Timeout: 10 * time.Minute,
		})
		if err != nil || res.ExitStatus != 0 {
			t.Fatalf("script exit status %d, %v\nconsole:\n%s", res.ExitStatus, err, res.Console)
		}
		t.Logf("%s: prepared in %v, ran in %v", res.Package, res.Prepare.Round(time.Millisecond), res.Boot.Round(time.Millisecond))
		checkKernel(t, k, res.Console)
	})
}

var (
	runRE         = regexp.MustCompile(`(?s)=== (\S+) exit=(\d+)\n(.*?)=== (\S+) stdout\n(.*?)=== (\S+) end\n`)
	unavailableRE = regexp.MustCompile(`=== mechanism (\S+) unavailable: (.*)`)
	leftRE        = regexp.MustCompile(`=== left: (\d+)`)
	jitRE         = regexp.MustCompile(`=== JIT by default: (\d*)`)
	calibrateRE   = regexp.MustCompile(`(?s)=== calibrate-vs-btf exit=(\d+)\n(.*?)=== calibrate-vs-btf end\n`)
	attachedRE    = regexp.MustCompile(`skbstat: \w+: (\S+) attached as (.+)`)
)

// vmRun is one skbstat run in the VM.
type vmRun struct {
	stderr   string
	ivs      []interval
	attached map[string]string // row → mechanism
}

func checkKernel(t *testing.T, k vm.Kernel, console string) {
	kernel := k.Name
	runs := map[string]vmRun{}
	for _, m := range runRE.FindAllStringSubmatch(console, -1) {
		name := m[1]
		if m[2] != "0" {
			t.Errorf("%s: skbstat exit status %s:\n%s", name, m[2], m[3])
			continue
		}
		ivs, err := parseOutput(m[5])
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, m[5])
			continue
		}
		r := vmRun{stderr: m[3], ivs: ivs, attached: map[string]string{}}
		for _, a := range attachedRE.FindAllStringSubmatch(m[3], -1) {
			r.attached[a[1]] = a[2]
		}
		runs[name] = r
	}
	var offered []string
	unavailable := map[string]bool{}
	for _, m := range unavailableRE.FindAllStringSubmatch(console, -1) {
		unavailable[m[1]] = true
		t.Logf("%s: --attach %s refused: %s", kernel, m[1], m[2])
	}
	for _, m := range []string{"fentry", "kprobe-multi", "kprobe"} {
		if !unavailable[m] {
			offered = append(offered, m)
		}
	}
	if fmt.Sprint(offered) != fmt.Sprint(mechanisms[kernel]) {
		t.Errorf("mechanisms that attached: %v, want %v", offered, mechanisms[kernel])
	}
	for _, m := range offered {
		for kind, path := range onPath {
			checkRows(t, m+"-"+kind, runs[m+"-"+kind], m, path.always, path.unlessInlined)
		}
		none := runs[m+"-none"]
		if len(none.attached) == 0 {
			t.Errorf("%s-none: nothing attached:\n%s", m, none.stderr)
		}
		for _, iv := range none.ivs {
			for sec, s := range iv {
				if len(s.rows) != 0 {
					t.Errorf("%s-none: %s counted traffic that its filter excludes: %v", m, sec, s.rows)
				}
			}
		}
		// 6.12 has ip6_pkt_drop only as a compiler clone: it attaches under
		// its plain name wherever a symbol will do (not with fentry: no BTF).
		if kernel == "6.12-amd64" && m != "fentry" && runs[m+"-udp6"].attached["ip6_pkt_drop"] != m {
			t.Errorf("%s-udp6: the clone ip6_pkt_drop.isra.0 not attached as ip6_pkt_drop:\n%s", m, runs[m+"-udp6"].stderr)
		}
		if n := sum(runs[m+"-func"].ivs, rowCount("FUNC", "ip_send_skb")); n != vmPackets {
			t.Errorf("%s-func: ip_send_skb %d, want %d\n%s%v", m, n, vmPackets, runs[m+"-func"].stderr, runs[m+"-func"].ivs)
		}
	}
	// Drop reasons exist since 5.17: 5.10 shows stacks only.
	reason := "NO_SOCKET"
	if strings.HasPrefix(kernel, "5.10") {
		reason = ""
	}
	if n := sum(runs["drop"].ivs, stackCount("DROP", reason)); n != vmPackets {
		t.Errorf("DROP %q: %d, want %d\n%s", reason, n, vmPackets, runs["drop"].stderr)
	}
	checkDropPlace(t, kernel, runs["drop"].ivs)
	if n := sum(runs["consume"].ivs, stackCount("CONSUME", "")); n != vmPackets {
		t.Errorf("CONSUME of ICMP errors: %d, want %d\n%s", n, vmPackets, runs["consume"].stderr)
	}
	if m := leftRE.FindStringSubmatch(console); m == nil || m[1] != "0" {
		t.Errorf("skbstat programs left loaded after exit: %v", m)
	}
	checkFilters(t, reason, runs)
	checkCounting(t, kernel, reason, console, runs)
	checkLayoutSource(t, k, console, runs["drop"].stderr)
	checkTracepointHooks(t, k, runs)
	checkAllocation(t, kernel, runs["drop"].stderr)
	checkNaming(t, kernel, runs["drop"].stderr)
}

// checkNaming checks what named the frames of the stacks: the kernel
// itself since Linux 5.14 (syscall programs), /proc/kallsyms before.
func checkNaming(t *testing.T, kernel, stderr string) {
	want := "skbstat: stack frames: named by the kernel ("
	if strings.HasPrefix(kernel, "5.10") {
		want = "skbstat: stack frames: named from /proc/kallsyms ("
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("no %q in\n%s", want, stderr)
	}
}

// preallocating are the kernels of the matrix that must preallocate the
// stack counters: before Linux 6.1, a tracing program with a map that
// allocates on insert makes the kernel warn, or is refused.
var preallocating = map[string]bool{"5.10-amd64": true}

// checkAllocation checks the allocation of the stack counters skbstat chose
// by trying (its DROP run counted exactly with it, see checkKernel).
func checkAllocation(t *testing.T, kernel, stderr string) {
	want := "stack counters: allocated on insert ("
	if preallocating[kernel] {
		want = "stack counters: preallocated ("
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("no %q in\n%s", want, stderr)
	}
}

// checkTracepointHooks checks that on a kernel with its own BTF every run
// attached its tracepoints as tp_btf, the first of their hooks (a plain
// add would refuse it: it nests).
func checkTracepointHooks(t *testing.T, k vm.Kernel, runs map[string]vmRun) {
	if !k.BTF || counterUpdate(k.Name) == "plain add" {
		return
	}
	for name, r := range runs {
		for probe, how := range r.attached {
			if strings.Contains(probe, ":") && how != "tp_btf" {
				t.Errorf("%s: %s attached as %s, want tp_btf:\n%s", name, probe, how, r.stderr)
			}
		}
	}
}

// counterUpdates is how skbstat must update its counters with the JIT on:
// 32-bit ARM's JIT cannot compile an atomic add.
var counterUpdates = map[string]string{"6.1-armhf": "plain add"}

// counterUpdate is the update skbstat must choose on kernel with the JIT on.
func counterUpdate(kernel string) string {
	if u, ok := counterUpdates[kernel]; ok {
		return u
	}
	return "atomic add"
}

// checkCounting checks the counter update skbstat chose by trying, with
// the JIT as the kernel boots and with the JIT on, where the kernel has
// one (s390x's has none: no bpf_jit_enable).
func checkCounting(t *testing.T, kernel, reason, console string, runs map[string]vmRun) {
	m := jitRE.FindStringSubmatch(console)
	if m == nil {
		t.Errorf("the VM did not say whether its JIT is on")
		return
	}
	t.Logf("%s: bpf_jit_enable %q at boot", kernel, m[1])
	checkDefaultCounting(t, kernel, m[1], runs["drop"].stderr)
	if m[1] != "" {
		checkJITCounting(t, kernel, reason, runs["jit"])
	}
}

// checkDefaultCounting checks the counter update chosen with the JIT as the
// kernel boots: where it is off or absent, every program runs in the
// interpreter, and the atomic add is exact.
func checkDefaultCounting(t *testing.T, kernel, jit, stderr string) {
	want := "counter updates: atomic add (the kernel compiles no program"
	if jit != "0" && jit != "" {
		want = "counter updates: " + counterUpdate(kernel) + " ("
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("bpf_jit_enable %q at boot: no %q in\n%s", jit, want, stderr)
	}
}

// checkJITCounting checks, with the JIT on, the counter update chosen and
// that its counts are exact: every datagram to the closed port once at
// net:netif_receive_skb and once in DROP. With the plain add, the
// tracepoints attach as perf tracepoints, which never nest.
func checkJITCounting(t *testing.T, kernel, reason string, r vmRun) {
	if r.attached == nil {
		t.Errorf("the run with the JIT on did not run")
		return
	}
	want := counterUpdate(kernel)
	if !strings.Contains(r.stderr, "skbstat: counter updates: "+want+" (") {
		t.Errorf("JIT on: counter updates not %s:\n%s", want, r.stderr)
	}
	for line := range strings.Lines(r.stderr) {
		if strings.HasPrefix(line, "skbstat: counter updates: ") {
			t.Logf("%s: JIT on: %s", kernel, strings.TrimSpace(line))
		}
	}
	if want == "plain add" && r.attached["net:netif_receive_skb"] != "perf tracepoint" {
		t.Errorf("JIT on, plain add: net:netif_receive_skb attached as %q, want perf tracepoint", r.attached["net:netif_receive_skb"])
	}
	rx, drops := sum(r.ivs, rowCount("INGRESS", "net:netif_receive_skb")), sum(r.ivs, stackCount("DROP", reason))
	if rx != vmPackets || drops != vmPackets {
		t.Errorf("JIT on: netif_receive_skb %d, DROP %d, want %d each\n%s%v", rx, drops, vmPackets, r.stderr, r.ivs)
	}
}

// checkDropPlace checks that every DROP entry names the place of the drop,
// also where the kernel gives no stack (MIPS) or one useless frame (32-bit
// ARM): the datagrams to the closed port are dropped in __udp4_lib_rcv.
func checkDropPlace(t *testing.T, kernel string, ivs []interval) {
	for _, iv := range ivs {
		s, ok := iv["DROP"]
		if !ok {
			continue
		}
		for _, st := range s.stacks {
			if !hasFramePrefix(st.frames, "__udp4_lib_rcv+") {
				t.Errorf("DROP entry of %d without the place of the drop, __udp4_lib_rcv: %q", st.count, st.frames)
			} else {
				t.Logf("%s: DROP entry: %q", kernel, st.frames)
			}
		}
	}
}

// checkFilters checks that each filter run counted exactly its share of
// the traffic.
func checkFilters(t *testing.T, reason string, runs map[string]vmRun) {
	for _, f := range filterRuns {
		r, ok := runs["f-"+f.name]
		if !ok {
			t.Errorf("filter %s (%s): did not run", f.name, f.args)
			continue
		}
		count := stackCount(f.section, reason)
		if f.row != "" {
			count = rowCount(f.section, f.row)
		}
		if n := sum(r.ivs, count); n != uint64(f.want*vmPackets) {
			t.Errorf("filter %s (%s): %s %s counted %d, want %d\n%s", f.name, f.args, f.section, f.row, n, f.want*vmPackets, r.stderr)
		}
	}
}

// checkLayoutSource checks where the layout came from: calibrated where the
// kernel has no BTF (and proven, or skbstat would not have run); where it
// has, the layout package's test calibrated too and found BTF's offsets.
func checkLayoutSource(t *testing.T, k vm.Kernel, console, stderr string) {
	calibrated := strings.Contains(stderr, "skbstat: layout: calibrated in ")
	if calibrated == k.BTF {
		t.Errorf("the layout was calibrated: %v; the kernel has BTF: %v\n%s", calibrated, k.BTF, stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "skbstat: layout: ") {
			t.Logf("%s: %s", k.Name, line)
		}
	}
	if !k.BTF {
		// Every field, the namespace's too, though nothing filters on it
		// yet.
		for _, field := range []string{"net_device.ifindex", "net_device.nd_net", "net.ns.inum", "sock_common.skc_v6_daddr"} {
			if !strings.Contains(stderr, field) {
				t.Errorf("%s was not calibrated:\n%s", field, stderr)
			}
		}
		return
	}
	m := calibrateRE.FindStringSubmatch(console)
	if m == nil || m[1] != "0" || !strings.Contains(m[2], "--- PASS: TestCalibrateMatchesBTF") {
		t.Errorf("calibrating in the VM did not find BTF's offsets: %v", m)
	} else {
		t.Logf("%s: calibration found BTF's offsets", k.Name)
	}
}

// checkRows checks one run's rows: every row on the path counts exactly
// vmPackets (or, where the kernel may have inlined the call, 0); every other
// attached row counts 0; every attached row used mechanism m.
func checkRows(t *testing.T, name string, r vmRun, m string, always, unlessInlined []string) {
	t.Helper()
	if r.attached == nil {
		t.Errorf("%s: did not run", name)
		return
	}
	counts := map[string]uint64{}
	for _, iv := range r.ivs {
		for _, s := range iv {
			for row, n := range s.rows {
				counts[row] += n
			}
		}
	}
	for row, mech := range r.attached {
		if !strings.Contains(row, ":") && mech != m {
			t.Errorf("%s: %s attached as %s", name, row, mech)
		}
	}
	maybe := map[string]bool{}
	for _, row := range unlessInlined {
		maybe[row] = true
	}
	for _, row := range always {
		if r.attached[row] == "" {
			t.Errorf("%s: %s not attached:\n%s", name, row, r.stderr)
		}
	}
	for row := range r.attached {
		want := uint64(0)
		if contains(always, row) || maybe[row] && counts[row] != 0 {
			want = vmPackets
		}
		if counts[row] != want {
			t.Errorf("%s: %s counted %d, want %d", name, row, counts[row], want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
