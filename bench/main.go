// Command bench measures skbstat against bpftrace, side by side in one run.
// On this machine: the full load-attach-print-detach cycle of two jobs
// (wall time and peak RSS), the same cycle of skbstat with each source of
// the kernel's layout (kernel BTF, a trimmed BTF file, calibration), what the
// kernel's BTF costs at start, the stripped static binary's size for every
// architecture skbstat is built for, the per-event cost of each BPF program
// from the kernel's BPF statistics beside an empty program's, and the
// capacity a drop storm leaves under each of skbstat's drop modes and under
// bpftrace (CPU time per datagram of a bounded flood, see storm.go). Then in
// the VMs of test/vm: the kernel-function rows' attach in the Debian 6.1 VM
// against bpftrace's (as -vm), skbstat's peak RSS in every kernel of the
// matrix (as -memory), and calibration where there is no BTF (as
// -calibration).
//
// Run it as root from the repository root:
//
//	go run ./bench [-runs 21] [-events 20000] [-reps 3] [-vm-runs 5] [-src DIR]
//
// It builds skbstat and test/traffic (from -src, by default the module it
// is run in) into a temporary directory, creates two
// network namespaces joined by a veth pair for its traffic (nothing is sent
// from the host namespace), and removes everything it created when it ends.
// Results are printed as Markdown, for BENCHMARKS.md.
//
// With -per-event it measures only the per-event cost, with -storm only the
// drop storm's capacity (both: both), and nothing in the VMs:
//
//	go run ./bench -storm [-flood 200000] [-rounds 5]
//
// With -vm it measures only the kernel-function rows, by default in the Debian 6.12
// VM of test/vm (this machine's kernel can probe no kernel function): it
// cross-builds skbstat, test/traffic and itself, boots the VM with them,
// and runs itself there with -guest (see vm.go and guest.go):
//
//	go run ./bench -vm -runs 9 -events 2000 -reps 3
//
// With -calibration it measures calibration in the VMs without BTF (and,
// beside the kernel's BTF, in the 6.12 one), one skbstat at a time:
//
//	go run ./bench -calibration -runs 7
//
// With -memory it measures skbstat's peak RSS, drop-only and with every
// function row, in every kernel of the VM matrix and on this machine:
//
//	go run ./bench -memory -runs 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skbstat/skbstat/test/vm"
)

