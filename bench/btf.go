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
// process, step by step: the file read whole (the bytes alone), skbstat's
// layout.Kernel (which indexes the types' names and reads those it needs),
// and, for comparison, cilium/ebpf's btf.LoadKernelSpec with the decoding
// of struct sk_buff, the way skbstat read the BTF before it had an index of
// its own. Each is timed with the heap it grew by.
type btfCost struct {
	bytes                  int64
	read, layout, cilium   []float64 // seconds per run
	layoutHeap, ciliumHeap uint64    // bytes allocated, last run
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
		raw = nil

		runtime.GC()
		before := allocated()
		start = time.Now()
		l, err := layout.Kernel()
		if err != nil {
			return c, err
		}
		c.layout = append(c.layout, time.Since(start).Seconds())
		c.layoutHeap = allocated() - before
		l.ReleaseBTF()

		runtime.GC()
		before = allocated()
		start = time.Now()
		spec, err := btf.LoadKernelSpec()
		if err != nil {
			return c, err
		}
		var skb *btf.Struct
		if err := spec.TypeByName("sk_buff", &skb); err != nil {
			return c, err
		}
		c.cilium = append(c.cilium, time.Since(start).Seconds())
		c.ciliumHeap = allocated() - before
	}
	return c, nil
}

// allocated is the bytes the heap has allocated so far.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func printBTF(runs int, c btfCost) {
	fmt.Printf("## Kernel BTF at start (%d runs in the benchmark's process, medians)\n\n", runs)
	fmt.Printf("%s: %d bytes. Each run: read the file whole; layout.Kernel (skbstat: reads the strings, passes over the types once to index their names, then reads the types the layout needs); btf.LoadKernelSpec and the decoding of struct sk_buff (cilium/ebpf, as skbstat read BTF before), for comparison. Heap: bytes allocated by the step.\n\n", kernelBTFFile, c.bytes)
	fmt.Println("| step | median | p90 | heap allocated |")
	fmt.Println("|---|---|---|---|")
	for _, s := range []struct {
		name string
		xs   []float64
		heap string
	}{
		{"read the file (bytes only)", c.read, fmt.Sprintf("%.1f MiB", float64(c.bytes)/(1<<20))},
		{"layout.Kernel (index + layout)", c.layout, fmt.Sprintf("%.1f MiB", float64(c.layoutHeap)/(1<<20))},
		{"btf.LoadKernelSpec + sk_buff (cilium/ebpf)", c.cilium, fmt.Sprintf("%.1f MiB", float64(c.ciliumHeap)/(1<<20))},
	} {
		fmt.Printf("| %s | %.1f ms | %.1f ms | %s |\n", s.name, 1000*quantile(s.xs, 0.5), 1000*quantile(s.xs, 0.9), s.heap)
	}
	fmt.Println()
}
