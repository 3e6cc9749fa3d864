package progs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/tracefs"
)

// TestRecursionMisses makes the kernel skip a program because it is
// running on the CPU already, a known number of times, and reads the
// count through a Set as a note of a section: a raw tracepoint program at
// bpf_trace_printk that calls bpf_trace_printk runs once (under
// BPF_PROG_TEST_RUN, which has no recursion guard) and again at the
// tracepoint, where its second call is the one the kernel skips.
func TestRecursionMisses(t *testing.T) {
	l := kernelLayout(t)
	if !kernelAtLeast(t, 6, 1) {
		// Before, the inner run would call bpf_trace_printk again, and so
		// on: the tracepoint's programs had no recursion guard.
		t.Skip("raw tracepoints have a recursion guard only since Linux 6.1")
	}
	f, err := filter.Parse(filter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(Config{Layout: l, Filter: f, Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	prog := printkRecursion(t)
	lk, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "bpf_trace_printk", Program: prog})
	if err != nil {
		t.Fatalf("attach at bpf_trace_printk: %v", err)
	}
	defer lk.Close()
	// FUNC has no probe in this Set: its note is this program's alone.
	missed, err := missCounters(Func, prog, lk)
	if err != nil {
		t.Fatal(err)
	}
	s.missed = append(s.missed, missed...)
	const runs = 3
	for range runs {
		if _, err := prog.Run(&ebpf.RunOptions{Context: make([]byte, 8)}); errors.Is(err, ebpf.ErrNotSupported) {
			t.Skipf("no BPF_PROG_TEST_RUN for raw tracepoints: %v", err)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Noted(Func, AlreadyRunning); n != runs {
		t.Errorf("FUNC: %d runs skipped, want %d (notes %+v)", n, runs, c.Notes)
	}
	if c, err := s.Read(); err != nil || c.Noted(Func, AlreadyRunning) != 0 {
		t.Errorf("second read: %+v, %v; want no skipped runs", c.Notes, err)
	}
}

// printkRecursion loads a raw tracepoint program that, in this process
// only, calls bpf_trace_printk. Loading it enables the bpf_trace_printk
// trace event; where that was off, it is turned off again at the end.
func printkRecursion(t *testing.T) *ebpf.Program {
	t.Helper()
	dir, err := tracefs.Mount()
	if err != nil {
		t.Fatal(err)
	}
	enable := filepath.Join(dir, "events/bpf_trace/bpf_trace_printk/enable")
	before, err := os.ReadFile(enable)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("no bpf_trace_printk trace event: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	insns := asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.JNE.Imm(asm.R0, int32(os.Getpid()), "exit"),
		// The format "x": byte stores, whatever the byte order.
		asm.StoreImm(asm.R10, -8, 'x', asm.Byte),
		asm.StoreImm(asm.R10, -7, 0, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, 2),
		asm.FnTracePrintk.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "skbstat_recurse", Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		prog.Close()
		if strings.TrimSpace(string(before)) == "0" {
			if err := os.WriteFile(enable, []byte("0"), 0); err != nil {
				t.Errorf("turn the bpf_trace_printk event off again: %v", err)
			}
		}
	})
	return prog
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var maj, min int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &min); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return maj > major || maj == major && min >= minor
}

// TestMissNotes reads counters of skipped runs that tests set: each note
// is the growth since the last read, summed per section, after the map's
// notes of the section; a link's counter, frozen before its link closes,
// keeps its last count.
func TestMissNotes(t *testing.T) {
	counts := map[string]uint64{}
	counter := func(sec Section, name string) *missCounter {
		return &missCounter{section: sec, read: func() (uint64, error) { return counts[name], nil }}
	}
	s := &Set{missed: []*missCounter{counter(Ingress, "rx"), counter(Ingress, "ip_rcv link"), counter(Drop, "drop")}}
	read := func() string {
		t.Helper()
		notes, err := s.missNotes()
		if err != nil {
			t.Fatal(err)
		}
		notes = append(notes, Note{Drop, CountMapFull, 1})
		sortNotes(notes)
		return fmt.Sprint(notes)
	}
	counts["rx"], counts["ip_rcv link"], counts["drop"] = 2, 3, 0
	if got, want := read(), fmt.Sprint([]Note{{Ingress, AlreadyRunning, 5}, {Drop, CountMapFull, 1}}); got != want {
		t.Errorf("first read: %s, want %s", got, want)
	}
	counts["rx"], counts["drop"] = 4, 7
	s.missed[1].freeze()
	counts["ip_rcv link"] = 100 // its link is closed: no longer read
	if got, want := read(), fmt.Sprint([]Note{{Ingress, AlreadyRunning, 2}, {Drop, CountMapFull, 1}, {Drop, AlreadyRunning, 7}}); got != want {
		t.Errorf("second read: %s, want %s", got, want)
	}
	if AlreadyRunning.String() != "not counted: program already running on this CPU" {
		t.Errorf("the note reads %q", AlreadyRunning)
	}
}
