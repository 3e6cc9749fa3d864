package main

// The host side of -vm: build, boot, read the guest's records, print.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/skbstat/skbstat/test/vm"
)

const module = "github.com/skbstat/skbstat"

// defaultVMKernel is the matrix kernel that has all three mechanisms.
const defaultVMKernel = "6.12-amd64"

// runVM cross-builds skbstat, test/traffic and this benchmark, boots the
// VM of kernel vmKernel with them and with the suite's bpftrace, runs
// `bench -guest` there and prints what it measured.
func runVM(ctx context.Context, src, vmKernel string, runs, events, reps int) error {
	if src != "" {
		if err := os.Chdir(src); err != nil { // vm.BuildStatic builds in the working directory
			return err
		}
	}
	i := slices.IndexFunc(vm.Matrix, func(k vm.Kernel) bool { return k.Name == vmKernel })
	if i < 0 {
		return fmt.Errorf("kernel %s is not in test/vm's matrix", vmKernel)
	}
	k := vm.Matrix[i]
	dir, err := os.MkdirTemp("", "skbstat-bench-vm")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{}
	for guest, pkg := range map[string]string{"/bin/skbstat": module, "/bin/traffic": module + "/test/traffic", "/bin/bench": module + "/bench"} {
		if files[guest], err = vm.BuildStatic(ctx, k, pkg, dir); err != nil {
			return err
		}
	}
	res, err := vm.Run(ctx, k, vm.Options{
		Files:    files,
		Packages: []string{"bpftrace"},
		Script:   fmt.Sprintf("bench -guest -runs %d -events %d -reps %d\n", runs, events, reps),
		Timeout:  time.Hour,
	})
	if err != nil {
		return err
	}
	if res.ExitStatus != 0 {
		return fmt.Errorf("bench -guest exited with %d:\n%s", res.ExitStatus, res.Console)
	}
	var recs []record
	for _, line := range strings.Split(res.Console, "\n") {
		if js, ok := strings.CutPrefix(line, guestPrefix); ok {
			var r record
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				return fmt.Errorf("guest line %q: %w", line, err)
			}
			recs = append(recs, r)
		}
	}
	printVM(res, runs, events, reps, recs)
	return nil
}

// measured are the mechanisms the guest measured, in mechanisms' order.
func measured(recs []record) []string {
	var ms []string
	for _, m := range mechanisms {
		if slices.ContainsFunc(recs, func(r record) bool { return r.Kind == "cycle" && r.Mechanism == m }) {
			ms = append(ms, m)
		}
	}
	return ms
}

