// Package e2e runs the skbstat binary against real traffic between network
// namespaces and checks its counts exactly. It needs root (CI is root).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/skbstat/skbstat/internal/loaded"
)

var (
	skbstatBin string
	trafficBin string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "skbstat-e2e")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if os.Geteuid() != 0 {
			skipReason = "end-to-end tests load BPF programs and create network namespaces: run as root"
			return m.Run()
		}
		if _, err := exec.LookPath("ip"); err != nil {
			skipReason = "iproute2's ip is not installed (apt-get install iproute2)"
			return m.Run()
		}
		skbstatBin = filepath.Join(dir, "skbstat")
		trafficBin = filepath.Join(dir, "traffic")
		for bin, pkg := range map[string]string{skbstatBin: "../..", trafficBin: "../traffic"} {
			cmd := exec.Command("go", "build", "-o", bin, pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
				return 1
			}
		}
		return m.Run()
	}())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// pair is two network namespaces, a and b, joined by a veth pair, with IPv4
// and IPv6 addresses on both ends.
type pair struct {
	a, b       string // namespace names
	a4, b4     string // IPv4 addresses
	a6, b6     string // IPv6 addresses
	aDev, bDev string // veth names inside the namespaces
}

var pairSeq struct {
	sync.Mutex
	n int
}

// uniqueNames returns a name suffix and an address byte that no other
// call in this test process, and likely no other test process, uses.
func uniqueNames() (id string, net int) {
	pairSeq.Lock()
	pairSeq.n++
	n := pairSeq.n
	pairSeq.Unlock()
	return fmt.Sprintf("%d-%d", os.Getpid()%10000, n), (os.Getpid()+n)%200 + 20
}

// newPair creates a namespace pair with addresses unique to this test
// process and removes it when the test ends.
func newPair(t *testing.T) *pair {
	t.Helper()
	id, net := uniqueNames()
	p := &pair{
		a: "sksa-" + id, b: "sksb-" + id,
		a4: fmt.Sprintf("10.201.%d.1", net), b4: fmt.Sprintf("10.201.%d.2", net),
		a6: fmt.Sprintf("fd00:201:%x::1", net), b6: fmt.Sprintf("fd00:201:%x::2", net),
		aDev: "veth-a", bDev: "veth-b",
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", p.a).Run()
		exec.Command("ip", "netns", "del", p.b).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", p.a},
		{"netns", "add", p.b},
		{"link", "add", "sks" + id, "netns", p.a, "type", "veth", "peer", "name", "skp" + id, "netns", p.b},
		{"-n", p.a, "link", "set", "sks" + id, "name", p.aDev},
		{"-n", p.b, "link", "set", "skp" + id, "name", p.bDev},
		{"-n", p.a, "addr", "add", p.a4 + "/24", "dev", p.aDev},
		{"-n", p.b, "addr", "add", p.b4 + "/24", "dev", p.bDev},
		{"-n", p.a, "addr", "add", p.a6 + "/64", "dev", p.aDev, "nodad"},
		{"-n", p.b, "addr", "add", p.b6 + "/64", "dev", p.bDev, "nodad"},
		{"-n", p.a, "link", "set", "lo", "up"},
		{"-n", p.b, "link", "set", "lo", "up"},
		{"-n", p.a, "link", "set", p.aDev, "up"},
		{"-n", p.b, "link", "set", p.bDev, "up"},
	} {
		ip(t, args...)
	}
	// Permanent neighbour entries: no ARP or NDP packet joins the counted
	// traffic. Unreachable errors are not rate limited, so that every
	// datagram to a closed port gets exactly one.
	aMAC, bMAC := p.mac(t, p.a, p.aDev), p.mac(t, p.b, p.bDev)
	for _, args := range [][]string{
		{"-n", p.a, "neigh", "replace", p.b4, "lladdr", bMAC, "dev", p.aDev, "nud", "permanent"},
		{"-n", p.a, "neigh", "replace", p.b6, "lladdr", bMAC, "dev", p.aDev, "nud", "permanent"},
		{"-n", p.b, "neigh", "replace", p.a4, "lladdr", aMAC, "dev", p.bDev, "nud", "permanent"},
		{"-n", p.b, "neigh", "replace", p.a6, "lladdr", aMAC, "dev", p.bDev, "nud", "permanent"},
		{"netns", "exec", p.b, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"},
	} {
		ip(t, args...)
	}
	return p
}

// ip runs iproute2's ip and fails the test on error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// mac returns the hardware address of dev in namespace ns.
func (p *pair) mac(t *testing.T, ns, dev string) string {
	t.Helper()
	b, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/address").Output()
	if err != nil {
		t.Fatalf("address of %s in %s: %v", dev, ns, err)
	}
	return strings.TrimSpace(string(b))
}

// exec runs a command inside namespace ns and fails the test on error.
func (p *pair) exec(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// traffic runs the traffic helper inside namespace ns.
func (p *pair) traffic(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return p.exec(t, ns, append([]string{trafficBin}, args...)...)
}

// run is a running skbstat.
type run struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *lockedBuffer
}

type lockedBuffer struct {
	sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.Lock()
	defer b.Unlock()
	return b.Buffer.Write(p)
}

func (b *lockedBuffer) String() string {
	b.Lock()
	defer b.Unlock()
	return b.Buffer.String()
}

// startSkbstat starts skbstat -v with args and waits until it has attached.
func startSkbstat(t *testing.T, args ...string) *run {
	t.Helper()
	return startCommand(t, append(skbstatArgv(), args...))
}

// skbstatArgv is how the tests run skbstat: with -v, and with the layout
// source SKBSTAT_E2E_LAYOUT names (test/all.sh runs the exact-count tests
// once with the kernel's BTF and once calibrated).
func skbstatArgv() []string {
	argv := []string{skbstatBin, "-v"}
	if l := os.Getenv("SKBSTAT_E2E_LAYOUT"); l != "" {
		argv = append(argv, "--layout", l)
	}
	return argv
}

// startCommand starts argv, a command that runs skbstat -v, and waits until
// skbstat says it has attached.
func startCommand(t *testing.T, argv []string) *run {
	t.Helper()
	r := &run{stderr: &lockedBuffer{}}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Stdout = &r.stdout
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.stderr.String(), readyLine) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not attach in time; stderr:\n%s", strings.Join(argv, " "), r.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkTracepointMechanism(t, r.stderr.String())
	checkNoHugePages(t, r.cmd.Process.Pid)
	return r
}

