package progs

// The maps of a Set: their names, keys and sizes, and how they are
// created on this kernel.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Map names, as referenced by the generated instructions. The stacks and
// their counters are in two generations of maps: the programs count in the
// one that generationMap names, while user space reads and clears the other
// (see drain), so that stacks which stopped occurring never block new ones.
const (
	rowsMap       = "rows"       // per-CPU counter per row, then the sections' notes
	generationMap = "generation" // which generation the programs count in: 0 or 1
)

// numGenerations is how many generations of stack maps there are.
const numGenerations = 2

// stacksMap is generation g's per-CPU counter per (section, stack, reason,
// location).
func stacksMap(g uint32) string { return fmt.Sprintf("stacks%d", g) }

// tracesMap is generation g's kernel stacks by id.
func tracesMap(g uint32) string { return fmt.Sprintf("traces%d", g) }

// Map sizes per generation: counters per (section, stack, reason), and
// distinct stacks; a generation holds one interval's. They are the most a
// run asks for: where the kernel refuses that much memory, each is halved
// until it accepts (see newMap). Variables, so that tests can make them
// overflow.
var (
	countEntries uint32 = 16384
	stackEntries uint32 = 8192
)

// minEntries is the fewest entries a halved map may keep.
const minEntries = 64

// stackKey is a key of a stacksMap, as countStack writes it at slotKey.
type stackKey struct {
	Section uint32
	StackID int32 // negative: the kernel could not record the stack (-errno)
	Reason  uint32
	_       uint32
	// Location is the tracepoint's location argument, zero-extended on a
	// 32-bit kernel; 0 where the tracepoint has none. It names the place
	// of the event where the kernel's stack does not.
	Location uint64
}

// stackKeySize is the size of a stackKey in the map and on the BPF stack.
var stackKeySize = uint32(binary.Size(stackKey{}))

// rowsSpec is the map of the row counters of a Set with rows rows, and
// of its sections' notes.
func rowsSpec(rows uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: rowsMap, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8,
		MaxEntries: rows + uint32(numSections)*uint32(numNoted),
	}
}

// stackSpecs are the maps of the stacks, where withStacks (DROP or
// CONSUME), whose stacks record depth frames (none: 0), and whose counters
// are allocated as a says.
func stackSpecs(withStacks bool, depth uint32, a Allocation) []*ebpf.MapSpec {
	if !withStacks {
		return nil
	}
	specs := []*ebpf.MapSpec{{Name: generationMap, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}}
	for g := range uint32(numGenerations) {
		specs = append(specs, &ebpf.MapSpec{Name: stacksMap(g), Type: ebpf.PerCPUHash, KeySize: stackKeySize, ValueSize: 8, MaxEntries: countEntries, Flags: a.flags()})
		if depth > 0 {
			specs = append(specs, &ebpf.MapSpec{Name: tracesMap(g), Type: ebpf.StackTrace, KeySize: 4, ValueSize: 8 * depth, MaxEntries: stackEntries})
		}
	}
	return specs
}

// createStackMaps creates the stack maps cfg asks for (none: an empty set).
func createStackMaps(cfg Config) (map[string]*ebpf.Map, error) {
	maps := map[string]*ebpf.Map{}
	depth := cfg.stackDepth()
	if cfg.Locations {
		depth = 0
	}
	for _, spec := range stackSpecs(cfg.Consume || cfg.Drop, depth, cfg.alloc) {
		m, err := newMap(spec)
		if err != nil {
			closeMaps(maps)
			return nil, fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		maps[spec.Name] = m
	}
	return maps, nil
}

// closeMaps closes every map of maps.
func closeMaps(maps map[string]*ebpf.Map) {
	for _, m := range maps {
		m.Close()
	}
}

// newMap creates spec's map. A map of stacks or their counters is made
// smaller where it would take more than its share of memory, or where the
// kernel refuses the memory: halved, down to minEntries.
func newMap(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	if !resizable(spec) {
		return ebpf.NewMap(spec)
	}
	spec = spec.Copy()
	spec.MaxEntries = entriesWithin(spec, ebpf.MustPossibleCPU(), mapBudget())
	for {
		m, err := ebpf.NewMap(spec)
		if err == nil || spec.MaxEntries/2 < minEntries || !(errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.E2BIG)) {
			return m, err
		}
		spec.MaxEntries /= 2
	}
}

