package progs

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/layout"
)

// TestChooseAllocation checks the allocation chosen by trying against the
// kernel: where it allocates on insert, the stack counters' maps are made
// so, and a tracepoint program of skbstat's loads with them.
func TestChooseAllocation(t *testing.T) {
	kernelLayout(t)
	a := chooseAllocation()
	t.Logf("%v", a)
	if !a.onDemand {
		t.Skipf("this kernel preallocates: %v", a)
	}
	maps, err := createStackMaps(Config{Drop: true, alloc: a})
	if err != nil {
		t.Fatal(err)
	}
	defer closeMaps(maps)
	for g := range uint32(numGenerations) {
		info, err := maps[stacksMap(g)].Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Flags&unix.BPF_F_NO_PREALLOC == 0 {
			t.Errorf("%s: flags %#x, want BPF_F_NO_PREALLOC", stacksMap(g), info.Flags)
		}
	}
}

// TestInsertFailure runs the stack counting code with the map insert's
// result replaced by each error the kernel can return: every event is
// counted, in the note of its cause, and none as a stack. The kernel's
// own -ENOMEM (no memory for an entry allocated on insert) cannot be made
// to happen on purpose; -E2BIG, a full map, TestOverflow makes for real.
func TestInsertFailure(t *testing.T) {
	kernelLayout(t)
	for _, c := range []struct {
		name     string
		onDemand bool
		err      unix.Errno
		want     Cause
	}{
		{"preallocated, full", false, unix.E2BIG, CountMapFull},
		{"preallocated, any error", false, unix.ENOMEM, CountMapFull},
		{"allocated on insert, full", true, unix.E2BIG, CountMapFull},
		{"allocated on insert, no memory", true, unix.ENOMEM, CountNoMemory},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Drop: true, Locations: true, alloc: Allocation{onDemand: c.onDemand}}
			maps, err := createStackMaps(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer closeMaps(maps)
			if maps[rowsMap], err = ebpf.NewMap(rowsSpec(0)); err != nil {
				t.Fatal(err)
			}
			// A hook with neither reason nor location: the key is made of
			// constants, so the code runs in a program of any type.
			h := tracepointHook{tp: layout.Tracepoint{Skb: layout.Field{Size: 8}}}
			insns := append(countStack(Drop, h, 0, cfg, false), epilogue()...)
			insns = failInserts(t, insns, c.err)
			prog := testRunnable(t, insns, maps)
			const n = 3
			for range n {
				if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
					t.Fatal(err)
				}
			}
			var per []uint64
			got := map[Cause]uint64{}
			for _, cause := range []Cause{CountMapFull, CountNoMemory} {
				if err := maps[rowsMap].Lookup(noteRow(0, Drop, cause), &per); err != nil {
					t.Fatal(err)
				}
				got[cause] = sumCPUs(per)
			}
			stacks, err := generationSum(newKernelGenerations(maps), 0)
			if err != nil {
				t.Fatal(err)
			}
			want := map[Cause]uint64{CountMapFull: 0, CountNoMemory: 0}
			want[c.want] = n
			if fmt.Sprint(got) != fmt.Sprint(want) || stacks != 0 {
				t.Errorf("notes %v and %d stacks, want %v and none", got, stacks, want)
			}
		})
	}
}

// failInserts replaces every map insert in insns with its failure, err.
func failInserts(t *testing.T, insns asm.Instructions, err unix.Errno) asm.Instructions {
	t.Helper()
	out := make(asm.Instructions, len(insns))
	copy(out, insns)
	replaced := 0
	for i, ins := range out {
		if ins.IsBuiltinCall() && ins.Constant == int64(asm.FnMapUpdateElem) {
			// Insert's arguments stay as they are: R1-R5 are clobbered
			// after a call anyway.
			out[i] = asm.Mov.Imm(asm.R0, -int32(err)).WithMetadata(ins.Metadata)
			replaced++
		}
	}
	if replaced != numGenerations {
		t.Fatalf("%d map inserts in the counting code, want one per generation:\n%v", replaced, insns)
	}
	return out
}

// testRunnable loads insns, which reference maps, as a program that
// BPF_PROG_TEST_RUN runs (XDP, which the tracepoint programs are not).
func testRunnable(t *testing.T, insns asm.Instructions, maps map[string]*ebpf.Map) *ebpf.Program {
	t.Helper()
	for name, m := range maps {
		if err := insns.AssociateMap(name, m); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
			t.Fatal(err)
		}
	}
	prog, err := loadProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "GPL"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestNoStacksNoStackMaps loads rows alone: no stack map is made, and no
// allocation is tried for them.
func TestNoStacksNoStackMaps(t *testing.T) {
	l := kernelLayout(t)
	s, err := Load(Config{Layout: l, Ingress: true, Attach: Auto})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.maps) != 1 || s.maps[rowsMap] == nil || s.Allocation != (Allocation{}) {
		t.Errorf("maps %v and allocation %+v, want the rows map alone and none", s.maps, s.Allocation)
	}
}
