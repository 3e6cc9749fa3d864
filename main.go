// Command skbstat shows where in the kernel packets go, and where and why
// they are dropped: every interval it prints, for the packets that match a
// filter, how often each kernel receive and send routine saw them, and the
// kernel stacks (and drop reasons) at which they were consumed or dropped.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/lab"
	_ "github.com/skbstat/skbstat/internal/nothp"
	"github.com/skbstat/skbstat/kallsyms"
	"github.com/skbstat/skbstat/layout"
	"github.com/skbstat/skbstat/metrics"
	"github.com/skbstat/skbstat/progs"
)

const examples = `examples:
    skbstat                               # count drops per kernel stack and reason (default)
    skbstat --no_drop --input             # count packets entering the stack, and no drops
    skbstat --input                       # also count packets entering the stack, per function and tracepoint
    skbstat --output                      # also count packets leaving, per function and tracepoint
    skbstat --consume                     # also count packets freed normally, per kernel stack
    skbstat -s 10.0.0.1                   # only packets coming from 10.0.0.1
    skbstat -N 10.0.0.1                   # only packets coming from or going to 10.0.0.1
    skbstat -N 1000::1                    # only packets coming from or going to 1000::1
    skbstat -p tcp                        # only TCP packets
    skbstat -p tcp -D 80                  # only TCP packets to port 80, whichever way they go
    skbstat -p tcp -P 80                  # only TCP packets from or to port 80
    skbstat -I eth0 -c 5 -i 1             # packets on eth0, five 1-second intervals
    skbstat --netns /run/netns/blue       # only packets in network namespace blue
    skbstat --netns pid:4242 -I eth0      # packets on eth0 of process 4242's network namespace`

// Exit statuses.
const (
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(args)
	if err == nil {
		return 0
	}
	var usage usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(stderr, "skbstat: %s\n", usage.msg)
		return exitUsage
	}
	fmt.Fprintf(stderr, "skbstat: %v\n", err)
	return exitRuntime
}

// newApp is skbstat's command line: its options, help and man page.
func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:            "skbstat",
		Usage:           "where in the kernel packets go, and where and why they are dropped",
		UsageText:       "skbstat [options]",
		Description:     examples,
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		Flags:           flags(),
		Action:          action,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err.Error()}
		},
	}
}

