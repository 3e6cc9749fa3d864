package progs

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// counterUpdate is how the programs add one to a per-CPU counter.
type counterUpdate int

const (
	// atomicAdd (BPF_ATOMIC add) stays exact where a program starts on a
	// CPU while another one is in the middle of the same update: an
	// interrupt's softirq can run a raw tracepoint or fentry program inside
	// any program.
	atomicAdd counterUpdate = iota
	// plainAdd (load, add, store) is exact only where no program can start
	// on the CPU while another runs: skbstat then attaches only hooks that
	// never nest (see hook.nests).
	plainAdd
)

func (u counterUpdate) String() string {
	if u == plainAdd {
		return "plain add"
	}
	return "atomic add"
}

// increment adds one to the counter R0 points to, this CPU's own.
func increment(u counterUpdate) asm.Instructions {
	if u == plainAdd {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		}
	}
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
	}
}

// Counting says how the counters are updated on this kernel, and why.
type Counting struct {
	update counterUpdate
	Why    string
	Took   time.Duration // to find out
}

func (c Counting) String() string {
	return fmt.Sprintf("%v (%s; found in %v)", c.update, c.Why, c.Took.Round(time.Microsecond))
}

// findCounting is how Load finds how to update counters: a variable, so
// that tests can choose.
var findCounting = chooseCounting

// chooseCounting finds how this kernel runs an atomic add, by loading a
// tiny program with one: compiled by the JIT, or interpreted like every
// program where the JIT is off, it is exact and chosen. Where the JIT
// compiles programs but not that one (32-bit ARM's JIT has no atomics),
// it would run in the interpreter, many times slower, or fail to load
// (ENOTSUPP): the plain add is chosen then.
func chooseCounting() (Counting, error) {
	start := time.Now()
	c := Counting{update: atomicAdd}
	atomicJIT, err := trialJIT(atomicAdd)
	switch {
	case errors.Is(err, errENOTSUPP):
		// The kernel would not interpret what its JIT could not compile
		// (Debian's 6.1 armhf kernel, with bpf_jit_enable 1).
		c.update, c.Why = plainAdd, fmt.Sprintf("a program with an atomic add does not load: %v", err)
	case err != nil:
		return c, fmt.Errorf("counter updates: try an atomic add: %w", err)
	case atomicJIT:
		c.Why = "the JIT compiles it"
	default:
		plainJIT, err := trialJIT(plainAdd)
		switch {
		case err != nil:
			return c, fmt.Errorf("counter updates: try a plain add: %w", err)
		case plainJIT:
			c.update, c.Why = plainAdd, "the JIT cannot compile an atomic add, which would run in the interpreter"
		default:
			c.Why = "the kernel compiles no program (its JIT is off or absent): every program runs in the interpreter, which has atomic adds"
		}
	}
	c.Took = time.Since(start)
	return c, nil
}

// trialJIT loads a program that makes update u on its stack and says
// whether the kernel compiled it.
func trialJIT(u counterUpdate) (jited bool, err error) {
	insns := asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R10),
		asm.Add.Imm(asm.R0, -8),
	}
	insns = append(insns, increment(u)...)
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	// A raw tracepoint program, like skbstat's, takes CAP_BPF and
	// CAP_PERFMON to load: with them the kernel shows its JIT size.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "skbstat_jit", Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err != nil {
		return false, err
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("program info: %w", err)
	}
	// A size of 0 (ErrNotSupported) is what an interpreted program has.
	_, err = info.JitedSize()
	return err == nil, nil
}
