package main

// The side of -vm that runs inside the VM (bench -guest), as root, with
// skbstat and traffic on PATH. It prints one JSON line per measurement,
// after guestPrefix, which the host side (vm.go) reads from the console.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/internal/loaded"
	"github.com/skbstat/skbstat/kallsyms"
)

const guestPrefix = "bench-vm: "

// mechanisms are skbstat's --attach values for kernel functions.
var mechanisms = []string{"fentry", "kprobe-multi", "kprobe"}

// baseline is the cycle without function rows: the drop tracepoint only,
// with a filter nothing in the idle VM matches (no stack, no kallsyms).
const baseline = "baseline"

// cycleArgs is the full cycle of the attach figures for mechanism m.
func cycleArgs(m string) []string {
	if m == baseline {
		return []string{"-v", "-d", "192.0.2.99", "-i", "0.001", "-c", "1"}
	}
	return append([]string{"-v"}, append(fullSet(m), "-i", "0.001", "-c", "1")...)
}

// fullSet is every --input and --output row, attached with m.
func fullSet(m string) []string {
	return []string{"--input", "--output", "--no_drop", "--attach", m}
}

// costFilters match the measured datagrams (from 127.0.0.1:5555), or
// reject them at the source port.
var costFilters = []struct{ name, sport string }{{"match", "5555"}, {"reject", "5556"}}

// costArgs counts the output rows of the measured datagrams.
func costArgs(m, sport string) []string {
	return []string{"-v", "-i", "3600", "--output", "--no_drop", "--attach", m,
		"-s", "127.0.0.1", "-S", sport, "-p", "udp"}
}

// record is one measurement made in the VM.
type record struct {
	Kind      string         `json:"kind"`                 // guest, cycle, objects, cost or send
	Kernel    string         `json:"kernel,omitempty"`     // guest: release
	CPUs      int            `json:"cpus,omitempty"`       // guest
	Mechanism string         `json:"mechanism"`            // --attach value, baseline, or none (no skbstat)
	Seconds   float64        `json:"seconds,omitempty"`    // cycle, send: wall time
	Attached  float64        `json:"attached,omitempty"`   // cycle: seconds until skbstat said it was tracing
	RSSKiB    int64          `json:"rss_kib,omitempty"`    // cycle: skbstat's peak RSS
	Rows      []string       `json:"rows,omitempty"`       // objects: skbstat -v's attach lines
	Programs  int            `json:"programs,omitempty"`   // objects: loaded programs named skbstat_*
	Links     map[string]int `json:"links,omitempty"`      // objects: their links, by kind
	Filter    string         `json:"filter,omitempty"`     // cost, send: match or reject
	Program   string         `json:"program,omitempty"`    // cost: name and what it serves
	Runs      uint64         `json:"runs,omitempty"`       // cost: run_cnt gained
	RuntimeNs int64          `json:"runtime_ns,omitempty"` // cost: run_time_ns gained
	Tool      string         `json:"tool,omitempty"`       // attach: skbstat or bpftrace
	Trace     *summary       `json:"trace,omitempty"`      // attach: where the attach time went
	Script    string         `json:"script,omitempty"`     // job: bpftrace's program
	Reason    string         `json:"reason,omitempty"`     // lacks: why the kernel lacks the mechanism
}

func emit(r record) {
	b, _ := json.Marshal(r)
	fmt.Printf("%s%s\n", guestPrefix, b)
}

