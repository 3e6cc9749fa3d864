package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/skbstat/skbstat/internal/loaded"
)

// progsCommand prints the name of every BPF program loaded in the kernel,
// one a line: the tests' check, where bpftool is not at hand (in the test
// VMs), that nothing was left behind.
func progsCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("progs")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	progs, err := loaded.Programs()
	if err != nil {
		return err
	}
	var names []string
	for _, name := range progs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintln(stdout, name)
	}
	return nil
}
