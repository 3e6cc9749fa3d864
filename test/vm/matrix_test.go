package vm

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// matrixScript checks what the kernel offers, creates a veth pair and a
// dummy device, prints the tracepoint format files of EVENTS, and counts
// UDP datagrams over loopback with the traffic helper. It prints
// key=value lines.
const matrixScript = `
echo "uptime-start=$(cut -d' ' -f1 /proc/uptime)"
echo "uname-r=$(uname -r)"
echo "uname-m=$(uname -m)"
yesno() { if "$@"; then echo yes; else echo no; fi; }
# A loaded module has an initstate; a built-in one at most its directory.
modstate() { if [ -e /sys/module/$1/initstate ]; then echo module; elif [ -d /sys/module/$1 ]; then echo built-in; else echo no; fi; }
echo "kprobe_events=$(yesno test -e /sys/kernel/tracing/kprobe_events)"
echo "tracefs=$(yesno test -d /sys/kernel/tracing/events)"
echo "btf=$(yesno test -e /sys/kernel/btf/vmlinux)"
echo "veth-module=$(modstate veth)"
echo "veth-pair=$(yesno ip link add skbstat0 type veth peer name skbstat1)"
echo "dummy-module=$(modstate dummy)"
echo "dummy-link=$(yesno ip link add skbstat2 type dummy)"
for e in $EVENTS; do
	echo "=== format $e"
	cat /sys/kernel/tracing/events/$e/format
	echo "=== end $e"
done
# Where each of the original's function rows can be probed: in ftrace's
# list (probe-able by name), only in kallsyms as a compiler clone, or
# nowhere (inlined). Each list is read once: that is slow under emulation.
names="($(echo $FUNCS | tr ' ' '|'))"
grep -oE "^$names( |\$)" /sys/kernel/tracing/available_filter_functions | tr -d ' ' >/tmp/ftrace
grep -oE " $names\.(isra|constprop|part)[.0-9a-z]*\$" /proc/kallsyms | tr -d ' ' >/tmp/clones
for f in $FUNCS; do
	ftrace=$(yesno grep -qx "$f" /tmp/ftrace)
	clone=$(grep -m1 "^$f\." /tmp/clones)
	echo "func $f ftrace=$ftrace clone=${clone:-none}"
done
echo "uptime-listed=$(cut -d' ' -f1 /proc/uptime)"
traffic serve -udp 9000 -n 10 -timeout 60s >/tmp/serve.out 2>&1 &
server=$!
i=0
until grep -q listening /tmp/serve.out; do
	i=$((i + 1)); [ $i -lt 600 ] || { echo "server never listened"; exit 1; }
	sleep 0.1
done
traffic udp -n 10 127.0.0.1:9000 || exit 1
wait $server
echo "serve-status=$?"
cat /tmp/serve.out
echo "uptime-end=$(cut -d' ' -f1 /proc/uptime)"
`

// originalFunctions are the kernel functions of the original's rows.
var originalFunctions = strings.Fields(`
	tcp_recvmsg udp_recvmsg tcp_drop tcp_v4_rcv udp_rcv icmp_rcv tcp_v6_rcv udpv6_rcv icmpv6_rcv
	ip_local_deliver_finish ip6_input_finish ip_local_deliver ip6_input ip_route_input_noref
	ip6_route_input ip_rcv_finish ip6_rcv_finish ip_rcv ip_error ipv6_rcv ip6_pkt_drop
	tcp_sendmsg udp_sendmsg ip_local_out __ip6_local_out ip_output ip6_output ip_finish_output
	ip6_finish_output ip_finish_output2 ip6_finish_output2`)

// formatEvents are the tracepoints skbstat attaches as perf tracepoints,
// laid out by these format files, where the kernel has no BTF.
var formatEvents = []string{"skb/kfree_skb", "skb/consume_skb", "net/net_dev_queue", "net/netif_receive_skb"}

var unameMachine = map[string]string{
	"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "mipsel": "mips", "s390x": "s390x",
}

// matrixRow is one kernel's line in TestMatrix's summary.
type matrixRow struct {
	pkg                 string
	prepare, wait, boot time.Duration
	funcs               map[string]string
}

// TestMatrix boots every kernel of Matrix with the traffic helper, two
// (as many as CPUs) at a time.
func TestMatrix(t *testing.T) {
	requireVMs(t)
	helperDir := t.TempDir()
	var mu sync.Mutex
	rows := map[string]matrixRow{}
	start := time.Now()
	Each(t, Matrix, func(t *testing.T, k Kernel) {
		row := checkMatrixKernel(t, k, helperDir)
		mu.Lock()
		rows[k.Name] = row
		mu.Unlock()
	})
	t.Log(matrixSummary(time.Since(start), rows))
}

