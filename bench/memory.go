package main

// -memory: skbstat's peak RSS in every kernel of the VM matrix, and on
// this machine, drop-only and with every function row, each time with a
// stack printed.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skbstat/skbstat/test/vm"
)

// memoryModes are the measured command lines, after memoryArgs: drop-only
// (the default) and with every function row.
var memoryModes = []struct{ name, args string }{
	{"drop", ""},
	{"rows", "--input --output"},
}

// memoryArgs start every measured command line: skbstat runs until SIGINT,
// which prints the interval so far and ends it.
const memoryArgs = "-v -i 3600"

// memoryScript runs each mode $RUNS times; once skbstat says it is
// tracing, three datagrams to a closed port give DROP a stack to print,
// and SIGINT ends it (a run still going 120 s later is killed, and fails
// with its kernel stacks).
// Each run's stderr is printed (MEMERR), then one line with the mode, the
// exit status and the stack frames printed (MEM).
const memoryScript = `
for i in $(seq $RUNS); do
	for mode in drop rows; do
		args=""
		[ $mode = rows ] && args="--input --output"
		rm -f /tmp/out /tmp/err
		skbstat $ARGS $args >/tmp/out 2>/tmp/err &
		pid=$!
		until grep -q "skbstat: tracing" /tmp/err 2>/dev/null; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
		traffic udp -n 3 127.0.0.1:9 >/dev/null
		sleep 0.2
		kill -INT $pid
		n=0
		while kill -0 $pid 2>/dev/null && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
		if kill -0 $pid 2>/dev/null; then
			echo "skbstat still running 120 s after SIGINT; its threads' kernel stacks:" >>/tmp/err
			cat /proc/$pid/task/*/stack >>/tmp/err
			kill -KILL $pid
		fi
		wait $pid
		st=$?
		sed 's/^/MEMERR /' /tmp/err
		echo "MEM $mode $st $(grep -c '+0x' /tmp/out)"
	done
done
`

// memSample is one run of one mode: skbstat's own peak (its -v line), and
// on this machine GNU time's and wait4's figures for the same run.
type memSample struct {
	peakMiB          float64
	gnuKiB, wait4KiB int64
	layout           string   // kernel BTF, or calibration
	rows             []string // "N mechanism" per mechanism of the function rows
}

var (
	memLineRE = regexp.MustCompile(`^MEM (\w+) (\d+) (\d+)$`)
	peakRE    = regexp.MustCompile(`skbstat: peak RSS ([0-9.]+) MiB`)
	mechRE    = regexp.MustCompile(`^skbstat: (?:INGRESS|EGRESS): \S+ attached as (.+)$`)
)

// parseRun reads skbstat -v's stderr of one run.
func parseRun(stderr string) (memSample, error) {
	m := peakRE.FindStringSubmatch(stderr)
	if m == nil {
		return memSample{}, fmt.Errorf("no peak RSS line in:\n%s", stderr)
	}
	s := memSample{}
	s.peakMiB, _ = strconv.ParseFloat(m[1], 64) // [0-9.]+
	switch {
	case strings.Contains(stderr, "skbstat: layout: kernel BTF"):
		s.layout = "kernel BTF"
	case strings.Contains(stderr, "skbstat: layout: calibrated in "):
		s.layout = "calibration"
	default:
		return memSample{}, fmt.Errorf("no layout line in:\n%s", stderr)
	}
	count := map[string]int{}
	for _, line := range strings.Split(stderr, "\n") {
		if m := mechRE.FindStringSubmatch(line); m != nil && !strings.Contains(line, ": net:") {
			count[m[1]]++
		}
	}
	for mech, n := range count {
		s.rows = append(s.rows, fmt.Sprintf("%d %s", n, mech))
	}
	slices.Sort(s.rows)
	return s, nil
}

// memKernel is what one kernel (or this machine) gave, per mode.
type memKernel struct {
	name string
	runs map[string][]memSample
}

func runMemory(ctx context.Context, src string, runs int) error {
	if src != "" {
		if err := os.Chdir(src); err != nil { // vm.BuildStatic builds in the working directory
			return err
		}
	}
	dir, err := os.MkdirTemp("", "skbstat-bench-mem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	host, err := hostMemory(ctx, dir, runs)
	if err != nil {
		return err
	}
	results := []memKernel{host}
	for _, k := range vm.Matrix {
		if !chosen(k) {
			continue
		}
		r, err := vmMemory(ctx, k, dir, runs)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	printMemory(runs, results)
	return nil
}

// hostMemory runs each mode on this machine, alternately under GNU time
// (which forks) and started directly (vfork, wait4), with datagrams to a
// closed port between two namespaces.
func hostMemory(ctx context.Context, dir string, runs int) (memKernel, error) {
	src, err := sourceDir("")
	if err != nil {
		return memKernel{}, err
	}
	t, err := build(src, dir)
	if err != nil {
		return memKernel{}, err
	}
	ns, err := newPair(ctx)
	if err != nil {
		return memKernel{}, err
	}
	defer ns.close()
	release, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	r := memKernel{name: "this machine, " + strings.TrimSpace(string(release)), runs: map[string][]memSample{}}
	for range runs {
		for _, mode := range memoryModes {
			args := strings.Fields(memoryArgs + " " + mode.args)
			withTime, err := hostRun(ctx, t, ns, exec.CommandContext(ctx, gnuTime, append([]string{"-f", gnuTimeFormat, t.skbstat}, args...)...))
			if err != nil {
				return r, err
			}
			direct, err := hostRun(ctx, t, ns, exec.CommandContext(ctx, t.skbstat, args...))
			if err != nil {
				return r, err
			}
			withTime.wait4KiB = direct.wait4KiB
			r.runs[mode.name] = append(r.runs[mode.name], withTime)
		}
	}
	return r, nil
}

// hostRun runs cmd in a process group of its own, sends three datagrams to
// a closed port once it traces, ends it with SIGINT to the group (GNU time
// ignores it, skbstat ends) and reads its figures.
func hostRun(ctx context.Context, t tools, ns *pair, cmd *exec.Cmd) (memSample, error) {
	var out bytes.Buffer
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = &out, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return memSample{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	var stderr strings.Builder
	tracing, scanned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "skbstat: tracing") {
				close(tracing)
			}
		}
	}()
	select {
	case <-tracing:
	case <-scanned: // exited before tracing: the error below says why
	}
	sendErr := ns.sendCmd(ctx, t, 3, closedPort, "1ms").Run()
	time.Sleep(200 * time.Millisecond) // the last drop is traced
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	err := <-exited
	<-scanned
	if err != nil || sendErr != nil {
		return memSample{}, fmt.Errorf("%v: %v, send: %v\n%s", cmd.Args, err, sendErr, stderr.String())
	}
	if !skbstatStacks(out.String()) {
		return memSample{}, fmt.Errorf("%v: no stack printed:\n%s", cmd.Args, out.String())
	}
	s, err := parseRun(stderr.String())
	if err != nil {
		return s, err
	}
	s.wait4KiB = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	if m := gnuTimeRE.FindStringSubmatch(stderr.String()); m != nil {
		s.gnuKiB, _ = strconv.ParseInt(m[1], 10, 64) // \d+
	}
	return s, nil
}

