// Package loaded lists the BPF programs loaded in the kernel: the tests' and
// benchmarks' way to see what a tool loaded, and that it left nothing behind.
package loaded

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// Programs returns the name of every loaded BPF program, by ID.
func Programs() (map[ebpf.ProgramID]string, error) {
	names := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		names[id] = info.Name
	}
}