// checkMatrixKernel boots k and checks what TestMatrix expects of it.
func checkMatrixKernel(t *testing.T, k Kernel, helperDir string) matrixRow {
	ctx := context.Background()
	start := time.Now()
	helper, err := BuildStatic(ctx, k, "github.com/skbstat/skbstat/test/traffic", helperDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the traffic helper for %s was ready after %v", k.Arch, time.Since(start).Round(time.Millisecond))
	res, err := Run(ctx, k, Options{
		Files:   map[string]string{"/bin/traffic": helper},
		Modules: []string{"veth", "dummy"},
		Script: "FUNCS='" + strings.Join(originalFunctions, " ") + "'\n" +
			"EVENTS='" + strings.Join(formatEvents, " ") + "'\n" + matrixScript,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := keyValues(res.Console)
	t.Logf("%s: %s (uname -m: %s), prepare %v, waited %v, boot %v (guest uptime: script start %ss, functions listed %ss, end %ss)",
		k, res.Package, got["uname-m"], res.Prepare.Round(time.Millisecond), res.Wait.Round(time.Millisecond), res.Boot.Round(time.Millisecond),
		got["uptime-start"], got["uptime-listed"], got["uptime-end"])
	if res.ExitStatus != 0 {
		t.Fatalf("script exited with %d:\n%s", res.ExitStatus, res.Console)
	}
	release := strings.TrimPrefix(res.Package, "linux-image-")
	want := map[string]string{
		"uname-r":       release,
		"uname-m":       unameMachine[k.Arch],
		"kprobe_events": "yes",
		"tracefs":       "yes",
		"btf":           yesNo(k.BTF),
		"veth-module":   "module",
		"veth-pair":     "yes",
		"dummy-module":  "module",
		"dummy-link":    "yes",
		"serve-status":  "0",
	}
	for key, w := range want {
		if got[key] != w {
			t.Errorf("%s = %q, want %q", key, got[key], w)
		}
	}
	if !strings.Contains(res.Console, "udp: sent 10 of 10 datagrams") ||
		!strings.Contains(res.Console, "serve: received 10 udp datagrams") {
		t.Errorf("want 10 datagrams sent and received")
	}
	checkFormats(t, k, formatFiles(res.Console))
	funcs := functionTable(res.Console)
	if len(funcs) != len(originalFunctions) {
		t.Errorf("got %d function lines, want %d", len(funcs), len(originalFunctions))
	}
	if funcs["ip_rcv"] != "ftrace" {
		t.Errorf("ip_rcv is %q, want it traceable", funcs["ip_rcv"])
	}
	if t.Failed() {
		t.Logf("console:\n%s", res.Console)
	}
	return matrixRow{res.Package, res.Prepare, res.Wait, res.Boot, funcs}
}

// checkFormats checks that every event of formatEvents has its format
// file, and logs them for kernels without BTF: those are what skbstat
// has to go by there.
func checkFormats(t *testing.T, k Kernel, formats map[string]string) {
	t.Helper()
	if len(formats) != len(formatEvents) {
		t.Errorf("got %d format files, want %d", len(formats), len(formatEvents))
	}
	for _, e := range formatEvents {
		text := formats[e]
		if !strings.HasPrefix(text, "name: "+path.Base(e)+"\n") || !strings.Contains(text, "\nformat:\n") {
			t.Errorf("%s: no format file for %s:\n%s", k, e, text)
		} else if !k.BTF {
			t.Logf("%s: /sys/kernel/tracing/events/%s/format:\n%s", k, e, text)
		}
	}
}

var formatFile = regexp.MustCompile(`(?ms)^=== format (\S+)\n(.*?)^=== end (\S+)$`)

// formatFiles returns the format files the script printed, by event.
func formatFiles(console string) map[string]string {
	m := map[string]string{}
	for _, f := range formatFile.FindAllStringSubmatch(console, -1) {
		if f[1] == f[3] {
			m[f[1]] = f[2]
		}
	}
	return m
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// matrixSummary tabulates the kernels that ran, in Matrix order: times,
// then where each of the original's functions can be probed.
func matrixSummary(took time.Duration, rows map[string]matrixRow) string {
	var ran []Kernel
	for _, k := range Matrix {
		if _, ok := rows[k.Name]; ok {
			ran = append(ran, k)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "matrix in %v\n%-11s %-42s %10s %10s %8s\n", took.Round(time.Second), "kernel", "package", "prepare", "waited", "boot")
	for _, k := range ran {
		r := rows[k.Name]
		fmt.Fprintf(&b, "%-11s %-42s %10v %10v %8v\n", k, r.pkg, r.prepare.Round(time.Millisecond), r.wait.Round(time.Millisecond), r.boot.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\n%-24s", "function")
	for _, k := range ran {
		fmt.Fprintf(&b, " %-20s", k)
	}
	for _, f := range originalFunctions {
		fmt.Fprintf(&b, "\n%-24s", f)
		for _, k := range ran {
			fmt.Fprintf(&b, " %-20s", rows[k.Name].funcs[f])
		}
	}
	return b.String()
}

var keyValue = regexp.MustCompile(`(?m)^([a-z_-]+)=(.*)$`)

func keyValues(console string) map[string]string {
	m := map[string]string{}
	for _, kv := range keyValue.FindAllStringSubmatch(console, -1) {
		m[kv[1]] = kv[2]
	}
	return m
}

var funcLine = regexp.MustCompile(`(?m)^func (\S+) ftrace=(yes|no) clone=(\S+)$`)

// functionTable says per function "ftrace" (traceable by name), the
// clone's name, or "absent".
func functionTable(console string) map[string]string {
	m := map[string]string{}
	for _, f := range funcLine.FindAllStringSubmatch(console, -1) {
		switch {
		case f[2] == "yes":
			m[f[1]] = "ftrace"
		case f[3] != "none":
			m[f[1]] = f[3]
		default:
			m[f[1]] = "absent"
		}
	}
	return m
}

// requireVMs skips tests that boot or download kernels under -short.
func requireVMs(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads and boots Debian kernels; not with -short")
	}
}
