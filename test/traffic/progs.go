package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cilium/ebpf"
)

// progsCommand prints the name of every BPF program loaded in the kernel,
// one a line: the tests' check, where bpftool is not at hand (in the test
// VMs), that nothing was left behind.
func progsCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("progs")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list programs: %w", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded meanwhile
		}
		if err != nil {
			return fmt.Errorf("program %d: %w", id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			return fmt.Errorf("program %d: %w", id, err)
		}
		fmt.Fprintln(stdout, info.Name)
	}
}
