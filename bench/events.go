package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/internal/loaded"
)

// tracepoints and the name skbstat gives its program for each.
var tracepoints = []struct{ name, skbstatProg string }{
	{"netif_receive_skb", "skbstat_rx"},
	{"net_dev_queue", "skbstat_queue"},
	{"net_dev_xmit", "skbstat_xmit"},
	{"consume_skb", "skbstat_consume"},
	{"kfree_skb", "skbstat_drop"},
}

// tracepointOf names the tracepoint a program of either tool serves;
// bpftrace names its programs after the tracepoint, cut to the kernel's
// 15 bytes.
func tracepointOf(prog string) string {
	for _, tp := range tracepoints {
		if prog == tp.skbstatProg || prog == tp.name || (len(prog) == 15 && strings.HasPrefix(tp.name, prog)) {
			return tp.name
		}
	}
	return ""
}

// scenario is one per-event measurement: what skbstat and bpftrace are
// asked to do while the same traffic flows.
type scenario struct {
	name    string
	skbstat []string
	script  string
	// tracepoints: where the programs of both tools run, and so the empty
	// programs that give the floor.
	tracepoints []string
}

func scenarios(ns *pair) []scenario {
	rejected := netip.MustParseAddr("192.0.2.99") // TEST-NET-1: never in our traffic
	matched := netip.MustParseAddr(ns.b4)
	all := []string{"netif_receive_skb", "net_dev_queue", "net_dev_xmit", "consume_skb", "kfree_skb"}
	return []scenario{
		{"(a) rejected by the filter, all 5 probes",
			[]string{"--input", "--output", "--consume", "-p", "udp", "-d", rejected.String()},
			bpftraceFilter(rejected, true, true), all},
		{"(b) counted in a row (--input --output --no_drop)",
			[]string{"--input", "--output", "--no_drop", "-p", "udp", "-d", matched.String()},
			bpftraceFilter(matched, true, false), all[:3]},
		{"(c) counted with stack and reason (DROP)",
			[]string{"-p", "udp", "-d", matched.String()},
			bpftraceFilter(matched, false, true), all[4:]},
	}
}

// bpftraceFilter is the bpftrace program for `-p udp -d daddr`: the IP
// header at skb->data on ingress (the network header is not set yet
// there), at head+network_header elsewhere. Constants are compared in the
// host's byte order, as bpftrace reads them.
func bpftraceFilter(daddr netip.Addr, rows, stacks bool) string {
	a4 := daddr.As4()
	proto := binary.NativeEndian.Uint16([]byte{0x08, 0x00}) // ETH_P_IP, big-endian in the skb
	match := func(hdr, action string) string {
		return fmt.Sprintf(`{
  $skb = (struct sk_buff *)args->skbaddr;
  if ($skb->protocol == %#x) {
    $ip = (struct iphdr *)(%s);
    if ($ip->daddr == %#x && $ip->protocol == 17) { %s }
  }
}
`, proto, hdr, binary.NativeEndian.Uint32(a4[:]), action)
	}
	const netHdr = "$skb->head + $skb->network_header"
	s := "BEGIN { printf(\"ready\\n\"); }\n"
	if rows {
		s += "tracepoint:net:netif_receive_skb " + match("$skb->data", "@rows[probe] = count();")
		s += "tracepoint:net:net_dev_queue, tracepoint:net:net_dev_xmit " + match(netHdr, "@rows[probe] = count();")
	}
	if stacks {
		if rows {
			s += "tracepoint:skb:consume_skb " + match(netHdr, "@consume[kstack] = count();")
		}
		s += "tracepoint:skb:kfree_skb " + match(netHdr, "@drop[kstack, args->reason] = count();")
	}
	return s
}

// cost is one program's share of one measurement.
type cost struct {
	runs    uint64
	runtime time.Duration
}

func (c cost) perEvent() float64 {
	if c.runs == 0 {
		return 0
	}
	return float64(c.runtime.Nanoseconds()) / float64(c.runs)
}

// The runners of a scenario: skbstat with each of its tracepoint
// mechanisms, bpftrace, and the empty program with each mechanism.
const (
	skbstatTpBTF = iota // skbstat with the kernel's BTF: tp_btf
	skbstatRawTP        // skbstat with --btf FILE: raw tracepoints
	bpftraceTool        // bpftrace: perf tracepoints
	emptyTpBTF
	emptyRawTP
	emptyPerfTP
	numRunners
)

var runnerNames = [numRunners]string{"skbstat tp_btf", "skbstat raw tp", "bpftrace (perf tp)", "empty tp_btf", "empty raw tp", "empty perf tp"}

// runnerMechanism is how each runner's programs attach.
var runnerMechanism = [numRunners]string{tpBTF, rawTP, perfTP, tpBTF, rawTP, perfTP}

// scenarioCosts holds, per runner and tracepoint, one cost per repetition.
type scenarioCosts struct {
	name    string
	runners [numRunners]map[string][]cost
}

