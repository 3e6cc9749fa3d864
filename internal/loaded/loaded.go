// Package loaded lists the BPF programs loaded in the kernel: the tests' and
// benchmarks' way to see what a tool loaded, and that it left nothing behind.
package loaded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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

// HeldBy returns the IDs of the BPF programs and links that process pid
// holds file descriptors of, from /proc/PID/fdinfo: what one process
// loaded, told apart from everything else on the machine.
func HeldBy(pid int) (progs []ebpf.ProgramID, links []link.ID, err error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	seen := map[ebpf.ProgramID]bool{}
	for _, e := range entries {
		info, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(info), "\n") {
			key, value, ok := strings.Cut(line, ":\t")
			if !ok || key != "prog_id" && key != "link_id" {
				continue
			}
			id, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				return nil, nil, fmt.Errorf("%s/%s: %q", dir, e.Name(), line)
			}
			switch {
			case key == "link_id":
				links = append(links, link.ID(id))
			case !seen[ebpf.ProgramID(id)]: // a link's fdinfo names its program too
				seen[ebpf.ProgramID(id)] = true
				progs = append(progs, ebpf.ProgramID(id))
			}
		}
	}
	return progs, links, nil
}

// Gone reports whether none of progs and links is in the kernel any more.
func Gone(progs []ebpf.ProgramID, links []link.ID) bool {
	for _, id := range progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			return false
		}
	}
	for _, id := range links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			return false
		}
	}
	return true
}
