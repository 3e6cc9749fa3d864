package progs

// The part of loading that no layout decides, which can start while the
// layout is still being read.

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Kernel is what Load needs of the kernel that no layout decides: how its
// programs best update counters and allocate the stack counters, found by
// trying, and the maps of the stacks, whose creation is most of the time
// Load spends in the kernel before the programs.
type Kernel struct {
	ready    chan struct{} // closed when the rest is set
	counting Counting
	alloc    Allocation
	maps     map[string]*ebpf.Map // the stack maps (none without stacks), until Load takes them
	err      error
}

// StartKernel prepares the kernel for cfg in the background, while the
// caller reads the layout, which this does not use. Load (the method) takes
// what it prepared; Close releases it where nothing is loaded.
func StartKernel(cfg Config) *Kernel {
	k := &Kernel{ready: make(chan struct{})}
	go func() {
		defer close(k.ready)
		k.prepare(cfg)
	}()
	return k
}

func (k *Kernel) prepare(cfg Config) {
	k.maps = map[string]*ebpf.Map{}
	if k.counting, k.err = findCounting(); k.err != nil || !(cfg.Consume || cfg.Drop) {
		return
	}
	k.alloc = findAllocation()
	cfg.alloc = k.alloc
	k.maps, k.err = createStackMaps(cfg)
}

// take returns the stack maps, once prepared, which the caller then owns.
func (k *Kernel) take() (map[string]*ebpf.Map, error) {
	<-k.ready
	if k.err != nil {
		return nil, fmt.Errorf("prepare the kernel: %w", k.err)
	}
	maps := k.maps
	k.maps = nil
	return maps, nil
}

// Close releases what k prepared and Load did not take.
func (k *Kernel) Close() {
	<-k.ready
	closeMaps(k.maps)
	k.maps = nil
}
