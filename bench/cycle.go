package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// skbstatCycle loads, attaches, waits one 1 ms interval, prints and
// detaches: the five tracepoints with stacks on consume and drop.
var skbstatCycle = []string{"--input", "--output", "--consume", "-i", "0.001", "-c", "1"}

// bpftraceCycle does the same job in bpftrace. The interval probe's exit()
// reaches bpftrace through its event loop, which it enters only after every
// probe is attached; it then prints its maps and detaches. 1 ms mirrors
// skbstat's interval.
const bpftraceCycle = `
tracepoint:net:netif_receive_skb, tracepoint:net:net_dev_queue, tracepoint:net:net_dev_xmit { @rows[probe] = count(); }
tracepoint:skb:consume_skb, tracepoint:skb:kfree_skb { @stacks[kstack] = count(); }
interval:ms:1 { exit(); }`

// cycleJob is one job done by both tools, in one full cycle each.
type cycleJob struct {
	name     string
	skbstat  []string
	bpftrace string
}

// cycleJobs are the full cycles measured: every tracepoint, and skbstat's
// default, DROP alone (drop stacks with their reasons).
var cycleJobs = []cycleJob{
	{"--input --output --consume", skbstatCycle, bpftraceCycle},
	{"DROP (default)", []string{"-i", "0.001", "-c", "1"}, `
tracepoint:skb:kfree_skb { @drops[kstack, args->reason] = count(); }
interval:ms:1 { exit(); }`},
}

// sample is one full cycle of one tool.
type sample struct {
	wall     time.Duration
	attached time.Duration // until skbstat -v said it was tracing; 0 without -v
	rssKiB   int64         // peak resident set size (see cycle)
	stacks   bool          // the output had at least one kernel stack
	// calibrated is how long calibration took, as skbstat -v said; 0
	// where it did not calibrate.
	calibrated time.Duration
}

// cycleResult is the samples of each job of cycleJobs, per tool.
type cycleResult struct{ skbstat, bpftrace [][]sample }

// cycles runs each tool's full cycle of each job runs times, interleaved
// and with rotating order (ABCD BCDA ...) so that the machine's noise falls
// on all alike. With ns, paced traffic flows between the namespaces
// meanwhile, so that stacks are printed (and /proc/kallsyms read).
func cycles(ctx context.Context, t tools, runs int, ns *pair) (cycleResult, error) {
	if ns != nil {
		bg := ns.sendCmd(ctx, t, 1<<30, closedPort, "200us")
		if err := bg.Start(); err != nil {
			return cycleResult{}, fmt.Errorf("background traffic: %w", err)
		}
		defer bg.Wait()
		defer bg.Process.Kill()
		time.Sleep(100 * time.Millisecond)
	}
	r := cycleResult{skbstat: make([][]sample, len(cycleJobs)), bpftrace: make([][]sample, len(cycleJobs))}
	var jobs []func() error
	for i, job := range cycleJobs {
		jobs = append(jobs, func() error {
			s, err := t.cycle(ctx, t.skbstat, job.skbstat, skbstatStacks)
			r.skbstat[i] = append(r.skbstat[i], s)
			return err
		}, func() error {
			s, err := t.cycle(ctx, "bpftrace", []string{"-e", job.bpftrace}, bpftraceStacks)
			r.bpftrace[i] = append(r.bpftrace[i], s)
			return err
		})
	}
	return r, interleave(runs, jobs...)
}

// interleave runs each job runs times, interleaved, in an order that
// rotates from run to run (AB BA AB ..., ABC BCA CAB ...), so that the
// machine's noise, and whatever running first or after another costs, fall
// on every job alike.
func interleave(runs int, jobs ...func() error) error {
	for i := range runs {
		for j := range jobs {
			if err := jobs[(i+j)%len(jobs)](); err != nil {
				return err
			}
		}
	}
	return nil
}

