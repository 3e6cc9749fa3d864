package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skbstat/skbstat/internal/loaded"
	"github.com/skbstat/skbstat/layout"
)

// stormVariant is one way a drop storm is traced while it is measured:
// not at all (no bin), by a skbstat mode, or by bpftrace doing the same
// job. Every tracer counts all of the host's drops, as one run in a real
// storm would: no filter.
type stormVariant struct {
	name  string
	bin   string
	args  []string
	ready string // the line the tracer prints once it is attached
	// counts reads the drops the tracer counted, by reason, from its
	// output, and what it says it could not count, by cause.
	counts func(out string, reasons map[uint32]string) (drops, lost map[string]int64, err error)
	// goal is the % of the untraced capacity the variant must leave in a
	// storm, 0 for none.
	goal int
}

func (v stormVariant) traced() bool { return v.bin != "" }

// stormVariants are the untraced baseline (first: see floodRounds) and the
// traced variants. bpftrace's two programs do the jobs of skbstat's default
// and of --locations.
func stormVariants(t tools) []stormVariant {
	skbstat := func(mode ...string) stormVariant {
		return stormVariant{
			name: strings.Join(append([]string{"skbstat"}, mode...), " "),
			bin:  t.skbstat, args: append([]string{"-v", "-i", "3600", "--json"}, mode...),
			ready: "skbstat: tracing", counts: skbstatDrops,
		}
	}
	bpftrace := func(key string) stormVariant {
		script := fmt.Sprintf("tracepoint:skb:kfree_skb { @[%s, args->reason] = count(); }", key)
		return stormVariant{
			name: "bpftrace '" + script + "'",
			bin:  "bpftrace", args: []string{"-e", `BEGIN { printf("ready\n"); } ` + script},
			ready: "ready", counts: bpftraceDrops,
		}
	}
	stacks := skbstat()
	stacks.name += " (default: every frame)"
	locations := skbstat("--locations")
	locations.goal = 90
	return []stormVariant{
		{name: "untraced"},
		stacks,
		skbstat("--stack-depth", "8"),
		locations,
		bpftrace("kstack"),
		bpftrace("args->location"),
	}
}

// skbstatDrops sums the DROP counts of skbstat --json's intervals by
// reason, and its notes (what it saw but could not count) by cause.
func skbstatDrops(out string, _ map[uint32]string) (drops, lost map[string]int64, err error) {
	drops, lost = map[string]int64{}, map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue // -v's lines
		}
		var interval struct {
			Sections struct {
				DROP struct {
					Stacks []struct {
						Count  int64  `json:"count"`
						Reason string `json:"reason"`
					} `json:"stacks"`
					Notes []struct {
						Cause string `json:"cause"`
						Count int64  `json:"count"`
					} `json:"notes"`
				} `json:"DROP"`
			} `json:"sections"`
		}
		if err := json.Unmarshal([]byte(line), &interval); err != nil {
			return nil, nil, fmt.Errorf("skbstat --json: %w: %.200s", err, line)
		}
		for _, s := range interval.Sections.DROP.Stacks {
			drops[s.Reason] += s.Count
		}
		for _, n := range interval.Sections.DROP.Notes {
			if n.Count != 0 {
				lost[n.Cause] += n.Count
			}
		}
	}
	return drops, lost, nil
}

// bpftraceKeyEnd ends each entry of the map bpftrace prints at exit, after
// the stack or location: ", REASON]: COUNT". bpftrace 0.17 prints the enum
// as a number.
var bpftraceKeyEnd = regexp.MustCompile(`, (\d+)\]: (\d+)\n`)

// bpftraceLost is bpftrace's warning of events it could not count.
var bpftraceLost = regexp.MustCompile(`(?i)lost (\d+) events`)

func bpftraceDrops(out string, reasons map[uint32]string) (drops, lost map[string]int64, err error) {
	drops, lost = map[string]int64{}, map[string]int64{}
	for _, m := range bpftraceKeyEnd.FindAllStringSubmatch(out, -1) {
		reason, _ := strconv.ParseUint(m[1], 10, 32) // \d+
		count, _ := strconv.ParseInt(m[2], 10, 64)
		drops[layout.ReasonName(reasons, uint32(reason))] += count
	}
	for _, m := range bpftraceLost.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		lost["lost events"] += n
	}
	if len(drops) == 0 {
		return nil, nil, fmt.Errorf("bpftrace printed no drops:\n%s", out)
	}
	return drops, lost, nil
}

