package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/skbstat/skbstat/layout"
)

// btfCost is what reading the kernel's BTF for the layout costs, in this
// process, step by step: the file read whole (the bytes alone), cilium/ebpf's
// LoadKernelSpec (which maps the file and indexes every type's offset and
// name), and layout.FromBTF (which decodes the types the layout needs,
// with every type they reach).
type btfCost struct {
	bytes               int64
	read, index, layout []float64 // seconds per run
}

func measureBTF(runs int) (btfCost, error) {
	var c btfCost
	for range runs {
		runtime.GC() // each run starts from the same heap
		start := time.Now()
		raw, err := os.ReadFile(kernelBTFFile)
		if err != nil {
			return c, err
		}
		c.read = append(c.read, time.Since(start).Seconds())
		c.bytes = int64(len(raw))
		start = time.Now()
		spec, err := btf.LoadKernelSpec()
		if err != nil {
			return c, err
		}
		c.index = append(c.index, time.Since(start).Seconds())
		start = time.Now()
		if _, err := layout.FromBTF(spec); err != nil {
			return c, err
		}
		c.layout = append(c.layout, time.Since(start).Seconds())
	}
	return c, nil
}

func printBTF(runs int, c btfCost) {
	fmt.Printf("## Kernel BTF at start (%d runs in the benchmark's process, medians)\n\n", runs)
	fmt.Printf("%s: %d bytes. Each run: read the file whole; btf.LoadKernelSpec (cilium/ebpf: maps the file, indexes every type's offset and name); layout.FromBTF (decodes the types skbstat's layout needs, and every type they reach).\n\n", kernelBTFFile, c.bytes)
	fmt.Println("| step | median | p90 |")
	fmt.Println("|---|---|---|")
	for _, s := range []struct {
		name string
		xs   []float64
	}{{"read the file (bytes only)", c.read}, {"btf.LoadKernelSpec (map + index)", c.index}, {"layout.FromBTF (decode)", c.layout}} {
		fmt.Printf("| %s | %.1f ms | %.1f ms |\n", s.name, 1000*quantile(s.xs, 0.5), 1000*quantile(s.xs, 0.9))
	}
	fmt.Println()
}