// cycle runs bin's full cycle once. Its peak RSS is the one GNU time
// reports where t has it, else wait4's, which can be too high: Go starts a
// child with vfork, and the kernel, when the child execs, records the RSS of
// the memory it shared (this benchmark's, about 13 MiB) as the child's peak
// so far. GNU time fork()s, so the peak it reports is the child's own.
func (t tools) cycle(ctx context.Context, bin string, args []string, hasStacks func(string) bool) (sample, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if t.gnuTime != "" {
		cmd = exec.CommandContext(ctx, t.gnuTime, append([]string{"-f", gnuTimeFormat, bin}, args...)...)
	}
	var out bytes.Buffer
	start := time.Now()
	errOut := &marked{mark: "skbstat: tracing"}
	cmd.Stdout, cmd.Stderr = &out, errOut
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, errOut.String())
	}
	s := sample{wall: wall, rssKiB: cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, stacks: hasStacks(out.String())}
	if t.gnuTime != "" {
		m := gnuTimeRE.FindStringSubmatch(errOut.String())
		if m == nil {
			return s, fmt.Errorf("%s %s: no peak RSS from %s:\n%s", bin, strings.Join(args, " "), t.gnuTime, errOut.String())
		}
		s.rssKiB, _ = strconv.ParseInt(m[1], 10, 64) // \d+
	}
	if !errOut.at.IsZero() {
		s.attached = errOut.at.Sub(start)
	}
	if m := calibratedRE.FindStringSubmatch(errOut.String()); m != nil {
		if s.calibrated, err = time.ParseDuration(m[1]); err != nil {
			return s, fmt.Errorf("%s: %q: %w", bin, m[0], err)
		}
	}
	return s, nil
}

// gnuTimeFormat has GNU time print the child's peak RSS in KiB, on a line
// of its own that gnuTimeRE finds after the child's stderr.
const gnuTimeFormat = "\nbench: peak RSS %M KiB"

var gnuTimeRE = regexp.MustCompile(`\nbench: peak RSS (\d+) KiB`)

// calibratedRE finds the time in skbstat -v's line on calibration.
var calibratedRE = regexp.MustCompile(`skbstat: layout: calibrated in (\S+) `)

// marked is a buffer that notes when mark was first written to it. The
// buffer is not embedded: its ReadFrom would let io.Copy bypass Write.
type marked struct {
	buf  bytes.Buffer
	mark string
	at   time.Time
}

func (m *marked) Write(p []byte) (int, error) {
	n, err := m.buf.Write(p)
	if m.at.IsZero() && strings.Contains(m.buf.String(), m.mark) {
		m.at = time.Now()
	}
	return n, err
}

func (m *marked) String() string { return m.buf.String() }

// skbstatStacks: stack frames are indented 16 spaces.
func skbstatStacks(out string) bool {
	return strings.Contains(out, "\n                ")
}

// bpftraceStacks: a map keyed by a kernel stack prints its frames as
// indented lines after the key's opening bracket, whatever the map's name.
func bpftraceStacks(out string) bool {
	return bpftraceStackRE.MatchString(out)
}

var bpftraceStackRE = regexp.MustCompile(`@\w+\[\n\s+\S+\+\d+`)

func printCycles(runs int, idle, busy cycleResult) {
	fmt.Printf("## Full cycle (%d runs per tool, job and variant, interleaved)\n\n", runs)
	for _, job := range cycleJobs {
		fmt.Printf("%s: skbstat %s; bpftrace -e '%s'\n\n", job.name, strings.Join(job.skbstat, " "),
			strings.ReplaceAll(strings.TrimSpace(job.bpftrace), "\n", " "))
	}
	fmt.Println("| job | variant | tool | wall median | wall p90 | peak RSS median | peak RSS max | runs with stacks printed |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for i, job := range cycleJobs {
		for _, v := range []struct {
			name string
			r    cycleResult
		}{{"idle", idle}, {"traffic (~5k pkt/s)", busy}} {
			row := func(tool string, ss []sample) {
				var wall, rss []float64
				stacks := 0
				for _, s := range ss {
					wall = append(wall, s.wall.Seconds())
					rss = append(rss, float64(s.rssKiB)/1024)
					if s.stacks {
						stacks++
					}
				}
				fmt.Printf("| %s | %s | %s | %.3f s | %.3f s | %.1f MiB | %.1f MiB | %d/%d |\n", job.name, v.name, tool,
					quantile(wall, 0.5), quantile(wall, 0.9), quantile(rss, 0.5), quantile(rss, 1), stacks, len(ss))
			}
			row("skbstat", v.r.skbstat[i])
			row("bpftrace", v.r.bpftrace[i])
			fmt.Printf("| %s | %s | skbstat/bpftrace | 1/%.1f | | | | |\n", job.name, v.name, median(v.r.bpftrace[i])/median(v.r.skbstat[i]))
		}
	}
	fmt.Println()
}

func median(ss []sample) float64 {
	var wall []float64
	for _, s := range ss {
		wall = append(wall, s.wall.Seconds())
	}
	return quantile(wall, 0.5)
}