// flood is one bounded flood, measured.
type flood struct {
	sent int64 // datagrams the sender sent
	// atPort is how many of them reached the closed port: Udp NoPorts
	// gained in the receiving namespace. The rest were dropped before it.
	atPort int64
	// busy is all CPUs' busy time over the flood, from /proc/stat: the
	// sender's and the softirq's, and whatever else the machine did.
	busy time.Duration
	// own is the CPU time of the sender (including the receiving softirq,
	// which veth runs in the sender's context as it leaves the
	// transmit path), of ksoftirqd (where the rest of it went) and of the
	// tracer: what the flood cost, without the other tenants of a shared
	// machine that busy includes.
	own        time.Duration
	drops      map[string]int64 // the tracer's drop counts by reason
	lost       map[string]int64 // what the tracer said it did not count
	tracerBusy time.Duration    // the tracer's own share of own
}

// perDatagram is cpu divided over the datagrams sent, in µs.
func (f flood) perDatagram(cpu time.Duration) float64 {
	return float64(cpu.Nanoseconds()) / 1e3 / float64(f.sent)
}

// stormResult holds one flood per variant and round.
type stormResult struct {
	variants []stormVariant
	floods   [][]flood // [variant][round]
}

// floodRounds measures every variant rounds times. Each round starts
// untraced, then runs the traced variants forwards in even rounds and
// backwards in odd ones, so that drift and what follows what fall on all
// alike; each traced flood is compared with its own round's untraced one.
func floodRounds(ctx context.Context, t tools, ns *pair, datagrams, rounds int) (stormResult, []ebpf.ProgramID, error) {
	reasons, err := kernelDropReasons()
	if err != nil {
		return stormResult{}, nil, err
	}
	softirqd, err := ksoftirqds()
	if err != nil {
		return stormResult{}, nil, err
	}
	r := stormResult{variants: stormVariants(t)}
	r.floods = make([][]flood, len(r.variants))
	var seen []ebpf.ProgramID
	for round := range rounds {
		order := []int{0}
		for i := 1; i < len(r.variants); i++ {
			if round%2 == 0 {
				order = append(order, i)
			} else {
				order = append(order, len(r.variants)-i)
			}
		}
		for _, i := range order {
			f, ids, err := tracedFlood(ctx, t, ns, r.variants[i], datagrams, softirqd, reasons)
			seen = append(seen, ids...)
			if err != nil {
				return r, seen, fmt.Errorf("drop storm, %s: %w", r.variants[i].name, err)
			}
			r.floods[i] = append(r.floods[i], f)
		}
	}
	return r, seen, nil
}

// kernelDropReasons names the values of enum skb_drop_reason, which
// bpftrace prints as numbers.
func kernelDropReasons() (map[uint32]string, error) {
	l, err := layout.Kernel()
	if err != nil {
		return nil, err
	}
	return l.DropReasons()
}

// tracedFlood starts v's tracer, if any, floods while it is attached, and
// stops it. It returns the IDs of the programs the tracer held.
func tracedFlood(ctx context.Context, t tools, ns *pair, v stormVariant, datagrams int, softirqd []int, reasons map[uint32]string) (flood, []ebpf.ProgramID, error) {
	if !v.traced() {
		f, err := measureFlood(ctx, t, ns, datagrams, softirqd, 0)
		return f, nil, err
	}
	cmd := exec.CommandContext(ctx, v.bin, v.args...)
	stop, err := startReady(ctx, cmd, v.ready)
	if err != nil {
		return flood{}, nil, err
	}
	ids, _, err := loaded.HeldBy(cmd.Process.Pid)
	if err != nil {
		_, errStop := stop()
		return flood{}, nil, errors.Join(err, errStop)
	}
	settle(cmd.Process.Pid)
	f, err := measureFlood(ctx, t, ns, datagrams, softirqd, cmd.Process.Pid)
	out, errStop := stop()
	if err = errors.Join(err, errStop); err != nil {
		return f, ids, err
	}
	f.drops, f.lost, err = v.counts(out, reasons)
	return f, ids, err
}