func runGuest(ctx context.Context, runs, events, reps int) error {
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return err
	}
	emit(record{Kind: "guest", Kernel: strings.TrimSpace(string(release)), CPUs: runtime.NumCPU()})

	// 1. Attaching the full set: skbstat against bpftrace, interleaved.
	if err := attachRuns(ctx, runs); err != nil {
		return err
	}

	// 2. Full cycles, interleaved; the order rotates from run to run.
	available := availableMechanisms()
	var jobs []func() error
	for _, m := range append([]string{baseline}, available...) {
		jobs = append(jobs, func() error {
			// busybox has no GNU time: wait4 measures the peak RSS.
			s, err := tools{}.cycle(ctx, "skbstat", cycleArgs(m), skbstatStacks)
			if err != nil {
				return err
			}
			emit(record{Kind: "cycle", Mechanism: m, Seconds: s.wall.Seconds(),
				Attached: s.attached.Seconds(), RSSKiB: s.rssKiB})
			return nil
		})
	}
	if err := interleave(runs, jobs...); err != nil {
		return err
	}

	// 3. What each mechanism leaves in the kernel while skbstat runs.
	for _, m := range available {
		r, err := objects(ctx, m)
		if err != nil {
			return err
		}
		emit(r)
	}

	// 4. Per-event cost. A server on the destination port keeps ICMP
	// port-unreachable errors out of the egress counts.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	stopServer, err := startReady(ctx, exec.CommandContext(ctx, "traffic", "serve", "-udp", "9999"), "serve: listening")
	if err != nil {
		return err
	}
	defer stopServer()
	var took time.Duration
	send := func() error {
		start := time.Now()
		out, err := exec.CommandContext(ctx, "traffic", "udp", "-n", strconv.Itoa(events),
			"-src", "127.0.0.1:5555", "127.0.0.1:9999").CombinedOutput()
		took = time.Since(start)
		if err != nil {
			return fmt.Errorf("traffic udp: %v: %s", err, out)
		}
		return nil
	}
	var functionLabels []string
	for rep := range reps {
		for j := range available {
			m := available[(rep+j)%len(available)]
			var served []string // the programs' labels: "skbstat_fn3: ip_output"
			for _, f := range costFilters {
				cmd := exec.CommandContext(ctx, "skbstat", costArgs(m, f.sport)...)
				got, _, _, err := measure(ctx, cmd, "skbstat: tracing", byTarget, send)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", m, f.name, err)
				}
				for prog, c := range got {
					emit(record{Kind: "cost", Mechanism: m, Filter: f.name, Program: prog,
						Runs: c.runs, RuntimeNs: c.runtime.Nanoseconds()})
					served = append(served, prog)
				}
				emit(record{Kind: "send", Mechanism: m, Filter: f.name, Seconds: took.Seconds()})
			}
			// Debian 6.1 does not say which function a kprobe's perf
			// link is at (link info for those came in Linux 6.6): the
			// floor is measured at the functions another mechanism's
			// programs named.
			if !slices.ContainsFunc(served, namesFunction) {
				served = append(served, functionLabels...)
			}
			functionLabels = slices.DeleteFunc(slices.Clone(served), func(l string) bool { return !namesFunction(l) })
			floor, err := emptyFloor(m, served, send)
			if err != nil {
				return fmt.Errorf("%s, empty programs: %w", m, err)
			}
			for label, c := range floor {
				emit(record{Kind: "cost", Mechanism: m, Filter: emptyFilter, Program: label,
					Runs: c.runs, RuntimeNs: c.runtime.Nanoseconds()})
			}
		}
		if err := send(); err != nil {
			return err
		}
		emit(record{Kind: "send", Mechanism: "none", Seconds: took.Seconds()})
	}
	return nil
}

// namesFunction reports whether label is that of a program at a kernel
// function, and names it: "skbstat_fn3: ip_output".
func namesFunction(label string) bool {
	prog, targets, _ := strings.Cut(label, ": ")
	return strings.HasPrefix(prog, "skbstat_fn") && targets != ""
}

// emptyFilter is the per-event table's column of empty programs at the
// same places.
const emptyFilter = "empty"

// emptyFloor measures, while send runs, a program that does nothing at each
// place that skbstat's programs labelled served ran at: attached with m at
// the functions (one kprobe.multi program for all of them, as skbstat's),
// as tp_btf at the tracepoints, as skbstat attaches them. The floor is
// mostly the statistics' own clock reads, and the mechanism's entry.
func emptyFloor(m string, served []string, send func() error) (map[string]cost, error) {
	var fns []string
	tps := map[string]bool{}
	for _, label := range served {
		prog, targets, _ := strings.Cut(label, ": ")
		for _, t := range strings.Fields(targets) {
			switch {
			case !strings.HasPrefix(prog, "skbstat_fn"): // a tracepoint's
				tps[t] = true
			case !slices.Contains(fns, t):
				fns = append(fns, t)
			}
		}
	}
	progs := map[string]*ebpf.Program{} // by label: "empty: ip_output"
	if m == "kprobe-multi" && len(fns) > 0 {
		p, l, err := emptyKprobeMulti(fns)
		if err != nil {
			return nil, fmt.Errorf("empty kprobe-multi program: %w", err)
		}
		defer p.Close()
		defer l.Close()
		progs["empty: "+strings.Join(fns, " ")] = p
		fns = nil
	}
	for _, at := range []struct {
		mechanism string
		names     []string
	}{{m, fns}, {tpBTF, slices.Collect(maps.Keys(tps))}} {
		byName, closeAll, err := emptyPrograms(at.mechanism, at.names)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		for name, p := range byName {
			progs["empty: "+name] = p
		}
	}
	return costWhile(progs, send)
}

