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
}

func scenarios(ns *pair) []scenario {
	rejected := netip.MustParseAddr("192.0.2.99") // TEST-NET-1: never in our traffic
	matched := netip.MustParseAddr(ns.b4)
	return []scenario{
		{"(a) rejected by the filter, all 5 probes",
			[]string{"--input", "--output", "--consume", "-p", "udp", "-d", rejected.String()},
			bpftraceFilter(rejected, true, true)},
		{"(b) counted in a row (--input --output --no_drop)",
			[]string{"--input", "--output", "--no_drop", "-p", "udp", "-d", matched.String()},
			bpftraceFilter(matched, true, false)},
		{"(c) counted with stack and reason (DROP)",
			[]string{"-p", "udp", "-d", matched.String()},
			bpftraceFilter(matched, false, true)},
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

// scenarioCosts holds, per tool (skbstat, bpftrace) and tracepoint, one
// cost per repetition.
type scenarioCosts struct {
	name  string
	tools [2]map[string][]cost
}

// eventCosts runs every scenario reps times for both tools, alternating
// which goes first, with kernel BPF statistics on. It returns the IDs of
// every program it saw, so that the caller can check they are gone.
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
		out[i] = scenarioCosts{name: sc.name, tools: [2]map[string][]cost{{}, {}}}
		for rep := range reps {
			for k := range 2 {
				tool := (k + rep) % 2 // 0: skbstat, 1: bpftrace
				cmd := exec.CommandContext(ctx, "bpftrace", "-e", sc.script)
				ready := "ready"
				if tool == 0 {
					cmd = exec.CommandContext(ctx, t.skbstat, append([]string{"-v", "-i", "3600"}, sc.skbstat...)...)
					ready = "skbstat: tracing"
				}
				got, ids, err := measure(ctx, cmd, ready, byTracepoint, send)
				seen = append(seen, ids...)
				if err != nil {
					return nil, seen, fmt.Errorf("%s: %w", sc.name, err)
				}
				for tp, c := range got {
					out[i].tools[tool][tp] = append(out[i].tools[tool][tp], c)
				}
			}
		}
	}
	return out, seen, nil
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
// by label (programs it labels "" are left out).
func measure(ctx context.Context, cmd *exec.Cmd, ready string, label programLabel, send func() error) (map[string]cost, []ebpf.ProgramID, error) {
	stopCmd, err := startReady(ctx, cmd, ready)
	if err != nil {
		return nil, nil, err
	}
	stop := func() error {
		_, err := stopCmd()
		return err
	}
	progs, ids, err := programsOf(cmd.Process.Pid, label)
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	if err != nil {
		return nil, ids, errors.Join(err, stop())
	}
	before, err := snapshot(progs)
	if err != nil {
		return nil, ids, errors.Join(err, stop())
	}
	if err := send(); err != nil {
		return nil, ids, errors.Join(fmt.Errorf("send traffic: %w", err), stop())
	}
	time.Sleep(20 * time.Millisecond) // let the receiving side finish
	after, err := snapshot(progs)
	if err != nil {
		return nil, ids, errors.Join(err, stop())
	}
	for tp, c := range after {
		after[tp] = cost{runs: c.runs - before[tp].runs, runtime: c.runtime - before[tp].runtime}
	}
	return after, ids, stop()
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
	fmt.Println("ns/event = run_time_ns / run_cnt gained while the traffic was sent; events = run_cnt gained (median).")
	fmt.Println()
	fmt.Println("| scenario | tracepoint | skbstat ns/event | events | bpftrace ns/event | events |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, sc := range scs {
		for _, tp := range tracepoints {
			s, b := sc.tools[0][tp.name], sc.tools[1][tp.name]
			if len(s) == 0 && len(b) == 0 {
				continue
			}
			fmt.Printf("| %s | %s | %s | %s |\n", sc.name, tp.name, costCells(s), costCells(b))
		}
	}
	fmt.Println()
}

func costCells(cs []cost) string {
	if len(cs) == 0 {
		return "- | -"
	}
	var ns, runs []float64
	for _, c := range cs {
		ns = append(ns, c.perEvent())
		runs = append(runs, float64(c.runs))
	}
	return fmt.Sprintf("%.0f | %.0f", quantile(ns, 0.5), quantile(runs, 0.5))
}