var thpLineRE = regexp.MustCompile(`(?m)^THP_enabled:\s*(\d+)$`)

// checkNoHugePages fails unless skbstat turned transparent huge pages off
// for itself (internal/nothp), as its peak RSS in THP-always kernels needs.
func checkNoHugePages(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := thpLineRE.FindSubmatch(status)
	if m == nil {
		t.Logf("/proc/%d/status has no THP_enabled line (Linux 5.0 added it): huge pages not checked", pid)
		return
	}
	if string(m[1]) != "0" {
		t.Errorf("skbstat runs with THP_enabled: %s, want 0", m[1])
	}
}

// readyLine is what skbstat -v prints once everything is attached.
const readyLine = "skbstat: tracing"

var (
	layoutLineRE     = regexp.MustCompile(`(?m)^skbstat: layout: (.*)$`)
	tracepointLineRE = regexp.MustCompile(`(?m)^skbstat: \w+: (\w+:\w+) attached as (.+)$`)
)

// checkTracepointMechanism fails unless every tracepoint in skbstat -v's
// stderr attached with the best hook its layout allows: tp_btf with the
// running kernel's BTF, a raw tracepoint with a BTF file, a perf
// tracepoint calibrated (no BTF types its arguments).
func checkTracepointMechanism(t *testing.T, stderr string) {
	t.Helper()
	m := layoutLineRE.FindStringSubmatch(stderr)
	if m == nil {
		return // skbstat -v without layout (none of the tests' runs)
	}
	want := "perf tracepoint"
	switch {
	case m[1] == "kernel BTF":
		want = "tp_btf"
	case strings.HasPrefix(m[1], "BTF file "):
		want = "raw tracepoint"
	}
	for _, a := range tracepointLineRE.FindAllStringSubmatch(stderr, -1) {
		if a[2] != want {
			t.Errorf("%s attached as %s with layout %q, want %s", a[1], a[2], m[1], want)
		}
	}
}

// stop sends sig, waits for exit status 0 and returns the parsed output.
func (r *run) stop(t *testing.T, sig syscall.Signal) []interval {
	t.Helper()
	r.cmd.Process.Signal(sig)
	return r.wait(t)
}

// stopRaw sends sig, waits for exit status 0 and returns the output as it
// is (JSON, folded stacks, ...).
func (r *run) stopRaw(t *testing.T, sig syscall.Signal) string {
	t.Helper()
	r.cmd.Process.Signal(sig)
	r.exited(t)
	return r.stdout.String()
}

// exited waits for skbstat to exit, with status 0.
func (r *run) exited(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("skbstat: %v\nstderr:\n%s\nstdout:\n%s", err, r.stderr.String(), r.stdout.String())
		}
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		t.Fatalf("skbstat did not exit; stderr:\n%s", r.stderr.String())
	}
}