// availableMechanisms are the mechanisms the kernel has; for each of the
// others a lacks record says why not. Only kprobe.multi is missing from
// some kernels of the matrix (Debian's 6.1 and 5.10).
func availableMechanisms() []string {
	var ms []string
	for _, m := range mechanisms {
		if m == "kprobe-multi" {
			if err := features.HaveBPFLinkKprobeMulti(); err != nil {
				emit(record{Kind: "lacks", Mechanism: m, Reason: err.Error()})
				continue
			}
		}
		ms = append(ms, m)
	}
	return ms
}

// attachArgs attach the full --input/--output set as skbstat chooses
// (--attach auto), and end after one 1 ms interval.
var attachArgs = []string{"-v", "--input", "--output", "--no_drop", "-i", "0.001", "-c", "1"}

// attachRuns runs skbstat attachArgs and bpftrace doing the same job runs
// times each, interleaved, with the syscall trace on.
func attachRuns(ctx context.Context, runs int) error {
	out, err := exec.CommandContext(ctx, "skbstat", attachArgs...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skbstat %s: %v\n%s", strings.Join(attachArgs, " "), err, out)
	}
	syms, err := kernelSyms()
	if err != nil {
		return err
	}
	script, left := bpftraceJob(string(out), syms)
	emit(record{Kind: "job", Script: script, Rows: left})
	traced := func(tool string, args []string) func() error {
		return func() error {
			if err := startTrace(); err != nil {
				return err
			}
			s, err := tools{}.cycle(ctx, tool, args, func(string) bool { return false })
			t, terr := stopTrace(tool)
			if err = errors.Join(err, terr); err != nil {
				return err
			}
			sum := t.summarize()
			emit(record{Kind: "attach", Tool: tool, Seconds: s.wall.Seconds(), Attached: s.attached.Seconds(),
				RSSKiB: s.rssKiB, Trace: &sum})
			return nil
		}
	}
	return interleave(runs, traced("skbstat", attachArgs), traced("bpftrace", []string{"-e", script}))
}

// attachedRow is skbstat -v's line for an attached row: section, row
// (a function, or a tracepoint as group:name) and mechanism.
var attachedRow = regexp.MustCompile(`(?m)^skbstat: [A-Z]+: (\S+) attached as (\S+)$`)

// bpftraceJob is the bpftrace program that counts what skbstat's output
// out says it attached, each row with the same kind of hook: fentry rows as
// kfunc probes, the other function rows as kprobes, tracepoints as (perf)
// tracepoints, and ends as skbstat does after 1 ms. Rows attached to a
// compiler clone, which bpftrace cannot name, are returned in left.
func bpftraceJob(out string, syms *kallsyms.Table) (script string, left []string) {
	var probes []string
	for _, m := range attachedRow.FindAllStringSubmatch(out, -1) {
		row, mech := m[1], m[2]
		switch _, known := syms.Address(row); {
		case strings.Contains(row, ":"):
			probes = append(probes, "tracepoint:"+row)
		case mech == "fentry":
			probes = append(probes, "kfunc:"+row)
		case known:
			probes = append(probes, "kprobe:"+row)
		default:
			left = append(left, row)
		}
	}
	return strings.Join(probes, ", ") + " { @[probe] = count(); } interval:ms:1 { exit(); }", left
}