// usageError is bad input: exit status 2, nothing loaded.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "interval", Aliases: []string{"i"}, Value: "3", Usage: "print every `SECONDS` (fractions allowed)"},
		&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Usage: "stop after `N` intervals (0: run until interrupted)"},
		&cli.StringFlag{Name: "saddr", Aliases: []string{"s"}, Usage: "source ip/ipv6 address/network"},
		&cli.StringFlag{Name: "daddr", Aliases: []string{"d"}, Usage: "destination ip/ipv6 address/network"},
		&cli.StringFlag{Name: "addr", Aliases: []string{"N"}, Usage: "source or destination ip/ipv6 address/network"},
		&cli.StringFlag{Name: "sport", Aliases: []string{"S"}, Usage: "source tcp/udp/sctp port or range LO-HI"},
		&cli.StringFlag{Name: "dport", Aliases: []string{"D"}, Usage: "destination tcp/udp/sctp port or range LO-HI"},
		&cli.StringFlag{Name: "port", Aliases: []string{"P"}, Usage: "source or destination tcp/udp/sctp port or range LO-HI"},
		&cli.StringFlag{Name: "proto", Aliases: []string{"p"}, Usage: "protocol (tcp, udp, icmp, icmp6, sctp, udplite, gre, esp, ah, or 0-255)"},
		&cli.StringFlag{Name: "interface", Aliases: []string{"I"}, Usage: "only packets on network device `NAME` of skbstat's network namespace (or --netns's)"},
		&cli.StringFlag{Name: "netns", Usage: "only packets in network namespace `PATH|pid:N|inode:N` (the one a file such as /run/netns/NAME opens, process N's, or that of inode number N): their device's, else their socket's"},
		&cli.BoolFlag{Name: "input", Usage: "INGRESS: count packets entering the stack, per kernel function and tracepoint"},
		&cli.BoolFlag{Name: "output", Usage: "EGRESS: count packets leaving, per kernel function and tracepoint"},
		&cli.BoolFlag{Name: "consume", Usage: "CONSUME: count packets freed normally, per kernel stack"},
		&cli.BoolFlag{Name: "no_drop", Aliases: []string{"no-drop"}, Usage: "no DROP section: do not count drops per kernel stack and reason"},
		&cli.StringSliceFlag{Name: "func", Aliases: []string{"f"}, Usage: "also count kernel function `NAME[:N]` (one with a struct sk_buff * argument, N its position from 0: needed without BTF), in a FUNC section; repeatable"},
		&cli.StringFlag{Name: "attach", Value: string(progs.Auto), Usage: "how kernel functions attach: auto, fentry, kprobe-multi or kprobe"},
		&cli.BoolFlag{Name: "locations", Usage: "count DROP and CONSUME by location (the dropping or freeing function) and drop reason, one line each, without walking the kernel stack: far cheaper per event in a drop storm"},
		&cli.IntFlag{Name: "stack-depth", Value: progs.MaxStackDepth, Usage: "record at most `N` frames of each DROP and CONSUME stack (1-127, from the innermost, the two or three of the tracing machinery's included): the kernel stops its walk there, which is most of a drop's cost (a 21-frame drop on x86-64 Linux 6.18: 4.0 µs with all frames, 3.1 µs with 16, 2.6 µs with 8; --locations 0.24 µs)"},
		&cli.BoolFlag{Name: "json", Usage: "print each interval as one line of JSON (the README gives the schema) instead of text"},
		&cli.BoolFlag{Name: "folded", Usage: "print DROP and CONSUME stacks as folded stacks, one line \"reason;outermost;...;innermost count\" per stack and interval, for flame graphs (flamegraph.pl, speedscope)"},
		&cli.StringFlag{Name: "listen", Usage: "serve Prometheus metrics at http://`ADDR`/metrics while tracing (127.0.0.1:9432, [::1]:9432, :9432)"},
		&cli.StringFlag{Name: "textfile", Usage: "write Prometheus metrics to `FILE` every interval, atomically, for node_exporter's textfile collector (FILE ending in .prom)"},
		&cli.IntFlag{Name: "max-series", Value: 200, Usage: "at most `N` drop series (reason x location) and N consume series in the metrics; later locations are summed as location=\"other\""},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print no intervals on stdout (with --listen or --textfile)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "say how each probe was attached (and why any was not), how the counters are updated and allocated, how long the start took, and at exit the peak RSS"},
		&cli.BoolFlag{Name: "dump-bpf", Usage: "print the generated BPF instructions of every program and exit"},
		&cli.StringFlag{Name: "btf", Usage: "kernel BTF `FILE`, for kernels without /sys/kernel/btf/vmlinux"},
		&cli.StringFlag{Name: "write-btf", Usage: "write to `FILE` the few KB of the kernel's BTF (or --btf's) that skbstat reads, with the -f functions' prototypes, for --btf on a small machine, and exit"},
		&cli.StringFlag{Name: "layout", Value: "auto", Usage: "where the kernel's layout comes from: btf (kernel BTF or --btf), calibrate (learnt from the running kernel at start) or auto (BTF where there is some, else calibrate)"},
	}
}

// options is the checked command line.
type options struct {
	interval time.Duration
	count    int
	cfg      progs.Config
	verbose  bool
	format   format
	// The exporter's: a listener for --listen (nil: none), --textfile's
	// path, the bound on series, and whether intervals print at all.
	listen    net.Listener
	textfile  string
	maxSeries int
	quiet     bool
	dumpBPF   bool
	btf       string
	layout    string // btf, calibrate or auto
	writeBTF  string
	netns     namespace // that -I and --netns mean
}

