package loaded

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestPrograms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading a BPF program needs root")
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "loaded_test", Type: ebpf.SocketFilter, License: "GPL",
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
	names, err := Programs()
	if err != nil {
		t.Fatal(err)
	}
	if names[id] != "loaded_test" {
		t.Errorf("program %d listed as %q, want loaded_test", id, names[id])
	}
	prog.Close()
}