// objects runs skbstat with the full set attached with m and counts its
// programs and their links in the kernel.
func objects(ctx context.Context, m string) (record, error) {
	cmd := exec.CommandContext(ctx, "skbstat", append([]string{"-v", "-i", "3600"}, fullSet(m)...)...)
	stop, err := startReady(ctx, cmd, "skbstat: tracing")
	if err != nil {
		return record{}, err
	}
	progs, err := skbstatPrograms()
	var links []attachment
	if err == nil {
		links, err = linksOf(progs)
	}
	out, stopErr := stop()
	if err = errors.Join(err, stopErr); err != nil {
		return record{}, fmt.Errorf("%s: %w", m, err)
	}
	r := record{Kind: "objects", Mechanism: m, Programs: len(progs), Links: map[string]int{}}
	for _, l := range links {
		r.Links[l.kind]++
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, " attached as ") || strings.HasPrefix(line, "skbstat: not attached") {
			r.Rows = append(r.Rows, strings.TrimPrefix(line, "skbstat: "))
		}
	}
	return r, nil
}

// skbstatPrograms returns the IDs of the loaded programs named skbstat_*
// that trace: not the one that names addresses for stacks (skbstat_names),
// which is loaded in the background, sooner or later.
func skbstatPrograms() (map[ebpf.ProgramID]bool, error) {
	progs, err := loaded.Programs()
	if err != nil {
		return nil, err
	}
	ids := map[ebpf.ProgramID]bool{}
	for id, name := range progs {
		if strings.HasPrefix(name, "skbstat_") && name != "skbstat_names" {
			ids[id] = true
		}
	}
	return ids, nil
}

// attachment is one link of a program: its kind and what it attaches to.
type attachment struct {
	kind    string
	targets []string
}

// linksOf returns the links of the programs progs.
func linksOf(progs map[ebpf.ProgramID]bool) ([]attachment, error) {
	var as []attachment
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			return nil, fmt.Errorf("link %d: %w", it.ID, err)
		}
		if !progs[info.Program] {
			continue
		}
		a, err := describe(info)
		if err != nil {
			return nil, fmt.Errorf("link %d: %w", it.ID, err)
		}
		as = append(as, a)
	}
	return as, it.Err()
}

var (
	kernelBTF  = sync.OnceValues(btf.LoadKernelSpec)
	kernelSyms = sync.OnceValues(kallsyms.Load)
)

// describe names a link's kind and the functions or tracepoint it attaches to.
func describe(info *link.Info) (attachment, error) {
	switch info.Type {
	case link.RawTracepointType:
		return attachment{"raw tracepoint", []string{info.RawTracepoint().Name}}, nil
	case link.TracingType:
		spec, err := kernelBTF()
		if err != nil {
			return attachment{}, err
		}
		fn, err := spec.TypeByID(info.Tracing().TargetBtfId)
		if err != nil {
			return attachment{}, fmt.Errorf("fentry target: %w", err)
		}
		return attachment{"fentry", []string{fn.TypeName()}}, nil
	case link.KprobeMultiType:
		addrs, ok := info.KprobeMulti().Addresses()
		if !ok {
			return attachment{}, errors.New("kprobe.multi link without addresses")
		}
		syms, err := kernelSyms()
		if err != nil {
			return attachment{}, err
		}
		a := attachment{kind: "kprobe.multi"}
		for _, addr := range addrs {
			fn, _, _ := strings.Cut(syms.Symbolize(addr.Address), "+")
			a.targets = append(a.targets, fn)
		}
		return a, nil
	case link.PerfEventType:
		if k := info.PerfEvent().Kprobe(); k != nil {
			return attachment{"kprobe", []string{k.Function}}, nil
		}
	}
	return attachment{kind: fmt.Sprintf("link type %d", info.Type)}, nil
}

// byTarget labels skbstat's programs by name and what they serve, e.g.
// "skbstat_fn1: ip_local_out ip_output".
func byTarget(id ebpf.ProgramID, pi *ebpf.ProgramInfo) (string, error) {
	if !strings.HasPrefix(pi.Name, "skbstat_") {
		return "", nil
	}
	links, err := linksOf(map[ebpf.ProgramID]bool{id: true})
	if err != nil {
		return "", err
	}
	var targets []string
	for _, l := range links {
		targets = append(targets, l.targets...)
	}
	return pi.Name + ": " + strings.Join(targets, " "), nil
}