func parseOptions(c *cli.Context) (options, error) {
	o := options{count: c.Int("count"), verbose: c.Bool("verbose"), dumpBPF: c.Bool("dump-bpf"), btf: c.String("btf"), layout: c.String("layout"), writeBTF: c.String("write-btf")}
	if c.NArg() > 0 {
		return o, usageError{fmt.Sprintf("unexpected argument %q", c.Args().First())}
	}
	iv := c.String("interval")
	secs, err := strconv.ParseFloat(iv, 64)
	if err != nil || !(secs > 0) || secs > 86400*365 {
		return o, usageError{fmt.Sprintf("-i %s: not a positive number of seconds", iv)}
	}
	o.interval = time.Duration(secs * float64(time.Second))
	if o.interval <= 0 {
		return o, usageError{fmt.Sprintf("-i %s: shorter than a nanosecond", iv)}
	}
	if o.count < 0 {
		return o, usageError{fmt.Sprintf("-c %d: not a count of intervals", o.count)}
	}
	f, err := filter.Parse(filter.Options{
		Saddr: c.String("saddr"), Daddr: c.String("daddr"), Addr: c.String("addr"),
		Sport: c.String("sport"), Dport: c.String("dport"), Port: c.String("port"),
		Proto: c.String("proto"),
	})
	if err != nil {
		return o, usageError{err.Error()}
	}
	if o.netns, err = parseNetns(c.String("netns")); err != nil {
		return o, err
	}
	if o.netns.spec != "" {
		f.Netns = o.netns.inode
	}
	if name := c.String("interface"); name != "" {
		if f.Ifindex, err = ifindex(name, o.netns); err != nil {
			return o, err
		}
		f.Ifname, f.Netns = name, o.netns.inode
	}
	switch o.layout {
	case "btf", "auto":
	case "calibrate":
		if o.btf != "" {
			return o, usageError{fmt.Sprintf("--layout calibrate: --btf %s gives the layout already", o.btf)}
		}
	default:
		return o, usageError{fmt.Sprintf("--layout %s: not btf, calibrate or auto", o.layout)}
	}
	attach, err := progs.ParseMechanism(c.String("attach"))
	if err != nil {
		return o, usageError{fmt.Sprintf("--attach %s: %v", c.String("attach"), err)}
	}
	o.cfg = progs.Config{
		Filter:  f,
		Ingress: c.Bool("input"),
		Egress:  c.Bool("output"),
		Consume: c.Bool("consume"),
		Drop:    !c.Bool("no_drop"),
		Funcs:   c.StringSlice("func"),
		Attach:  attach,
	}
	if err := o.placing(c); err != nil {
		return o, err
	}
	if !o.cfg.Ingress && !o.cfg.Egress && !o.cfg.Consume && !o.cfg.Drop && len(o.cfg.Funcs) == 0 {
		return o, usageError{"--no_drop: nothing left to trace (add --input, --output or --consume)"}
	}
	if o.format, err = outputFormat(c, o.cfg); err != nil {
		return o, err
	}
	if err := o.exporter(c); err != nil {
		return o, err
	}
	return o, nil
}

// exporter checks the exporter's options, and opens --listen's address
// last, once nothing else can be refused.
func (o *options) exporter(c *cli.Context) error {
	o.textfile, o.maxSeries, o.quiet = c.String("textfile"), c.Int("max-series"), c.Bool("quiet")
	if o.maxSeries < 1 {
		return usageError{fmt.Sprintf("--max-series %d: not a positive number", o.maxSeries)}
	}
	if o.quiet && c.String("listen") == "" && o.textfile == "" {
		return usageError{"--quiet: nothing would be output (add --listen or --textfile)"}
	}
	if o.textfile != "" {
		if err := checkTextfile(o.textfile); err != nil {
			return err
		}
	}
	if addr := c.String("listen"); addr != "" {
		var err error
		if o.listen, err = listen(addr); err != nil {
			return err
		}
	}
	return nil
}

// placing checks how DROP and CONSUME place their events: --locations or
// --stack-depth.
func (o *options) placing(c *cli.Context) error {
	o.cfg.Locations, o.cfg.StackDepth = c.Bool("locations"), c.Int("stack-depth")
	switch {
	case o.cfg.StackDepth < 1 || o.cfg.StackDepth > progs.MaxStackDepth:
		return usageError{fmt.Sprintf("--stack-depth %d: not a number of frames from 1 to %d", o.cfg.StackDepth, progs.MaxStackDepth)}
	case o.cfg.Locations && c.IsSet("stack-depth"):
		return usageError{fmt.Sprintf("--stack-depth %d: not with --locations, which records no stack", o.cfg.StackDepth)}
	case o.cfg.Locations && !o.cfg.Drop && !o.cfg.Consume:
		return usageError{"--locations: no DROP or CONSUME section to count by location (add --consume)"}
	}
	return nil
}