// resizable: the map's size is a choice (the stacks and their counters),
// not a count of what the programs index.
func resizable(spec *ebpf.MapSpec) bool {
	return spec.Type == ebpf.PerCPUHash || spec.Type == ebpf.StackTrace
}

// mapBudget is the most kernel memory one resizable map may take: 1/128 of
// the machine's memory (1 MB of a router's 128 MB), so that the four take
// at most 3 % of it. Where the kernel does not say, the kernel's refusal
// alone bounds them.
func mapBudget() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Unit == 0 {
		return math.MaxUint64
	}
	return uint64(si.Totalram) * uint64(si.Unit) / 128
}

// entriesWithin is spec's MaxEntries, halved until its map takes no more
// than budget bytes on a machine of cpus possible CPUs, or minEntries.
func entriesWithin(spec *ebpf.MapSpec, cpus int, budget uint64) uint32 {
	fit := *spec
	for fit.MaxEntries/2 >= minEntries && mapBytes(&fit, cpus) > budget {
		fit.MaxEntries /= 2
	}
	return fit.MaxEntries
}

// mapBytes estimates the kernel memory of spec's map on a machine of cpus
// possible CPUs: its keys and values (per CPU in a per-CPU map), and the
// kernel's bookkeeping of each entry.
func mapBytes(spec *ebpf.MapSpec, cpus int) uint64 {
	value := uint64(spec.ValueSize)
	if spec.Type == ebpf.PerCPUHash {
		value *= uint64(cpus)
	}
	return uint64(spec.MaxEntries) * (uint64(spec.KeySize) + value + entryOverhead)
}

// entryOverhead is about what a hash or stack map spends per entry besides
// key and value (element header, bucket, pointers): 48 to 80 bytes on 6.18.
const entryOverhead = 64

// Allocation is how the stack counters' maps get memory for their entries
// on this kernel, and why.
type Allocation struct {
	// onDemand: an entry's memory is allocated when the program inserts
	// it (BPF_F_NO_PREALLOC), so that creating the maps costs
	// microseconds, not the 5-25 ms of preallocating every entry. An
	// insert can then fail for want of memory, counted in its own note.
	onDemand bool
	Why      string
	Took     time.Duration // to find out
}

func (a Allocation) String() string {
	return fmt.Sprintf("%s (%s; found in %v)", a.how(), a.Why, a.Took.Round(time.Microsecond))
}

func (a Allocation) how() string {
	if a.onDemand {
		return "allocated on insert"
	}
	return "preallocated"
}

func (a Allocation) flags() uint32 {
	if a.onDemand {
		return unix.BPF_F_NO_PREALLOC
	}
	return 0
}

// findAllocation is how Load finds how to allocate the stack counters: a
// variable, so that tests can choose.
var findAllocation = chooseAllocation

// chooseAllocation allocates on insert where the kernel lets every kind of
// tracing program do so safely (Linux 6.1 on, whose hash maps allocate
// from bpf_mem_alloc). It tries that with a perf-event program, which
// older kernels refuse outright: a tracepoint program would load there
// too, but with a kernel warning (WARN_ONCE, fatal with panic_on_warn), or
// be refused on PREEMPT_RT. Only a program that loads is conclusive; any
// other outcome preallocates, which every kernel takes.
func chooseAllocation() Allocation {
	start := time.Now()
	a := Allocation{Why: "this kernel allows it only in some tracing programs, or warns: before Linux 6.1"}
	switch err := trialAllocateOnInsert(); {
	case err == nil:
		a.onDemand, a.Why = true, "the kernel allows it in every tracing program"
	case !errors.Is(err, unix.EINVAL):
		a.Why = fmt.Sprintf("whether the kernel allows allocation on insert cannot be told: %v", err)
	}
	a.Took = time.Since(start)
	return a
}

// trialAllocateOnInsert loads a perf-event program that looks up a key of
// a per-CPU hash map that allocates on insert.
func trialAllocateOnInsert() error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "skbstat_alloc", Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 1, Flags: unix.BPF_F_NO_PREALLOC})
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	defer m.Close()
	insns := asm.Instructions{
		asm.StoreImm(asm.R10, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "skbstat_alloc", Type: ebpf.PerfEvent, Instructions: insns, License: "GPL"})
	if err != nil {
		return err
	}
	return prog.Close()
}
