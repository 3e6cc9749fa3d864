package progs

import (
	"testing"

	"github.com/cilium/ebpf/asm"
)

// TestShortestRunThrough counts the instructions of known runs: a jump by
// label, a hop by offset over a two-slot instruction, and a loop back.
func TestShortestRunThrough(t *testing.T) {
	insns := asm.Instructions{
		/* 0 */ asm.Mov.Imm(asm.R0, 0),
		/* 1 */ asm.JEq.Imm(asm.R1, 0, "exit"),
		/* 2 */ {OpCode: asm.JEq.Op(asm.ImmSource), Dst: asm.R1, Constant: 1, Offset: 2}, // over 3's two slots, to 4
		/* 3 */ asm.LoadImm(asm.R2, 1<<40, asm.DWord),
		/* 4 */ asm.JEq.Imm(asm.R1, 2, "exit"),
		/* 5 */ asm.Ja.Label("back"),
		/* 6 */ asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		/* 7 */ asm.Return(),
		/* 8 */ asm.Ja.Label("exit").WithSymbol("back"),
	}
	g := newInstructionGraph(insns)
	for _, c := range []struct{ via, want int }{
		{1, 4}, // 0 1 6 7
		{3, 7}, // 0 1 2 3 4 6 7
		{4, 6}, // 0 1 2 4 6 7: the hop skips 3
		{8, 8}, // 0 1 2 4 5 8 6 7
	} {
		if got := g.shortestRunThrough(c.via); got != c.want {
			t.Errorf("shortest run through %d: %d instructions, want %d", c.via, got, c.want)
		}
	}
}