// outputFormat is the format --json or --folded asks for; --folded prints
// stacks only, so it takes no row section.
func outputFormat(c *cli.Context, cfg progs.Config) (format, error) {
	switch {
	case c.Bool("json") && c.Bool("folded"):
		return textFormat, usageError{"--folded: not with --json: one format at a time"}
	case c.Bool("folded") && (cfg.Ingress || cfg.Egress || len(cfg.Funcs) > 0):
		return textFormat, usageError{"--folded: prints DROP and CONSUME stacks only: not with --input, --output or -f"}
	case c.Bool("folded") && !cfg.Drop && !cfg.Consume:
		return textFormat, usageError{"--folded: no stacks to print with --no_drop (add --consume)"}
	case c.Bool("folded"):
		return foldedFormat, nil
	case c.Bool("json"):
		return jsonFormat, nil
	}
	return textFormat, nil
}

// chooseLayout returns the layout from BTF (the kernel's, or --btf's), or,
// where it is to be calibrated, layout.Symbolic's stand-in, which serves
// until calibration (and for --dump-bpf, which creates nothing in the
// kernel, so does not calibrate).
func chooseLayout(o options) (*layout.Layout, error) {
	switch {
	case o.btf != "":
		l, err := layout.FromFile(o.btf)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--btf %s: %v", o.btf, err)}
		}
		return l, nil
	case o.layout == "calibrate":
		return layout.Symbolic(), nil
	}
	l, err := layout.Kernel()
	if errors.Is(err, layout.ErrNoKernelBTF) && o.layout == "auto" {
		return layout.Symbolic(), nil
	}
	return l, err
}

// calibrate learns the running kernel's layout and proves it, in a private
// network namespace of its own (else on the host's loopback, said in one
// line). Whatever could not be calibrated is said in one line each. The
// caller closes the lab, which waits for calibration's programs to be
// detached.
func calibrate(warn io.Writer, verbose bool) (_ *layout.Layout, _ *lab.Lab, err error) {
	start := time.Now()
	lb, err := lab.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("calibration: %w (pass --btf FILE with this kernel's BTF instead)", err)
	}
	defer func() {
		if err != nil {
			lb.Close()
		}
	}()
	if !lb.Private {
		fmt.Fprintf(warn, "skbstat: calibrating on the host's loopback (port %d): %v\n", lb.ClosedPort, lb.Fallback)
	}
	l, err := layout.Calibrate(lb)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range l.Calibration.Missing {
		fmt.Fprintf(warn, "skbstat: not calibrated: %s\n", m)
	}
	// Calibration's records and the proof's programs are garbage at once:
	// collected now, their memory serves what follows, on machines where
	// memory is short, rather than adding to the peak.
	runtime.GC()
	proofStart := time.Now()
	if err := progs.Prove(l, lb); err != nil {
		return nil, nil, err
	}
	proof := time.Since(proofStart)
	runtime.GC()
	if verbose {
		where := "in a private network namespace"
		if !lb.Private {
			where = "on the host's loopback"
		}
		round := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		fmt.Fprintf(warn, "skbstat: layout: calibrated in %v %s (search %v, proof %v): %s\n",
			round(time.Since(start)), where, round(l.Calibration.Took), round(proof), l.Describe())
	}
	return l, lb, nil
}

