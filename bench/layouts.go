package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// kernelBTFFile is the running kernel's BTF, which --layout btf parses.
const kernelBTFFile = "/sys/kernel/btf/vmlinux"

// variant is a named set of skbstat arguments.
type variant struct {
	name string
	args []string
}

// layoutCycleKinds are the full cycles measured with every layout source.
var layoutCycleKinds = []variant{
	{"DROP (default)", []string{"-i", "0.001", "-c", "1"}},
	{"--input --output --consume", skbstatCycle},
}

// layoutResult holds the samples of every cycle kind and layout source,
// and the sizes of the two BTF files.
type layoutResult struct {
	sources                   []variant
	samples                   [][][]sample // by cycle kind, then source
	kernelBytes, trimmedBytes int64
}

// layoutCycles measures the full cycles with the layout from the kernel's
// BTF, from a trimmed BTF file made of it with --write-btf, and calibrated
// at start, all interleaved. -v makes skbstat say how long calibration took.
func layoutCycles(ctx context.Context, t tools, dir string, runs int) (layoutResult, error) {
	trimmed := filepath.Join(dir, "trimmed.btf")
	if out, err := exec.CommandContext(ctx, t.skbstat, "--write-btf", trimmed).CombinedOutput(); err != nil {
		return layoutResult{}, fmt.Errorf("skbstat --write-btf: %v: %s", err, out)
	}
	r := layoutResult{sources: []variant{
		{"kernel BTF (--layout btf)", []string{"--layout", "btf"}},
		{"trimmed BTF (--btf FILE)", []string{"--btf", trimmed}},
		{"calibrated (--layout calibrate)", []string{"--layout", "calibrate"}},
	}}
	var err error
	if r.kernelBytes, err = fileSize(kernelBTFFile); err != nil {
		return r, err
	}
	if r.trimmedBytes, err = fileSize(trimmed); err != nil {
		return r, err
	}
	var jobs []func() error
	r.samples = make([][][]sample, len(layoutCycleKinds))
	for k, kind := range layoutCycleKinds {
		r.samples[k] = make([][]sample, len(r.sources))
		for i, src := range r.sources {
			args := append(append([]string{"-v"}, src.args...), kind.args...)
			jobs = append(jobs, func() error {
				s, err := t.cycle(ctx, t.skbstat, args, skbstatStacks)
				r.samples[k][i] = append(r.samples[k][i], s)
				return err
			})
		}
	}
	return r, interleave(runs, jobs...)
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func printLayouts(runs int, r layoutResult) {
	fmt.Printf("## Layout sources (%d runs per cycle and source, interleaved)\n\n", runs)
	fmt.Printf("skbstat -v SOURCE CYCLE, where CYCLE is %s.\n", strings.Join(spelledOut(layoutCycleKinds), ", or "))
	fmt.Printf("Kernel BTF: %d bytes; the trimmed BTF file (skbstat --write-btf): %d bytes.\n", r.kernelBytes, r.trimmedBytes)
	fmt.Println("ratio: wall median over the kernel BTF's, in the same cycle; attached: until -v said it was tracing.")
	fmt.Println()
	fmt.Println("| cycle | layout source | wall median | wall p90 | ratio | attached median | peak RSS median | peak RSS max | calibration median |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for k, kind := range layoutCycleKinds {
		base := median(r.samples[k][0])
		for i, src := range r.sources {
			ss := r.samples[k][i]
			var wall, attached, rss, calibrated []float64
			for _, s := range ss {
				wall = append(wall, s.wall.Seconds())
				attached = append(attached, s.attached.Seconds())
				rss = append(rss, float64(s.rssKiB)/1024)
				if s.calibrated > 0 {
					calibrated = append(calibrated, s.calibrated.Seconds())
				}
			}
			calibration := "-"
			if len(calibrated) > 0 {
				calibration = fmt.Sprintf("%.1f ms (%d/%d runs)", 1000*quantile(calibrated, 0.5), len(calibrated), len(ss))
			}
			fmt.Printf("| %s | %s | %.3f s | %.3f s | %.2f | %.3f s | %.1f MiB | %.1f MiB | %s |\n",
				kind.name, src.name, quantile(wall, 0.5), quantile(wall, 0.9), quantile(wall, 0.5)/base,
				quantile(attached, 0.5), quantile(rss, 0.5), quantile(rss, 1), calibration)
		}
	}
	fmt.Println()
}

// spelledOut gives each variant's arguments after its name.
func spelledOut(vs []variant) []string {
	var s []string
	for _, v := range vs {
		s = append(s, fmt.Sprintf("`%s` for %s", strings.Join(v.args, " "), v.name))
	}
	return s
}