func (r *run) wait(t *testing.T) []interval {
	t.Helper()
	r.exited(t)
	iv, err := parseOutput(r.stdout.String())
	if err != nil {
		t.Fatalf("parse output: %v\n%s", err, r.stdout.String())
	}
	return iv
}

// interval is one printed interval: its sections by name.
type interval map[string]*section

type section struct {
	rows   map[string]uint64 // function rows by name
	stacks []stack
}

type stack struct {
	count  uint64
	reason string
	frames []string
}

// total sums a section's stack counts whose reason is reason ("" for any).
func (s *section) total(reason string) uint64 {
	var n uint64
	for _, st := range s.stacks {
		if reason == "" || st.reason == reason {
			n += st.count
		}
	}
	return n
}

var headerRE = regexp.MustCompile(`^\d\d:\d\d:\d\d {8}\[(\w+)\]$`)

// parseOutput reads skbstat's output back: a section starts with the
// TIME/NUM header; rows are "%-8s %-6d %s"; stack frames are indented by 16.
func parseOutput(out string) ([]interval, error) {
	var ivs []interval
	var cur *section
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " ")
		switch {
		case line == "":
		case strings.HasPrefix(line, "TIME     NUM    FUNC/STACK"):
		case headerRE.MatchString(line):
			name := headerRE.FindStringSubmatch(line)[1]
			if len(ivs) == 0 || ivs[len(ivs)-1][name] != nil {
				ivs = append(ivs, interval{})
			}
			cur = &section{rows: map[string]uint64{}}
			ivs[len(ivs)-1][name] = cur
		case strings.HasPrefix(line, strings.Repeat(" ", 16)):
			if cur == nil || len(cur.stacks) == 0 {
				return nil, fmt.Errorf("frame outside a stack: %q", line)
			}
			st := &cur.stacks[len(cur.stacks)-1]
			st.frames = append(st.frames, strings.TrimSpace(line))
		default:
			if cur == nil {
				return nil, fmt.Errorf("row outside a section: %q", line)
			}
			fields := strings.Fields(line)
			n, err := strconv.ParseUint(fields[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad row %q", line)
			}
			name := strings.Join(fields[1:], " ")
			if isStackSection(ivs[len(ivs)-1], cur) {
				cur.stacks = append(cur.stacks, stack{count: n, reason: name})
			} else {
				cur.rows[name] += n
			}
		}
	}
	return ivs, sc.Err()
}

func isStackSection(iv interval, s *section) bool {
	return iv["DROP"] == s || iv["CONSUME"] == s
}

// sum adds up a measure over all intervals.
func sum(ivs []interval, f func(interval) uint64) uint64 {
	var n uint64
	for _, iv := range ivs {
		n += f(iv)
	}
	return n
}

func rowCount(sec, row string) func(interval) uint64 {
	return func(iv interval) uint64 {
		if s := iv[sec]; s != nil {
			return s.rows[row]
		}
		return 0
	}
}

func stackCount(sec, reason string) func(interval) uint64 {
	return func(iv interval) uint64 {
		if s := iv[sec]; s != nil {
			return s.total(reason)
		}
		return 0
	}
}

// objects are the BPF programs and links one process holds.
type objects struct {
	names []string // the programs', as bpftool shows them
	progs []ebpf.ProgramID
	links []link.ID
}

// heldBy lists what process pid holds, from its /proc/PID/fdinfo: a test's
// own skbstat, told apart from every other BPF tool, test or skbstat on the
// machine.
func heldBy(t *testing.T, pid int) objects {
	t.Helper()
	progs, links, err := loaded.HeldBy(pid)
	if err != nil {
		t.Fatal(err)
	}
	o := objects{progs: progs, links: links}
	for _, id := range progs {
		f := strings.Fields(bpftool(t, "prog", "show", "id", fmt.Sprint(id)))
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "name" {
				o.names = append(o.names, f[i+1])
			}
		}
	}
	return o
}

// left returns those of o that bpftool still finds loaded.
func (o objects) left(t *testing.T) []string {
	t.Helper()
	var still []string
	for _, id := range o.progs {
		if bpftoolFinds("prog", fmt.Sprint(id)) {
			still = append(still, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range o.links {
		if bpftoolFinds("link", fmt.Sprint(id)) {
			still = append(still, fmt.Sprintf("link %d", id))
		}
	}
	return still
}

// bpftoolFinds reports whether bpftool shows the program or link id.
func bpftoolFinds(kind, id string) bool {
	return exec.Command("bpftool", kind, "show", "id", id).Run() == nil
}

func bpftool(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bpftool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