func action(c *cli.Context) error {
	start := time.Now()
	o, err := parseOptions(c)
	if err != nil {
		return err
	}
	if o.verbose {
		defer reportPeak(c.App.ErrWriter) // registered first: runs last
	}
	memlockErr := raiseMemlock()
	load := progs.Load
	if o.layoutCannotRefuse() {
		// What loading needs of the kernel that no layout decides (trials,
		// the stack maps) is prepared while the layout is read.
		kernel := progs.StartKernel(o.cfg)
		defer kernel.Close()
		load = kernel.Load
	}
	if o.cfg.Layout, err = chooseLayout(o); err != nil {
		return err
	}
	if err := o.netnsFits(o.cfg.Layout); err != nil {
		return err
	}
	for _, fn := range o.cfg.Funcs {
		if err := progs.CheckFunc(o.cfg.Layout, fn); err != nil {
			return usageError{fmt.Sprintf("-f %s: %v", fn, err)}
		}
	}
	if o.writeBTF != "" {
		return writeTrimmedBTF(o.writeBTF, o.cfg.Layout, o.cfg.Funcs)
	}
	if o.dumpBPF {
		return progs.Dump(c.App.Writer, o.cfg)
	}
	var lb *lab.Lab
	if o.cfg.Layout.IsSymbolic() {
		if o.cfg.Layout, lb, err = calibrate(c.App.ErrWriter, o.verbose); err != nil {
			return err
		}
		defer lb.Close()
		if o.cfg.Filter.Ifindex != 0 && o.cfg.Layout.NetDevice.Ifindex.Size == 0 {
			return fmt.Errorf("-I %s: net_device's ifindex could not be calibrated (see above): pass --btf FILE with this kernel's BTF", o.cfg.Filter.Ifname)
		}
		if err := o.netnsCalibrated(o.cfg.Layout); err != nil {
			return err
		}
	} else if o.verbose {
		fmt.Fprintf(c.App.ErrWriter, "skbstat: layout: %s\n", o.cfg.Layout.Source)
	}
	// Signals are caught before anything is attached, so that none can
	// leave a program behind.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)

	set, err := load(o.cfg)
	if errors.Is(err, os.ErrPermission) && memlockErr != nil {
		return fmt.Errorf("%w (run skbstat as root, or with CAP_BPF and CAP_PERFMON, and before Linux 5.11 CAP_SYS_RESOURCE: the locked-memory limit could not be raised: %v)", err, memlockErr)
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (run skbstat as root, or with CAP_BPF and CAP_PERFMON)", err)
	}
	if err != nil {
		return err
	}
	defer set.Close()
	if lb != nil {
		lb.Close() // nothing of calibration's is left once tracing starts
	}
	report(c.App.ErrWriter, set, o.verbose, time.Since(start))

	t := &tally{set: set, r: newRenderer(o.cfg, c.App.ErrWriter, o.format)}
	// The layout's BTF has served the loading and the drop reasons' names:
	// dropped and collected now, its memory serves what names the kernel's
	// addresses for stacks and locations, made in the background before the
	// first interval prints: the kernel's own naming, or, where it has none
	// for BPF programs, the table of /proc/kallsyms, which would otherwise
	// add to the peak.
	o.cfg.Layout.ReleaseBTF()
	if o.cfg.Drop || o.cfg.Consume {
		go func() {
			runtime.GC()
			kallsyms.Running()
		}()
		if o.verbose {
			defer reportNaming(c.App.ErrWriter)
		}
	}
	if o.listen != nil || o.textfile != "" {
		t.metrics = newMetrics(o, set)
	}
	if o.listen != nil {
		defer metrics.Serve(o.listen, t.writeMetrics, c.App.ErrWriter).Close()
	}
	out := c.App.Writer
	if o.quiet {
		out = nil
	}
	interval := func() error {
		if err := t.interval(out); err != nil {
			return err
		}
		if o.textfile != "" {
			return writeTextfile(o.textfile, t.metrics)
		}
		return nil
	}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	// The last interval, at Ctrl-C, SIGTERM or the end of -c, is read once
	// everything is detached: nothing counted after it is left unprinted.
	last := func() error {
		if err := set.Detach(); err != nil {
			return err
		}
		return interval()
	}
	for n := 1; ; n++ {
		select {
		case <-tick.C:
		case <-sig:
			return last()
		}
		if n == o.count {
			return last()
		}
		if err := interval(); err != nil {
			return err
		}
	}
}