func main() {
	runs := flag.Int("runs", 21, "full cycles per tool, per variant")
	events := flag.Int("events", 20000, "datagrams sent per per-event measurement")
	reps := flag.Int("reps", 3, "repetitions of each per-event measurement")
	src := flag.String("src", "", "skbstat source tree to build (default: the current module)")
	inVM := flag.Bool("vm", false, "measure the kernel-function rows in a Debian VM instead (-kernel)")
	vmKernel := flag.String("kernel", defaultVMKernel, "with -vm: the test/vm matrix kernel to boot")
	guest := flag.Bool("guest", false, "the -vm measurement's side inside the VM (used by -vm)")
	calibration := flag.Bool("calibration", false, "measure calibration in the VMs without BTF (and one with) instead")
	memory := flag.Bool("memory", false, "measure skbstat's peak RSS in every kernel of the VM matrix and here instead")
	perEvent := flag.Bool("per-event", false, "measure only the per-event cost (with -storm: and the drop storm)")
	storm := flag.Bool("storm", false, "measure only the drop storm's capacity (with -per-event: and the per-event cost)")
	cycles := flag.Bool("cycles", false, "measure only the binary sizes, the full cycles and start-up (with -per-event or -storm: and those)")
	datagrams := flag.Int("flood", 200000, "datagrams per drop-storm flood")
	rounds := flag.Int("rounds", 5, "drop-storm rounds (every variant once each)")
	only := flag.String("only", "", "with -memory or -calibration: the matrix kernels to measure, comma-separated (default: all)")
	vmRuns := flag.Int("vm-runs", 5, "by default: full cycles per tool in the VM, and runs per kernel of the memory and calibration parts")
	flag.Parse()
	if *only != "" {
		onlyKernels = strings.Split(*only, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *guest:
		err = runGuest(ctx, *runs, *events, *reps)
	case *calibration:
		err = runCalibration(ctx, *src, *runs)
	case *memory:
		err = runMemory(ctx, *src, *runs)
	case *inVM:
		err = runVM(ctx, *src, *vmKernel, *runs, *events, *reps)
	default:
		do := chosenParts(*cycles, *perEvent, *storm)
		err = run(ctx, *src, *runs, *events, *reps, stormSize{*datagrams, *rounds}, do)
		if err == nil && do.vms {
			err = runVMs(ctx, *src, *vmRuns)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// onlyKernels, where set, are the matrix kernels that -memory and
// -calibration measure.
var onlyKernels []string

// chosen reports whether the VM parts measure matrix kernel k.
func chosen(k vm.Kernel) bool {
	return onlyKernels == nil || slices.Contains(onlyKernels, k.Name)
}

// tools are the built binaries under test, and GNU time, which measures
// their peak RSS (see cycle).
type tools struct {
	skbstat, traffic string
	gnuTime          string
}

// parts are the parts of the benchmark that run: on this machine, and in
// the VMs.
type parts struct{ cycles, perEvent, storm, vms bool }

// chosenParts are the parts the flags ask for alone, or by default all.
func chosenParts(cyclesOnly, perEventOnly, stormOnly bool) parts {
	if !cyclesOnly && !perEventOnly && !stormOnly {
		return parts{cycles: true, perEvent: true, storm: true, vms: true}
	}
	return parts{cycles: cyclesOnly, perEvent: perEventOnly, storm: stormOnly}
}

// attachVMKernel is the VM in which the default run measures the
// kernel-function rows' attach against bpftrace's: Debian 6.1, without
// kprobe.multi, where every row is a trampoline of its own.
const attachVMKernel = "6.1-amd64"

// runVMs is the default run's part in the VMs: the kernel-function rows in
// attachVMKernel (-vm), the peak RSS in every kernel (-memory), and
// calibration in the kernels without BTF (-calibration), runs times each.
func runVMs(ctx context.Context, src string, runs int) error {
	if err := runVM(ctx, src, attachVMKernel, runs, 1000, 1); err != nil {
		return fmt.Errorf("VM %s: %w", attachVMKernel, err)
	}
	if err := runMemory(ctx, src, runs); err != nil {
		return fmt.Errorf("memory in the VMs: %w", err)
	}
	if err := runCalibration(ctx, src, runs); err != nil {
		return fmt.Errorf("calibration in the VMs: %w", err)
	}
	return nil
}

// stormSize is how many datagrams each drop-storm flood sends, and how
// many rounds of floods are measured.
type stormSize struct{ datagrams, rounds int }

func run(ctx context.Context, src string, runs, events, reps int, storm stormSize, do parts) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark loads BPF programs and creates network namespaces")
	}
	for _, bin := range []string{"bpftrace", "ip", "xz", gnuTime} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: apt-get install bpftrace iproute2 xz-utils time", bin)
		}
	}
	dir, err := os.MkdirTemp("", "skbstat-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src, err = sourceDir(src)
	if err != nil {
		return err
	}
	t, err := build(src, dir)
	if err != nil {
		return err
	}
	t.gnuTime = gnuTime

	ns, err := newPair(ctx)
	if err != nil {
		return err
	}
	defer ns.close()

	printMachine()
	if do.cycles {
		if err := runCycles(ctx, t, src, dir, runs, ns); err != nil {
			return err
		}
	}
	// The IDs of every program the tools loaded, checked at the end.
	var seen []ebpf.ProgramID
	if do.perEvent {
		costs, ids, err := eventCosts(ctx, t, ns, events, reps)
		seen = append(seen, ids...)
		if err != nil {
			return errors.Join(err, checkGone(seen))
		}
		printCosts(events, reps, costs)
	}
	if do.storm {
		floods, ids, err := floodRounds(ctx, t, ns, storm.datagrams, storm.rounds)
		seen = append(seen, ids...)
		if err != nil {
			return errors.Join(err, checkGone(seen))
		}
		printStorm(storm.datagrams, storm.rounds, floods)
	}
	return checkGone(seen)
}

// runCycles measures and prints the binary sizes and the full cycles.
func runCycles(ctx context.Context, t tools, src, dir string, runs int, ns *pair) error {
	sizes, err := binarySizes(src, dir)
	if err != nil {
		return err
	}
	printSizes(sizes)

	idle, err := cycles(ctx, t, runs, nil)
	if err != nil {
		return err
	}
	busy, err := cycles(ctx, t, runs, ns)
	if err != nil {
		return err
	}
	printCycles(runs, idle, busy)

	layouts, err := layoutCycles(ctx, t, dir, runs)
	if err != nil {
		return err
	}
	printLayouts(runs, layouts)

	cost, err := measureBTF(runs)
	if err != nil {
		return fmt.Errorf("kernel BTF: %w", err)
	}
	printBTF(runs, cost)
	return nil
}

// gnuTime is GNU time, not the shell's keyword.
const gnuTime = "/usr/bin/time"

// sourceDir is the skbstat source tree to build: src, or by default the
// module the benchmark is run in.
func sourceDir(src string) (string, error) {
	if src != "" {
		return src, nil
	}
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" {
		return "", errors.New("run from inside the skbstat module, or give -src")
	}
	return filepath.Dir(strings.TrimSpace(string(mod))), nil
}

// build compiles skbstat exactly as released, and the traffic generator.
func build(src, dir string) (tools, error) {
	t := tools{skbstat: filepath.Join(dir, "skbstat"), traffic: filepath.Join(dir, "traffic")}
	for bin, pkg := range map[string]string{t.skbstat: ".", t.traffic: "./test/traffic"} {
		if err := goBuild(src, bin, pkg); err != nil {
			return tools{}, err
		}
	}
	return t, nil
}

// goBuild compiles package pkg of src as skbstat is released: static
// (CGO_ENABLED=0) and stripped, for the target env sets (GOARCH=...), by
// default this machine.
func goBuild(src, bin, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Dir = src
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s %s: %v\n%s", strings.Join(env, " "), pkg, err, out)
	}
	return nil
}

func printMachine() {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	bt, _ := exec.Command("bpftrace", "--version").Output()
	cpu := "?"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if name, ok := strings.CutPrefix(line, "model name\t: "); ok {
				cpu = name
				break
			}
		}
	}
	fmt.Printf("# skbstat benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("machine: %d CPUs (%s), kernel %s, %s, %s; load average at start %s\n\n",
		runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), runtime.Version(), strings.TrimSpace(string(bt)), loadAverage())
}

// loadAverage is the 1, 5 and 15 minute load averages: on a shared machine,
// how quiet it was.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// quantile returns the nearest-rank q-quantile of xs (0 < q <= 1).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