// vmMemory boots kernel k once and runs memoryScript there.
func vmMemory(ctx context.Context, k vm.Kernel, dir string, runs int) (memKernel, error) {
	files := map[string]string{}
	for guest, pkg := range map[string]string{"/bin/skbstat": module, "/bin/traffic": module + "/test/traffic"} {
		bin, err := vm.BuildStatic(ctx, k, pkg, filepath.Join(dir, k.Name))
		if err != nil {
			return memKernel{}, err
		}
		files[guest] = bin
	}
	res, err := vm.Run(ctx, k, vm.Options{
		Files:   files,
		Script:  fmt.Sprintf("RUNS=%d\nARGS=%q\n%s", runs, memoryArgs, memoryScript),
		Timeout: 30 * time.Minute,
	})
	if err != nil || res.ExitStatus != 0 {
		return memKernel{}, fmt.Errorf("%s: exit %d, %v:\n%s", k.Name, res.ExitStatus, err, res.Console)
	}
	r := memKernel{name: k.Name, runs: map[string][]memSample{}}
	var stderr strings.Builder
	for _, line := range strings.Split(res.Console, "\n") {
		if rest, ok := strings.CutPrefix(line, "MEMERR "); ok {
			stderr.WriteString(rest + "\n")
			continue
		}
		m := memLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[2] != "0" || m[3] == "0" {
			return r, fmt.Errorf("%s, %s: exit status %s, %s stack frames printed:\n%s", k.Name, m[1], m[2], m[3], stderr.String())
		}
		s, err := parseRun(stderr.String())
		if err != nil {
			return r, fmt.Errorf("%s, %s: %w", k.Name, m[1], err)
		}
		r.runs[m[1]] = append(r.runs[m[1]], s)
		stderr.Reset()
	}
	for _, mode := range memoryModes {
		if n := len(r.runs[mode.name]); n != runs {
			return r, fmt.Errorf("%s, %s: %d of %d runs reported:\n%s", k.Name, mode.name, n, runs, res.Console)
		}
	}
	return r, nil
}

func printMemory(runs int, results []memKernel) {
	fmt.Printf("## Peak RSS per kernel\n\n`go run ./bench -memory -runs %d`, %s: skbstat `%s` (drop-only) and `%[3]s --input --output` (every function row), %[4]d runs each, alternating; in each run three datagrams to a closed port once it traces, so that a stack prints, then SIGINT. Peak RSS is skbstat's own line at exit (`skbstat: peak RSS`, VmHWM); on this machine also GNU time's `%%M` for the same run, and `wait4`'s for a run started directly by this benchmark (Go starts it with vfork). Medians (max).\n\n",
		runs, time.Now().UTC().Format("2006-01-02 15:04 UTC"), memoryArgs, runs)
	fmt.Println("| kernel | layout source | function rows | drop-only peak RSS | function rows peak RSS | GNU time, drop-only / rows | wait4 (vfork), drop-only / rows |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range results {
		drop, rows := r.runs["drop"], r.runs["rows"]
		peak := func(ss []memSample) string {
			xs := make([]float64, len(ss))
			for i, s := range ss {
				xs[i] = s.peakMiB
			}
			return fmt.Sprintf("%.1f MiB (%.1f)", quantile(xs, 0.5), quantile(xs, 1))
		}
		kib := func(ss []memSample, f func(memSample) int64) string {
			xs := make([]float64, len(ss))
			for i, s := range ss {
				xs[i] = float64(f(s)) / 1024
			}
			if quantile(xs, 1) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f MiB (%.1f)", quantile(xs, 0.5), quantile(xs, 1))
		}
		gnu := func(s memSample) int64 { return s.gnuKiB }
		wait4 := func(s memSample) int64 { return s.wait4KiB }
		fmt.Printf("| %s | %s | %s | %s | %s | %s / %s | %s / %s |\n", r.name, drop[0].layout, strings.Join(rows[0].rows, ", "),
			peak(drop), peak(rows), kib(drop, gnu), kib(rows, gnu), kib(drop, wait4), kib(rows, wait4))
	}
	fmt.Println()
}
