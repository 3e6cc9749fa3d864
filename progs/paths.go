package progs

import (
	"github.com/cilium/ebpf/asm"
)

// instructionGraph is the control flow of a program: for each instruction,
// the instructions that can run next.
type instructionGraph [][]int

// newInstructionGraph follows jumps by label and, where the filter emits
// short hops without one, by offset.
func newInstructionGraph(insns asm.Instructions) instructionGraph {
	slots := make([]int, len(insns)+1) // raw instruction slot of each
	labels := map[string]int{}
	bySlot := map[int]int{}
	for i, ins := range insns {
		slots[i+1] = slots[i] + int(ins.Size()/asm.InstructionSize)
		bySlot[slots[i]] = i
		if sym := ins.Symbol(); sym != "" {
			labels[sym] = i
		}
	}
	g := make(instructionGraph, len(insns))
	for i, ins := range insns {
		op := ins.OpCode.JumpOp()
		if ins.OpCode.Class().IsJump() && op == asm.Exit {
			continue
		}
		if !ins.OpCode.Class().IsJump() || op == asm.Call {
			g[i] = []int{i + 1}
			continue
		}
		target, ok := labels[ins.Reference()]
		if !ok {
			target = bySlot[slots[i+1]+int(ins.Offset)]
		}
		g[i] = []int{target}
		if op != asm.Ja {
			g[i] = append(g[i], i+1)
		}
	}
	return g
}

// distances is the number of instructions run from instruction from up to
// each instruction, that one included; -1 where it is unreachable.
func (g instructionGraph) distances(from int) []int {
	dist := make([]int, len(g))
	for i := range dist {
		dist[i] = -1
	}
	dist[from] = 1
	// Every edge runs one more instruction: breadth first finds the
	// shortest paths.
	for queue := []int{from}; len(queue) > 0; queue = queue[1:] {
		i := queue[0]
		for _, next := range g[i] {
			if dist[next] < 0 {
				dist[next] = dist[i] + 1
				queue = append(queue, next)
			}
		}
	}
	return dist
}

// shortestRunThrough is how many instructions the shortest run of the
// program takes that passes instruction via, from the first instruction to
// an exit; -1 where there is none.
func (g instructionGraph) shortestRunThrough(via int) int {
	to := g.distances(0)[via]
	if to < 0 {
		return -1
	}
	best := -1
	for i, d := range g.distances(via) {
		if d > 0 && len(g[i]) == 0 && (best < 0 || d < best) {
			best = d
		}
	}
	if best < 0 {
		return -1
	}
	return to + best - 1 // via counted once
}
