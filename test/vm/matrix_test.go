package vm

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// matrixScript checks what the kernel offers and counts UDP datagrams
// over loopback with the traffic helper. It prints key=value lines.
const matrixScript = `
echo "uptime-start=$(cut -d' ' -f1 /proc/uptime)"
echo "uname-r=$(uname -r)"
echo "uname-m=$(uname -m)"
yesno() { if "$@"; then echo yes; else echo no; fi; }
echo "kprobe_events=$(yesno test -e /sys/kernel/tracing/kprobe_events)"
echo "btf=$(yesno test -e /sys/kernel/btf/vmlinux)"
echo "veth-module=$(yesno test -d /sys/module/veth)"
echo "veth-pair=$(yesno ip link add skbstat0 type veth peer name skbstat1)"
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

var unameMachine = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// TestMatrix boots every kernel of Matrix with the traffic helper.
func TestMatrix(t *testing.T) {
	requireVMs(t)
	ctx := context.Background()
	helpers, helperDir := map[string]string{}, t.TempDir() // by architecture
	type row struct {
		kernel           Kernel
		pkg              string
		prepare, boot    time.Duration
		funcs            map[string]string
		veth, vethModule string
	}
	var rows []row
	start := time.Now()
	for _, k := range Matrix {
		t.Run(k.Name, func(t *testing.T) {
			if helpers[k.Arch] == "" {
				start := time.Now()
				bin, err := BuildStatic(ctx, k, "github.com/skbstat/skbstat/test/traffic", helperDir)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("built the traffic helper for %s in %v", k.Arch, time.Since(start).Round(time.Millisecond))
				helpers[k.Arch] = bin
			}
			res, err := Run(ctx, k, Options{
				Files:   map[string]string{"/bin/traffic": helpers[k.Arch]},
				Modules: []string{"veth"},
				Script:  "FUNCS='" + strings.Join(originalFunctions, " ") + "'\n" + matrixScript,
			})
			if err != nil {
				t.Fatal(err)
			}
			got := keyValues(res.Console)
			t.Logf("%s: %s, prepare %v, boot %v (guest uptime: script start %ss, functions listed %ss, end %ss)",
				k, res.Package, res.Prepare.Round(time.Millisecond), res.Boot.Round(time.Millisecond),
				got["uptime-start"], got["uptime-listed"], got["uptime-end"])
			if res.ExitStatus != 0 {
				t.Fatalf("script exited with %d:\n%s", res.ExitStatus, res.Console)
			}
			release := strings.TrimPrefix(res.Package, "linux-image-")
			want := map[string]string{
				"uname-r":       release,
				"uname-m":       unameMachine[k.Arch],
				"kprobe_events": "yes",
				"btf":           "yes",
				"veth-module":   "yes",
				"veth-pair":     "yes",
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
			rows = append(rows, row{k, res.Package, res.Prepare, res.Boot, funcs, got["veth-pair"], got["veth-module"]})
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "matrix in %v\n%-11s %-42s %10s %8s\n", time.Since(start).Round(time.Second), "kernel", "package", "prepare", "boot")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-11s %-42s %10v %8v\n", r.kernel, r.pkg, r.prepare.Round(time.Millisecond), r.boot.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\n%-24s", "function")
	for _, r := range rows {
		fmt.Fprintf(&b, " %-20s", r.kernel)
	}
	for _, f := range originalFunctions {
		fmt.Fprintf(&b, "\n%-24s", f)
		for _, r := range rows {
			fmt.Fprintf(&b, " %-20s", r.funcs[f])
		}
	}
	t.Log(b.String())
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