// settle waits, for at most a second, until the tracer uses no more CPU:
// skbstat goes on reading /proc/kallsyms in the background after it says
// it is tracing, a one-time cost of its start that is no part of a
// storm's cost per datagram.
func settle(pid int) {
	const idle, poll = time.Millisecond, 50 * time.Millisecond
	last := processCPU(pid)
	for range time.Second / poll {
		time.Sleep(poll)
		now := processCPU(pid)
		if now-last < idle {
			return
		}
		last = now
	}
}

// measureFlood sends datagrams to the closed port at full speed and
// measures the CPU time it took, with the tracer (tracerPid, 0 for none)
// attached.
func measureFlood(ctx context.Context, t tools, ns *pair, datagrams int, softirqd []int, tracerPid int) (flood, error) {
	noPorts := func() (int64, error) { return udpNoPorts(ctx, ns.b) }
	portBefore, err := noPorts()
	if err != nil {
		return flood{}, err
	}
	busyBefore, err := cpuBusy()
	if err != nil {
		return flood{}, err
	}
	softirqBefore := threadsRuntime(softirqd)
	tracerBefore := processCPU(tracerPid)

	send := ns.sendCmd(ctx, t, datagrams, closedPort, "0s")
	var out bytes.Buffer
	send.Stdout, send.Stderr = &out, &out
	if err := send.Run(); err != nil {
		return flood{}, fmt.Errorf("send: %v: %s", err, out.String())
	}
	time.Sleep(20 * time.Millisecond) // let the receiving side finish

	busyAfter, err := cpuBusy()
	if err != nil {
		return flood{}, err
	}
	f := flood{
		busy:       busyAfter - busyBefore,
		tracerBusy: processCPU(tracerPid) - tracerBefore,
	}
	f.own = send.ProcessState.UserTime() + send.ProcessState.SystemTime() +
		threadsRuntime(softirqd) - softirqBefore + f.tracerBusy
	if _, err := fmt.Sscanf(out.String(), "udp: sent %d of", &f.sent); err != nil || f.sent == 0 {
		return f, fmt.Errorf("send: no datagrams sent: %s", out.String())
	}
	portAfter, err := noPorts()
	f.atPort = portAfter - portBefore
	return f, err
}

// clockTick is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture.
const clockTick = 10 * time.Millisecond

// cpuBusy is the time all CPUs have spent busy since boot, from the first
// line of /proc/stat: user, system, irq and softirq (not nice, idle,
// iowait or steal).
func cpuBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 3, 6, 7} { // user, system, irq, softirq
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// ksoftirqds are the PIDs of the per-CPU softirq threads, where the kernel
// defers softirq work it cannot finish where it was raised.
func ksoftirqds() ([]int, error) {
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(b), "ksoftirqd/") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c))) // [0-9]*
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return nil, errors.New("no ksoftirqd threads in /proc")
	}
	return pids, nil
}

// threadsRuntime is the CPU time the threads have run, in ns, from the first
// field of /proc/PID/schedstat (exact, unlike the ticks of /proc/PID/stat).
func threadsRuntime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
		ns, _ := strconv.ParseInt(strings.Fields(string(b) + " 0")[0], 10, 64)
		total += time.Duration(ns)
	}
	return total
}

// processCPU is the CPU time all of process pid's threads have run (0 for
// pid 0), from their schedstat.
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	var tids []int
	for _, task := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(task)) // [0-9]*
		tids = append(tids, tid)
	}
	return threadsRuntime(tids)
}

// udpNoPorts is the Udp NoPorts counter of namespace netns: datagrams that
// arrived for a port nothing listens on.
func udpNoPorts(ctx context.Context, netns string) (int64, error) {
	b, err := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0, fmt.Errorf("read /proc/net/snmp in %s: %w", netns, err)
	}
	var header []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		if i := slices.Index(header, "NoPorts"); i > 0 && i < len(f) {
			return strconv.ParseInt(f[i], 10, 64)
		}
	}
	return 0, fmt.Errorf("no Udp NoPorts in %s's /proc/net/snmp", netns)
}

