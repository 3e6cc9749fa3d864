package loaded

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// loadTestProgram loads an empty program called name and returns it with
// its ID.
func loadTestProgram(t *testing.T, name string) (*ebpf.Program, ebpf.ProgramID) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading a BPF program needs root")
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return prog, id
}

func TestPrograms(t *testing.T) {
	prog, id := loadTestProgram(t, "loaded_test")
	names, err := Programs()
	if err != nil {
		t.Fatal(err)
	}
	if names[id] != "loaded_test" {
		t.Errorf("program %d listed as %q, want loaded_test", id, names[id])
	}
	prog.Close()
}

// TestHeldBy loads a program in this process: HeldBy finds it among the
// process's descriptors, and Gone says so once it is closed.
func TestHeldBy(t *testing.T) {
	prog, id := loadTestProgram(t, "loaded_held")
	progs, links, err := HeldBy(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(progs, id) || len(links) != 0 {
		t.Errorf("HeldBy: programs %v, links %v; want %d among the programs and no link", progs, links, id)
	}
	if Gone(progs, links) {
		t.Error("Gone while the program is loaded")
	}
	prog.Close()
	for deadline := time.Now().Add(5 * time.Second); !Gone([]ebpf.ProgramID{id}, nil); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("program %d still loaded after Close", id)
		}
	}
}
