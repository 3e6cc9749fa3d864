package main

// Where a tool's attach time goes, from the kernel's syscall tracepoints
// (tracefs, in the VM): when the process exec'd, and the start and duration
// of each of its bpf, perf_event_open and perf ioctl calls. This measures
// skbstat and bpftrace alike, without changing either.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const tracefs = "/sys/kernel/tracing"

// tracedEvents are the tracefs events the trace needs.
var tracedEvents = []string{
	"sched/sched_process_exec",
	"syscalls/sys_enter_bpf", "syscalls/sys_exit_bpf",
	"syscalls/sys_enter_perf_event_open", "syscalls/sys_exit_perf_event_open",
	"syscalls/sys_enter_ioctl", "syscalls/sys_exit_ioctl",
}

// perfIoctls are the perf event ioctls that attach a program:
// PERF_EVENT_IOC_SET_BPF and PERF_EVENT_IOC_ENABLE.
const perfIoctls = "cmd == 0x40042408 || cmd == 0x2400"

// bpfCommands names the bpf commands (enum bpf_cmd) by number.
var bpfCommands = []string{
	"BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM", "BPF_MAP_GET_NEXT_KEY",
	"BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH", "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN",
	"BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID", "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID",
	"BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY", "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID",
	"BPF_TASK_FD_QUERY", "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
	"BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH", "BPF_MAP_DELETE_BATCH",
	"BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS",
	"BPF_ITER_CREATE", "BPF_LINK_DETACH", "BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE",
}

// attachCalls are the calls that attach a loaded program.
var attachCalls = []string{"BPF_LINK_CREATE", "BPF_RAW_TRACEPOINT_OPEN", "perf_event_open", "ioctl"}

// startTrace clears the trace buffer and enables the events.
func startTrace() error {
	if err := os.WriteFile(filepath.Join(tracefs, "buffer_size_kb"), []byte("8192"), 0); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tracefs, "events/syscalls/sys_enter_ioctl/filter"), []byte(perfIoctls), 0); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tracefs, "trace"), nil, 0); err != nil {
		return err
	}
	for _, e := range tracedEvents {
		if err := os.WriteFile(filepath.Join(tracefs, "events", e, "enable"), []byte("1"), 0); err != nil {
			return fmt.Errorf("enable %s: %w", e, err)
		}
	}
	return nil
}

// stopTrace disables the events and returns the calls of the process
// named comm (all its threads) that exec'd last.
func stopTrace(comm string) (traced, error) {
	for _, e := range tracedEvents {
		if err := os.WriteFile(filepath.Join(tracefs, "events", e, "enable"), []byte("0"), 0); err != nil {
			return traced{}, err
		}
	}
	f, err := os.Open(filepath.Join(tracefs, "trace"))
	if err != nil {
		return traced{}, err
	}
	defer f.Close()
	return parseTrace(bufio.NewScanner(f), comm)
}

// traced is one process's run as the trace saw it.
type traced struct {
	exec  float64   // seconds (trace clock) at exec
	calls []sysCall // in the order they began
}

// sysCall is one traced call.
type sysCall struct {
	name       string  // bpf command, perf_event_open or ioctl
	start, end float64 // trace clock, seconds
	failed     bool
}

// traceLine is a line of the trace: "comm-tid [cpu] flags seconds: event..."
// (the flags column is absent on some kernels).
var traceLine = regexp.MustCompile(`^\s*(.+?)-(\d+)\s+\[\d+\]\s+(?:\S+\s+)?(\d+\.\d+): (\w+)(.*)$`)

func parseTrace(sc *bufio.Scanner, comm string) (traced, error) {
	var t traced
	open := map[string]int{} // by thread: the call without its exit yet
	for sc.Scan() {
		m := traceLine.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != comm {
			continue
		}
		tid, event, rest := m[2], m[4], m[5]
		at, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return t, err
		}
		switch {
		case event == "sched_process_exec":
			t = traced{exec: at}
			clear(open)
		case strings.HasPrefix(rest, "("):
			name, err := callName(strings.TrimPrefix(event, "sys_"), rest)
			if err != nil {
				return t, err
			}
			open[tid] = len(t.calls)
			t.calls = append(t.calls, sysCall{name: name, start: at})
		case strings.HasPrefix(rest, " -> "):
			i, ok := open[tid]
			if !ok {
				continue // an ioctl the filter left out
			}
			delete(open, tid)
			t.calls[i].end = at
			t.calls[i].failed = strings.HasPrefix(rest, " -> 0xffffffff")
		}
	}
	if t.exec == 0 {
		return t, fmt.Errorf("the trace has no exec of %s", comm)
	}
	return t, sc.Err()
}

var bpfCmd = regexp.MustCompile(`^\(cmd: ([0-9a-f]+)`)

// callName names a bpf call by its command.
func callName(syscall, args string) (string, error) {
	if syscall != "bpf" {
		return syscall, nil
	}
	m := bpfCmd.FindStringSubmatch(args)
	if m == nil {
		return "", fmt.Errorf("bpf call without a command: %s", args)
	}
	cmd, _ := strconv.ParseInt(m[1], 16, 32) // [0-9a-f]+
	if int(cmd) < len(bpfCommands) {
		return bpfCommands[cmd], nil
	}
	return fmt.Sprintf("bpf cmd %d", cmd), nil
}

// callStat is the calls of one kind in one run.
type callStat struct {
	Name   string  `json:"name"`
	Count  int     `json:"count"`
	Total  float64 `json:"total"`  // seconds inside the calls
	Median float64 `json:"median"` // seconds, one call
	Max    float64 `json:"max"`
}

// summary is where one run's attach time went.
type summary struct {
	FirstLoad float64    `json:"first_load"` // exec to the first BPF_PROG_LOAD
	Attached  float64    `json:"attached"`   // exec to the end of the last attach call
	Calls     []callStat `json:"calls"`
}

// summarize sums the calls by kind, in the order kinds first appear.
func (t traced) summarize() summary {
	var s summary
	by := map[string][]float64{}
	var names []string
	for _, c := range t.calls {
		if c.end == 0 {
			continue // still running at the end of the trace
		}
		if c.name == "BPF_PROG_LOAD" && s.FirstLoad == 0 {
			s.FirstLoad = c.start - t.exec
		}
		if slices.Contains(attachCalls, c.name) && !c.failed {
			s.Attached = max(s.Attached, c.end-t.exec)
		}
		if by[c.name] == nil {
			names = append(names, c.name)
		}
		by[c.name] = append(by[c.name], c.end-c.start)
	}
	for _, n := range names {
		st := callStat{Name: n, Count: len(by[n]), Median: quantile(by[n], 0.5), Max: slices.Max(by[n])}
		for _, d := range by[n] {
			st.Total += d
		}
		s.Calls = append(s.Calls, st)
	}
	return s
}