func printStorm(datagrams, rounds int, r stormResult) {
	fmt.Printf("## Drop storm capacity (%d rounds, medians)\n\n", rounds)
	fmt.Printf("Each flood sends %d UDP datagrams at full speed from namespace a to a closed port in namespace b "+
		"(dropped, NO_SOCKET), with one tracer attached or none; the tracers count every drop on the host (no filter). "+
		"Each round runs untraced first, then the traced variants, forwards in even rounds and backwards in odd ones.\n\n", datagrams)
	fmt.Println("CPU per datagram: all CPUs' busy time over the flood from /proc/stat (user+system+irq+softirq; " +
		"it includes the other tenants of a shared machine), and the flood's own: the sender's CPU time, which holds " +
		"the receiving softirq that veth runs in its context, plus ksoftirqd's and the tracer's. " +
		"% of untraced capacity = untraced CPU per datagram / the variant's, in the same round (median of the rounds).")
	fmt.Println()
	fmt.Println("| variant | /proc/stat µs/datagram | % of untraced | own µs/datagram | % of untraced | tracer's own µs/datagram | NO_SOCKET counted − at the port | sent − at the port | not counted (tracer's notes) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	untraced := r.floods[0]
	busy := func(f flood) time.Duration { return f.busy }
	own := func(f flood) time.Duration { return f.own }
	tracer := func(f flood) time.Duration { return f.tracerBusy }
	var goal string
	for i, v := range r.variants {
		fs := r.floods[i]
		if v.goal > 0 {
			goal = fmt.Sprintf("Goal: %s leaves at least %d %% of the untraced capacity: %.0f %% by the flood's own CPU, %.0f %% by /proc/stat (medians).\n",
				v.name, v.goal, quantile(capacities(untraced, fs, own), 0.5), quantile(capacities(untraced, fs, busy), 0.5))
		}
		fmt.Printf("| %s | %.2f | %s | %.2f | %s | %s | %s | %s | %s |\n", v.name,
			medianPerDatagram(fs, busy), capacityCell(untraced, fs, busy),
			medianPerDatagram(fs, own), capacityCell(untraced, fs, own),
			tracedCell(v, fmt.Sprintf("%.3f", medianPerDatagram(fs, tracer))),
			tracedCell(v, countedCell(fs)), rangeCell(fs, func(f flood) int64 { return f.sent - f.atPort }),
			tracedCell(v, lostCell(fs)))
	}
	fmt.Println()
	fmt.Println(goal)
}

func medianPerDatagram(fs []flood, cpu func(flood) time.Duration) float64 {
	var xs []float64
	for _, f := range fs {
		xs = append(xs, f.perDatagram(cpu(f)))
	}
	return quantile(xs, 0.5)
}

// capacities are, per round, the % of untraced capacity a variant left:
// untraced CPU per datagram over the variant's, in the same round.
func capacities(untraced, fs []flood, cpu func(flood) time.Duration) []float64 {
	var xs []float64
	for round, f := range fs {
		xs = append(xs, 100*untraced[round].perDatagram(cpu(untraced[round]))/f.perDatagram(cpu(f)))
	}
	return xs
}

// capacityCell is the median of the rounds' capacities, with the lowest and
// highest round.
func capacityCell(untraced, fs []flood, cpu func(flood) time.Duration) string {
	xs := capacities(untraced, fs, cpu)
	return fmt.Sprintf("%.0f %% (%.0f-%.0f)", quantile(xs, 0.5), quantile(xs, 0), quantile(xs, 1))
}

// countedCell compares the tracer's NO_SOCKET count with the datagrams that
// reached the closed port, over the rounds: 0 is exact; more means drops
// elsewhere on the host with the same reason while it traced, fewer lost ones.
func countedCell(fs []flood) string {
	return rangeCell(fs, func(f flood) int64 { return f.drops["NO_SOCKET"] - f.atPort })
}

// rangeCell is the lowest and highest of x over the floods.
func rangeCell(fs []flood, x func(flood) int64) string {
	var xs []int64
	for _, f := range fs {
		xs = append(xs, x(f))
	}
	lo, hi := slices.Min(xs), slices.Max(xs)
	if lo == hi {
		return strconv.FormatInt(lo, 10)
	}
	return fmt.Sprintf("%d to %d", lo, hi)
}

// lostCell sums, over the rounds, what the tracer said it did not count.
func lostCell(fs []flood) string {
	total := map[string]int64{}
	for _, f := range fs {
		for cause, n := range f.lost {
			total[cause] += n
		}
	}
	if len(total) == 0 {
		return "none"
	}
	var parts []string
	for _, cause := range slices.Sorted(maps.Keys(total)) {
		parts = append(parts, fmt.Sprintf("%s %d", cause, total[cause]))
	}
	return strings.Join(parts, ", ")
}

func tracedCell(v stormVariant, s string) string {
	if !v.traced() {
		return "-"
	}
	return s
}