// eventCosts runs every scenario reps times with every runner, in an order
// that rotates with each repetition, with kernel BPF statistics on. It
// returns the IDs of every program it saw, so that the caller can check
// they are gone.
func eventCosts(ctx context.Context, t tools, ns *pair, events, reps int) ([]scenarioCosts, []ebpf.ProgramID, error) {
	// The kernel turns statistics off again when this file descriptor is
	// closed, even if the benchmark is killed: the sysctl needs no restoring.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, nil, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()

	// Datagrams read by a UDP server did not reach skb:consume_skb here (tried),
	// so only drops are generated: consume_skb's figures are whatever the
	// host did meanwhile.
	send := func() error {
		return ns.sendCmd(ctx, t, events, closedPort, "0s").Run()
	}

	scs := scenarios(ns)
	out := make([]scenarioCosts, len(scs))
	var seen []ebpf.ProgramID
	for i, sc := range scs {
		out[i].name = sc.name
		for r := range out[i].runners {
			out[i].runners[r] = map[string][]cost{}
		}
		for rep := range reps {
			for k := range numRunners {
				r := (k + rep) % numRunners
				got, ids, err := runScenario(ctx, t, sc, r, send)
				seen = append(seen, ids...)
				if err != nil {
					return nil, seen, fmt.Errorf("%s, %s: %w", sc.name, runnerNames[r], err)
				}
				for tp, c := range got {
					out[i].runners[r][tp] = append(out[i].runners[r][tp], c)
				}
			}
		}
	}
	return out, seen, nil
}

// runScenario measures runner r's programs while send runs.
func runScenario(ctx context.Context, t tools, sc scenario, r int, send func() error) (map[string]cost, []ebpf.ProgramID, error) {
	switch r {
	case bpftraceTool:
		got, ids, _, err := measure(ctx, exec.CommandContext(ctx, "bpftrace", "-e", sc.script), "ready", byTracepoint, send)
		return got, ids, err
	case skbstatTpBTF, skbstatRawTP:
		args := append([]string{"-v", "-i", "3600"}, sc.skbstat...)
		if r == skbstatRawTP { // the kernel's BTF as a file: no tp_btf
			args = append(args, "--btf", kernelBTFFile)
		}
		got, ids, log, err := measure(ctx, exec.CommandContext(ctx, t.skbstat, args...), "skbstat: tracing", byTracepoint, send)
		if err == nil {
			err = checkMechanism(log, runnerMechanism[r])
		}
		return got, ids, err
	}
	got, err := measureEmpty(runnerMechanism[r], sc.tracepoints, send)
	return got, nil, err
}

// checkMechanism fails unless every tracepoint that skbstat -v's log says
// it attached attached with mechanism.
func checkMechanism(log, mechanism string) error {
	n := 0
	for line := range strings.Lines(log) {
		if _, how, ok := strings.Cut(strings.TrimSpace(line), " attached as "); ok {
			if how != mechanism {
				return fmt.Errorf("skbstat attached with %s, not %s: %s", how, mechanism, line)
			}
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("skbstat said nothing of attaching:\n%s", log)
	}
	return nil
}

// readyTimeout bounds a tool's start-up; software emulation in the VM is
// slow, so it is generous.
const readyTimeout = 2 * time.Minute

// startReady starts cmd and waits until it prints a line starting with
// ready. stop interrupts it, waits for it to end and returns everything
// it printed; startReady calls it itself when cmd does not get ready.
func startReady(ctx context.Context, cmd *exec.Cmd, ready string) (stop func() (string, error), err error) {
	var log bytes.Buffer
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	isReady := make(chan bool, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(&log, sc.Text())
			if strings.HasPrefix(sc.Text(), ready) {
				isReady <- true
			}
		}
	}()
	stop = func() (string, error) {
		cmd.Process.Signal(syscall.SIGINT)
		err := <-exited
		<-scanned
		if err != nil {
			return log.String(), fmt.Errorf("%s: %v\n%s", cmd.Path, err, log.String())
		}
		return log.String(), nil
	}
	select {
	case <-isReady:
		return stop, nil
	case <-time.After(readyTimeout):
		out, _ := stop()
		return nil, fmt.Errorf("%s: not ready after %v\n%s", cmd.Path, readyTimeout, out)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// measure starts cmd, waits until it prints the ready line, and returns
// the run time and run count its programs gained while send ran, keyed
// by label (programs it labels "" are left out), and what cmd printed.
func measure(ctx context.Context, cmd *exec.Cmd, ready string, label programLabel, send func() error) (map[string]cost, []ebpf.ProgramID, string, error) {
	stopCmd, err := startReady(ctx, cmd, ready)
	if err != nil {
		return nil, nil, "", err
	}
	progs, ids, err := programsOf(cmd.Process.Pid, label)
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	var got map[string]cost
	if err == nil {
		got, err = costWhile(progs, send)
	}
	log, stopErr := stopCmd()
	return got, ids, log, errors.Join(err, stopErr)
}

// costWhile returns the run time and run count that progs gained while
// send ran.
func costWhile(progs map[string]*ebpf.Program, send func() error) (map[string]cost, error) {
	before, err := snapshot(progs)
	if err != nil {
		return nil, err
	}
	if err := send(); err != nil {
		return nil, fmt.Errorf("send traffic: %w", err)
	}
	time.Sleep(20 * time.Millisecond) // let the receiving side finish
	after, err := snapshot(progs)
	if err != nil {
		return nil, err
	}
	for tp, c := range after {
		after[tp] = cost{runs: c.runs - before[tp].runs, runtime: c.runtime - before[tp].runtime}
	}
	return after, nil
}

// programLabel says what a program is measured as, or "" to leave it out.
type programLabel func(ebpf.ProgramID, *ebpf.ProgramInfo) (string, error)

// byTracepoint labels the programs of either tool by the tracepoint they serve.
func byTracepoint(_ ebpf.ProgramID, pi *ebpf.ProgramInfo) (string, error) {
	return tracepointOf(pi.Name), nil
}

// programsOf opens the BPF programs that process pid holds, found by the
// prog_id line in its file descriptors' fdinfo, keyed by label.
func programsOf(pid int, label programLabel) (map[string]*ebpf.Program, []ebpf.ProgramID, error) {
	ids, _, err := loaded.HeldBy(pid)
	if err != nil {
		return nil, nil, err
	}
	progs := map[string]*ebpf.Program{}
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return progs, ids, fmt.Errorf("open program %d: %w", id, err)
		}
		pi, err := p.Info()
		if err != nil {
			p.Close()
			return progs, ids, fmt.Errorf("program %d: %w", id, err)
		}
		key, err := label(id, pi)
		if err != nil {
			p.Close()
			return progs, ids, fmt.Errorf("program %d: %w", id, err)
		}
		if key != "" && progs[key] == nil {
			progs[key] = p
		} else {
			p.Close()
		}
	}
	if len(progs) == 0 {
		return nil, ids, fmt.Errorf("process %d holds no programs to measure", pid)
	}
	return progs, ids, nil
}

