package main

// -calibration: calibration in the kernel matrix's VMs, one skbstat at a
// time on an idle guest.

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skbstat/skbstat/test/vm"
)

// calibrationKernels are the VMs of -calibration: the three without BTF,
// and one with, where the kernel BTF cycle runs beside the calibrated one.
var calibrationKernels = []string{"6.1-armhf", "6.1-mipsel", "6.1-s390x", "6.12-amd64"}

// calibrationScript runs skbstat's default cycle $RUNS times per layout
// source, and prints its -v lines and its peak RSS (VmHWM while tracing).
const calibrationScript = `
for i in $(seq $RUNS); do
	for layout in $LAYOUTS; do
		: >/tmp/err # emptied before the wait below reads it, not by the child
		skbstat -v --layout $layout -i 0.5 -c 1 >/dev/null 2>/tmp/err &
		pid=$!
		until grep -q "skbstat: tracing" /tmp/err; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
		hwm=$(grep VmHWM /proc/$pid/status | tr -s ' ' | cut -d' ' -f2)
		wait $pid
		echo "CAL layout=$layout hwm=$hwm $(grep -o 'calibrated in [^ ]*' /tmp/err) $(grep -o 'search [^,]*, proof [^)]*' /tmp/err) $(grep -o '[^ ]* after start' /tmp/err)"
	done
done
`

var calLineRE = regexp.MustCompile(`^CAL layout=(\w+) hwm=(\d+)\s+(?:calibrated in (\S+)\s+)?(?:search (\S+), proof (\S+)\s+)?(\S+) after start`)

// calSample is one run of calibrationScript.
type calSample struct {
	hwmKiB                         float64
	total, search, proof, attached time.Duration
}

func runCalibration(ctx context.Context, src string, runs int) error {
	if src != "" {
		if err := os.Chdir(src); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "skbstat-bench-cal")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("## Calibration in the VMs\n\n`go run ./bench -calibration -runs %d`, %s: each kernel under qemu (software emulation, one vCPU), one skbstat at a time (`-v --layout SOURCE -i 0.5 -c 1`, DROP); medians of %d runs. Calibration is the whole of it: the private namespace, the search and the proof. Start is until skbstat says it is tracing. Peak RSS is VmHWM while tracing.\n\n",
		runs, time.Now().UTC().Format("2006-01-02 15:04 UTC"), runs)
	fmt.Println("| kernel | layout | calibration | of which search | of which proof | start | peak RSS |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, name := range calibrationKernels {
		i := slices.IndexFunc(vm.Matrix, func(k vm.Kernel) bool { return k.Name == name })
		if i < 0 {
			return fmt.Errorf("kernel %s is not in test/vm's matrix", name)
		}
		k := vm.Matrix[i]
		if !chosen(k) {
			continue
		}
		bin, err := vm.BuildStatic(ctx, k, module, dir)
		if err != nil {
			return err
		}
		layouts := "calibrate"
		if k.BTF {
			layouts = "btf calibrate"
		}
		res, err := vm.Run(ctx, k, vm.Options{
			Files:   map[string]string{"/bin/skbstat": bin},
			Modules: []string{"veth", "dummy"},
			Script:  fmt.Sprintf("RUNS=%d\nLAYOUTS=%q\n%s", runs, layouts, calibrationScript),
			Timeout: 30 * time.Minute,
		})
		if err != nil || res.ExitStatus != 0 {
			return fmt.Errorf("%s: exit %d, %v:\n%s", name, res.ExitStatus, err, res.Console)
		}
		bySource := map[string][]calSample{}
		for _, line := range strings.Split(res.Console, "\n") {
			m := calLineRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			hwm, _ := strconv.ParseFloat(m[2], 64)
			d := func(s string) time.Duration { v, _ := time.ParseDuration(s); return v }
			bySource[m[1]] = append(bySource[m[1]], calSample{hwmKiB: hwm, total: d(m[3]), search: d(m[4]), proof: d(m[5]), attached: d(m[6])})
		}
		for _, layout := range strings.Fields(layouts) {
			ss := bySource[layout]
			if len(ss) != runs {
				return fmt.Errorf("%s --layout %s: %d of %d runs reported:\n%s", name, layout, len(ss), runs, res.Console)
			}
			med := func(f func(calSample) float64) float64 {
				xs := make([]float64, len(ss))
				for i, s := range ss {
					xs[i] = f(s)
				}
				return quantile(xs, 0.5)
			}
			ms := func(f func(calSample) time.Duration) string {
				v := med(func(s calSample) float64 { return f(s).Seconds() * 1000 })
				if v == 0 {
					return "-"
				}
				return fmt.Sprintf("%.0f ms", v)
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %s | %.1f MiB |\n", name, layout,
				ms(func(s calSample) time.Duration { return s.total }), ms(func(s calSample) time.Duration { return s.search }),
				ms(func(s calSample) time.Duration { return s.proof }), ms(func(s calSample) time.Duration { return s.attached }),
				med(func(s calSample) float64 { return s.hwmKiB })/1024)
		}
	}
	fmt.Println()
	return nil
}