func printVM(res vm.Result, runs, events, reps int, recs []record) {
	by := func(kind, mechanism, filter string) []record {
		var rs []record
		for _, r := range recs {
			if r.Kind == kind && r.Mechanism == mechanism && r.Filter == filter {
				rs = append(rs, r)
			}
		}
		return rs
	}
	medianOf := func(rs []record, f func(record) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		return quantile(xs, 0.5)
	}
	seconds := func(r record) float64 { return r.Seconds }

	fmt.Printf("# skbstat kernel-function rows in a VM, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	for _, g := range by("guest", "", "") {
		fmt.Printf("guest: %s (%s), %d CPU, qemu TCG (software emulation); host %d CPUs, %s; the VM ran %v\n\n",
			g.Kernel, res.Package, g.CPUs, runtime.NumCPU(), runtime.Version(), res.Boot.Round(time.Second))
	}

	printAttach(recs, runs)

	fmt.Printf("## Full cycle with every --input/--output row (%d runs each, interleaved)\n\n", runs)
	fmt.Printf("skbstat %s; baseline: skbstat %s\n\n", strings.Join(cycleArgs("M"), " "), strings.Join(cycleArgs(baseline), " "))
	fmt.Println("| --attach | rows attached with it | not attached | BPF programs | links | wall median | wall p90 | start to attached | attached to exit | wall - baseline | peak RSS median |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	base := medianOf(by("cycle", baseline, ""), seconds)
	var causes []string
	for _, m := range append([]string{baseline}, measured(recs)...) {
		cs := by("cycle", m, "")
		var wall []float64
		for _, c := range cs {
			wall = append(wall, c.Seconds)
		}
		rows, missing, progs, links := "-", "-", "-", "-"
		for _, o := range by("objects", m, "") {
			n, notAttached := 0, []string(nil)
			for _, row := range o.Rows {
				if strings.HasSuffix(row, " attached as "+m) {
					n++
				}
				if names, ok := strings.CutPrefix(row, "not attached: "); ok {
					names, _, _ = strings.Cut(names, ": ")
					notAttached = append(notAttached, names)
					causes = append(causes, fmt.Sprintf("%s: %s", m, row))
				}
			}
			rows, missing, progs = fmt.Sprint(n), strings.Join(notAttached, ", "), fmt.Sprint(o.Programs)
			var kinds []string
			total := 0
			for kind, c := range o.Links {
				kinds = append(kinds, fmt.Sprintf("%d %s", c, kind))
				total += c
			}
			slices.Sort(kinds)
			links = fmt.Sprintf("%d (%s)", total, strings.Join(kinds, ", "))
		}
		attached := medianOf(cs, func(r record) float64 { return r.Attached })
		fmt.Printf("| %s | %s | %s | %s | %s | %.2f s | %.2f s | %.2f s | %.2f s | %+.2f s | %.1f MiB |\n", m, rows, missing, progs, links,
			quantile(wall, 0.5), quantile(wall, 0.9), attached, medianOf(cs, func(r record) float64 { return r.Seconds - r.Attached }),
			quantile(wall, 0.5)-base, medianOf(cs, func(r record) float64 { return float64(r.RSSKiB) / 1024 }))
	}
	fmt.Println()
	for _, r := range recs {
		if r.Kind != "lacks" {
			continue
		}
		fmt.Printf("- %s: not measured, the kernel lacks it: %s\n", r.Mechanism, r.Reason)
	}
	for _, c := range causes {
		fmt.Printf("- %s\n", c)
	}
	fmt.Println()

	printVMCosts(recs, events, reps)

	fmt.Printf("## Wall time of sending the %d datagrams (median of %d)\n\n", events, reps)
	fmt.Println("| --attach | filter | wall | per datagram | vs without skbstat |")
	fmt.Println("|---|---|---|---|---|")
	none := medianOf(by("send", "none", ""), seconds)
	row := func(m, filter string) {
		s := medianOf(by("send", m, filter), seconds)
		fmt.Printf("| %s | %s | %.3f s | %.1f µs | %+.1f µs |\n", m, cmp.Or(filter, "-"), s, s/float64(events)*1e6, (s-none)/float64(events)*1e6)
	}
	row("none", "")
	for _, m := range measured(recs) {
		for _, f := range costFilters {
			row(m, f.name)
		}
	}
	fmt.Println()
}

// printVMCosts prints one row per function or tracepoint and one column
// per mechanism and filter. A kprobe.multi program serves several
// functions: its cells are the program's, marked *.
func printVMCosts(recs []record, events, reps int) {
	type cell struct {
		ns, runs []float64
		shared   bool
	}
	cells := map[string]*cell{} // by mechanism, filter and target
	var targets []string
	var labels []string
	for _, r := range recs {
		if r.Kind == "cost" && r.Filter != emptyFilter && !slices.Contains(labels, r.Program) {
			labels = append(labels, r.Program)
		}
	}
	slices.Sort(labels) // skbstat_fn0, skbstat_fn1, ..., skbstat_queue, skbstat_xmit
	for _, l := range labels {
		_, served, _ := strings.Cut(l, ": ")
		for _, t := range strings.Fields(served) {
			if !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
	}
	for _, r := range recs {
		if r.Kind != "cost" {
			continue
		}
		_, served, _ := strings.Cut(r.Program, ": ")
		ts := strings.Fields(served)
		for _, t := range ts {
			key := r.Mechanism + "/" + r.Filter + "/" + t
			if cells[key] == nil {
				cells[key] = &cell{shared: len(ts) > 1}
			}
			c := cells[key]
			c.runs = append(c.runs, float64(r.Runs))
			if r.Runs > 0 {
				c.ns = append(c.ns, float64(r.RuntimeNs)/float64(r.Runs))
			}
		}
	}

	fmt.Printf("## Per-event cost of a row (kernel BPF statistics, median of %d)\n\n", reps)
	fmt.Printf("skbstat %s, while `traffic udp -n %d -src 127.0.0.1:5555 127.0.0.1:9999` sends to a listening socket; ", strings.Join(costArgs("M", "5555"), " "), events)
	fmt.Println("reject: the same with -S 5556; empty: a program that does nothing, at each of the same places, with the same mechanism (tracepoints: tp_btf), measured right after: the floor, mostly the statistics' own clock reads.")
	fmt.Println("Cells: run_time_ns / run_cnt gained (ns per event), and run_cnt gained; * = one kprobe.multi program for all the functions marked so, its figures.")
	fmt.Println()
	header, rule := "| function or tracepoint |", "|---|"
	ms := measured(recs)
	filters := []string{emptyFilter}
	for _, f := range costFilters {
		filters = append(filters, f.name)
	}
	for _, m := range ms {
		for _, f := range filters {
			header += fmt.Sprintf(" %s, %s |", m, f)
			rule += "---|"
		}
	}
	fmt.Println(header)
	fmt.Println(rule)
	for _, t := range targets {
		line := "| " + t + " |"
		for _, m := range ms {
			for _, f := range filters {
				c := cells[m+"/"+f+"/"+t]
				if c == nil {
					line += " - |"
					continue
				}
				if len(c.ns) == 0 {
					line += " never ran (0) |"
					continue
				}
				star := ""
				if c.shared {
					star = "*"
				}
				line += fmt.Sprintf(" %.0f ns (%.0f)%s |", quantile(c.ns, 0.5), quantile(c.runs, 0.5), star)
			}
		}
		fmt.Println(line)
	}
	fmt.Println()
	for _, m := range ms {
		if !slices.ContainsFunc(recs, func(r record) bool {
			return r.Kind == "cost" && r.Mechanism == m && r.Filter != emptyFilter && namesFunction(r.Program)
		}) {
			fmt.Printf("%s, match and reject: this kernel does not say which function a %s program's link is at (perf event link info came in Linux 6.6), so its figures are not placed by function.\n\n", m, m)
		}
	}
}

// printAttach prints skbstat's attach of the full set against bpftrace's
// doing the same job, and where each one's attach time went.
func printAttach(recs []record, runs int) {
	runsOf := map[string][]record{}
	for _, r := range recs {
		if r.Kind == "attach" {
			runsOf[r.Tool] = append(runsOf[r.Tool], r)
		}
	}
	of := func(tool string, f func(record) float64) []float64 {
		var xs []float64
		for _, r := range runsOf[tool] {
			xs = append(xs, f(r))
		}
		return xs
	}
	attached := func(r record) float64 { return r.Trace.Attached }
	fmt.Printf("## Attaching every --input/--output row: skbstat against bpftrace (%d runs each, interleaved)\n\n", runs)
	fmt.Printf("skbstat %s\n\n", strings.Join(attachArgs, " "))
	for _, r := range recs {
		if r.Kind == "job" {
			fmt.Printf("bpftrace -e '%s'\n\n", r.Script)
			if len(r.Rows) > 0 {
				fmt.Printf("(not in bpftrace's program, attached to a compiler clone: %s)\n\n", strings.Join(r.Rows, ", "))
			}
		}
	}
	fmt.Println("From the syscall tracepoints: *attached* is exec to the end of the last call that attaches a program")
	fmt.Println("(BPF_LINK_CREATE, BPF_RAW_TRACEPOINT_OPEN, perf_event_open, PERF_EVENT_IOC_SET_BPF/ENABLE); *first load* is exec to the first BPF_PROG_LOAD.")
	fmt.Println()
	fmt.Println("| tool | first load median | attached median | attached p90 | wall median | peak RSS median |")
	fmt.Println("|---|---|---|---|---|---|")
	tools := []string{"skbstat", "bpftrace"}
	for _, tool := range tools {
		fmt.Printf("| %s | %.2f s | %.2f s | %.2f s | %.2f s | %.1f MiB |\n", tool,
			quantile(of(tool, func(r record) float64 { return r.Trace.FirstLoad }), 0.5),
			quantile(of(tool, attached), 0.5), quantile(of(tool, attached), 0.9),
			quantile(of(tool, func(r record) float64 { return r.Seconds }), 0.5),
			quantile(of(tool, func(r record) float64 { return float64(r.RSSKiB) / 1024 }), 0.5))
	}
	fmt.Printf("| skbstat / bpftrace | | %.2f | | %.2f | |\n\n",
		quantile(of("skbstat", attached), 0.5)/quantile(of("bpftrace", attached), 0.5),
		quantile(of("skbstat", func(r record) float64 { return r.Seconds }), 0.5)/quantile(of("bpftrace", func(r record) float64 { return r.Seconds }), 0.5))

	fmt.Println("Calls until exit, by kind (medians over the runs): calls, one call's median and maximum, and the time inside all of them.")
	fmt.Println()
	fmt.Println("| tool | call | calls | median call | slowest call | time in calls |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, tool := range tools {
		var names []string
		for _, r := range runsOf[tool] {
			for _, c := range r.Trace.Calls {
				if !slices.Contains(names, c.Name) {
					names = append(names, c.Name)
				}
			}
		}
		for _, n := range names {
			stat := func(f func(callStat) float64) float64 {
				var xs []float64
				for _, r := range runsOf[tool] {
					for _, c := range r.Trace.Calls {
						if c.Name == n {
							xs = append(xs, f(c))
						}
					}
				}
				return quantile(xs, 0.5)
			}
			fmt.Printf("| %s | %s | %.0f | %.2f ms | %.2f ms | %.3f s |\n", tool, n,
				stat(func(c callStat) float64 { return float64(c.Count) }),
				stat(func(c callStat) float64 { return c.Median * 1e3 }),
				stat(func(c callStat) float64 { return c.Max * 1e3 }),
				stat(func(c callStat) float64 { return c.Total }))
		}
	}
	fmt.Println()
}