// layoutCannotRefuse: nothing the layout says can turn o down as bad input
// (no -f, --netns or --btf to check against it, no --dump-bpf or
// --write-btf, which load nothing): then loading may begin before the
// layout is read, and bad input still creates nothing in the kernel.
func (o options) layoutCannotRefuse() bool {
	return len(o.cfg.Funcs) == 0 && o.netns.spec == "" && o.btf == "" && !o.dumpBPF && o.writeBTF == ""
}

// raiseMemlock lifts the locked-memory limit, which kernels before 5.11
// charge BPF maps and programs against (later ones charge the memory
// cgroup). cilium/ebpf's rlimit package would find out which by creating a
// map as the process starts, even for --dump-bpf and bad input, which must
// create nothing. Where the limit cannot be raised (no CAP_SYS_RESOURCE)
// and a kernel needs it, loading fails with EPERM, and the error says so.
func raiseMemlock() error {
	return unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY})
}

// writeTrimmedBTF writes the trimmed BTF of l, with the prototypes of the
// function rows' functions and of the -f values funcs, to path. A file it
// could not finish is removed: half a BTF file would fail only on the
// machine it is for.
func writeTrimmedBTF(path string, l *layout.Layout, funcs []string) (err error) {
	if !l.HasFuncBTF() {
		return usageError{fmt.Sprintf("--write-btf %s: a trimmed file can only be made from BTF: the kernel's (where it has some, with --layout btf or auto) or --btf FILE's", path)}
	}
	names := progs.FixedFuncs()
	for _, fn := range funcs {
		name, _, _ := strings.Cut(fn, ":") // NAME[:N], checked by progs.CheckFunc
		names = append(names, name)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--write-btf: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("--write-btf: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := layout.WriteTrimmedBTF(f, l, names); err != nil {
		return fmt.Errorf("--write-btf %s: %w", path, err)
	}
	return nil
}

// report says what could not be attached, one line per cause, and with -v
// how each probe was, and how long it took to start.
func report(w io.Writer, set *progs.Set, verbose bool, started time.Duration) {
	if verbose {
		fmt.Fprintf(w, "skbstat: counter updates: %v\n", set.Counting)
		if set.Allocation.Why != "" { // there are stacks to count
			fmt.Fprintf(w, "skbstat: stack counters: %v\n", set.Allocation)
		}
		for _, a := range set.Attached {
			fmt.Fprintf(w, "skbstat: %s: %s attached as %s\n", a.Section, a.Probe, a.Mechanism)
		}
	}
	var causes []string
	probes := map[string][]string{}
	for _, a := range set.Skipped {
		cause := a.Err.Error()
		if probes[cause] == nil {
			causes = append(causes, cause)
		}
		probes[cause] = append(probes[cause], a.Probe)
	}
	for _, cause := range causes {
		fmt.Fprintf(w, "skbstat: not attached: %s: %s\n", strings.Join(probes[cause], ", "), cause)
	}
	if verbose {
		fmt.Fprintf(w, "skbstat: tracing %d probes, %v after start; Ctrl-C to end\n", len(set.Attached), started.Round(100*time.Microsecond))
	}
}

// reportNaming says what named the kernel's addresses in stacks and
// locations, and why not the kernel itself where it did not. Where nothing
// could, the first interval with a stack said so.
func reportNaming(w io.Writer) {
	if _, err := kallsyms.Running(); err != nil {
		return
	}
	if err := kallsyms.NotByKernel(); err != nil {
		fmt.Fprintf(w, "skbstat: stack frames: named from %s (%v)\n", kallsyms.Path, err)
		return
	}
	fmt.Fprintf(w, "skbstat: stack frames: named by the kernel (bpf_snprintf's %s, in a syscall program)\n", "%pS")
}

// reportPeak says skbstat's peak RSS, VmHWM of its own memory: wait4's
// figure can be its parent's, since a child started with vfork takes the
// peak of the memory it shared with the parent when it execs.
func reportPeak(w io.Writer) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintf(w, "skbstat: peak RSS unknown: %v\n", err)
		return
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err == nil {
				fmt.Fprintf(w, "skbstat: peak RSS %.1f MiB\n", float64(kib)/1024)
				return
			}
		}
	}
	fmt.Fprintln(w, "skbstat: peak RSS unknown: no VmHWM in /proc/self/status")
}