func snapshot(progs map[string]*ebpf.Program) (map[string]cost, error) {
	m := map[string]cost{}
	for tp, p := range progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("%s statistics: %w", tp, err)
		}
		m[tp] = cost{runs: st.RunCount, runtime: st.Runtime}
	}
	return m, nil
}

// checkGone confirms that no program of either tool outlived it.
func checkGone(ids []ebpf.ProgramID) error {
	var left []string
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err == nil {
			p.Close()
			left = append(left, strconv.Itoa(int(id)))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("programs left loaded: %s", strings.Join(left, ", "))
	}
	fmt.Printf("Clean-up: none of the %d BPF programs the tools loaded is still loaded.\n", len(ids))
	return nil
}

func printCosts(events, reps int, scs []scenarioCosts) {
	fmt.Printf("## Per-event cost (kernel BPF statistics, median of %d)\n\n", reps)
	fmt.Printf("Each measurement sends %d UDP datagrams from namespace a to a closed port in namespace b (dropped, NO_SOCKET).\n", events)
	fmt.Println("ns/event = run_time_ns / run_cnt gained while the traffic was sent (median), events beside it; the empty program")
	fmt.Println("on the same tracepoint with the same mechanism is the floor (mostly the statistics' own clock reads).")
	fmt.Println()
	fmt.Print("| scenario | tracepoint |")
	for _, name := range runnerNames {
		fmt.Printf(" %s | events |", name)
	}
	fmt.Println(" tp_btf / bpftrace | tp_btf / its empty | raw tp / its empty |")
	fmt.Println("|---|---|" + strings.Repeat("---|---|", numRunners) + "---|---|---|")
	for _, sc := range scs {
		for _, tp := range tracepoints {
			if len(sc.runners[skbstatTpBTF][tp.name]) == 0 && len(sc.runners[bpftraceTool][tp.name]) == 0 {
				continue
			}
			fmt.Printf("| %s | %s |", sc.name, tp.name)
			ns := make([]float64, numRunners)
			for r, costs := range sc.runners {
				var runs float64
				ns[r], runs = medians(costs[tp.name])
				fmt.Printf(" %.0f | %.0f |", ns[r], runs)
			}
			fmt.Printf(" %s | %s | %s |\n", ratio(ns[skbstatTpBTF], ns[bpftraceTool]),
				ratio(ns[skbstatTpBTF], ns[emptyTpBTF]), ratio(ns[skbstatRawTP], ns[emptyRawTP]))
		}
	}
	fmt.Println()
}

// medians is the median cost per event and the median event count of cs.
func medians(cs []cost) (ns, runs float64) {
	if len(cs) == 0 {
		return 0, 0
	}
	var nss, runss []float64
	for _, c := range cs {
		nss = append(nss, c.perEvent())
		runss = append(runss, float64(c.runs))
	}
	return quantile(nss, 0.5), quantile(runss, 0.5)
}

// ratio is a/b to two decimals, or "-" where b is nothing measured.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
