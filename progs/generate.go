package progs

// Generating: the instructions of each probe's program, in small
// functions that each emit one part.

import (
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/filter"
)

// generated is a probe's program, and where in it the filter's code lies.
type generated struct {
	insns                  asm.Instructions
	filterStart, filterEnd int // insns[filterStart:filterEnd]
}

// program generates the instructions of probe p at hook h.
func program(p *probe, h hook, cfg Config, rows uint32) (generated, error) {
	src, err := source(p, h, cfg)
	if err != nil {
		return generated{}, err
	}
	insns := prologue(p.name, h)
	g := generated{filterStart: len(insns)}
	insns = append(insns, cfg.Filter.Instructions(src, cfg.Layout.ByteOrder, "exit")...)
	g.filterEnd = len(insns)
	count := countRow(h.storeRowKey(p.row), "exit", cfg.update)
	if p.stacks() {
		count = countStack(p.section, h, rows, cfg, !cfg.Locations)
	}
	count[0] = count[0].WithSource(asm.Comment("count"))
	insns = append(insns, count...)
	insns = append(insns, epilogue()...)
	g.insns = append(insns, countUndecided(insns, p.section, rows, cfg.update)...)
	return g, nil
}

// rejectedRun is how many instructions a packet runs that every condition
// of the filter but its last lets through, and that one rejects: the
// shortest run through the filter's last jump to the reject label. ok is
// false where the filter rejects nothing.
func (g generated) rejectedRun() (n int, ok bool) {
	for i := g.filterEnd - 1; i >= g.filterStart; i-- {
		if g.insns[i].Reference() == "exit" {
			n = newInstructionGraph(g.insns).shortestRunThrough(i)
			return n, n > 0
		}
	}
	return 0, false
}

// header is the line --dump-bpf prints before a program's instructions.
func (g generated) header(p *probe, h hook) string {
	line := fmt.Sprintf("; %s (%s, %s): %d instructions", p.name, p.prog, h.mechanism(), len(g.insns))
	if n, ok := g.rejectedRun(); ok {
		line += fmt.Sprintf(", %d run by a packet the last condition rejects", n)
	}
	return line
}

// countUndecided counts the packets that the filter in insns could not
// decide, each in its section's note of the cause, where insns jump for
// them. It follows the epilogue, so that decided packets never pass it.
func countUndecided(insns asm.Instructions, s Section, rows uint32, update counterUpdate) asm.Instructions {
	var out asm.Instructions
	for _, u := range filter.UndecidedIn(insns, "exit") {
		count := countRow(rowImmediate{}.storeRowKey(noteRow(rows, s, undecided(u))), "exit", update)
		count[0] = count[0].WithSymbol(filter.UndecidedLabel("exit", u)).WithSource(asm.Comment("not decided: " + u.String()))
		out = append(append(out, count...), asm.Ja.Label("exit"))
	}
	return out
}

// prologue keeps the context in R6 and the probed pointer at slotArg, and
// exits where the pointer is NULL.
func prologue(name string, h hook) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1).WithSource(asm.Comment(fmt.Sprintf("%s, %s", name, h.mechanism())))}
	insns = append(insns, h.loadArg(asm.R1)...)
	return append(insns,
		asm.JEq.Imm(asm.R1, 0, "exit"),
		asm.StoreMem(asm.R10, slotArg, asm.R1, asm.DWord),
	)
}

// epilogue is where every program ends: the label "exit".
func epilogue() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// source is how p's program reaches the packet: through the skb, or, at
// socket level, through the socket.
func source(p *probe, h hook, cfg Config) (filter.Source, error) {
	if p.fn != nil && p.fn.sock {
		return newSockSource(cfg.Layout, p.fn.proto, p.fn.received, cfg.Filter)
	}
	return newSkbSource(cfg.Layout, h.reads(), p.fromData, cfg.Filter)
}

// lookupKey looks up the key at slotKey in m: R0 = value pointer or NULL.
func lookupKey(m string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, slotKey),
		asm.FnMapLookupElem.Call(),
	}
}

// countRow adds one to the row counter whose index storeKey writes, and
// goes on at done where there is no such counter.
func countRow(storeKey asm.Instructions, done string, u counterUpdate) asm.Instructions {
	insns := append(asm.Instructions{}, storeKey...)
	insns = append(insns, lookupKey(rowsMap)...)
	insns = append(insns, asm.JEq.Imm(asm.R0, 0, done))
	return append(insns, increment(u)...)
}

// countStack adds one to the counter of (section, kernel stack, drop
// reason, location) in the generation of maps that user space selected, a
// load and a branch. Events that find no room for a new counter go to the
// section's note of why: the count map full, or, where its entries are
// allocated on insert, no memory for one.
func countStack(s Section, h hook, rows uint32, cfg Config, walk bool) asm.Instructions {
	insns := storeStackKey(s, h)
	insns = append(insns,
		asm.LoadMapValue(asm.R1, 0, 0).WithReference(generationMap).WithSource(asm.Comment("the generation of stack maps to count in")),
		asm.LoadMem(asm.R1, asm.R1, 0, asm.Word),
		asm.JNE.Imm(asm.R1, 0, generationLabel(1)),
	)
	for g := range uint32(numGenerations) {
		insns = append(insns, countStackIn(g, cfg.update, walk)...)
	}
	full := countRow(rowImmediate{}.storeRowKey(noteRow(rows, s, CountMapFull)), "exit", cfg.update)
	if !cfg.alloc.onDemand {
		full[0] = full[0].WithSymbol(uncountedLabel)
		return append(insns, full...)
	}
	noMemory := countRow(rowImmediate{}.storeRowKey(noteRow(rows, s, CountNoMemory)), "exit", cfg.update)
	noMemory[0] = noMemory[0].WithSymbol("no_memory")
	insns = append(insns, asm.JEq.Imm(regInsertErr, -int32(unix.ENOMEM), "no_memory").WithSymbol(uncountedLabel))
	insns = append(insns, full...)
	return append(append(insns, asm.Ja.Label("exit")), noMemory...)
}

// uncountedLabel is where an event goes that found no counter and could
// not insert one, with the insert's error in regInsertErr.
const uncountedLabel = "uncounted"

// regInsertErr keeps why a counter's insert failed, across the lookup
// after it: a register the helper calls preserve, unused once the filter
// has decided.
const regInsertErr = asm.R7

// storeStackKey writes the stackKey at slotKey but for its stack id.
func storeStackKey(s Section, h hook) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.R10, slotKey, int64(s), asm.Word),
		asm.StoreImm(asm.R10, slotKey+12, 0, asm.Word),
	}
	if reason, ok := h.loadReason(asm.R1); ok && s == Drop {
		insns = append(insns, reason...)
		insns = append(insns, asm.StoreMem(asm.R10, slotKey+8, asm.R1, asm.Word))
	} else {
		insns = append(insns, asm.StoreImm(asm.R10, slotKey+8, 0, asm.Word))
	}
	if location, ok := h.loadLocation(asm.R1); ok {
		insns = append(insns, location...)
		return append(insns, asm.StoreMem(asm.R10, slotKey+16, asm.R1, asm.DWord))
	}
	// Two words: asm has no valid encoding of an 8-byte immediate store.
	return append(insns, asm.StoreImm(asm.R10, slotKey+16, 0, asm.Word), asm.StoreImm(asm.R10, slotKey+20, 0, asm.Word))
}

// generationLabel is where the counting in generation g starts.
func generationLabel(g uint32) string { return fmt.Sprintf("generation%d", g) }

// countStackIn records the kernel stack in generation g's stack map where
// walk, and adds one to its counter there, inserting the counter on first
// use; it goes on at uncountedLabel where it could not, else at "exit".
func countStackIn(g uint32, u counterUpdate, walk bool) asm.Instructions {
	insert := fmt.Sprintf("insert%d", g)
	insns := recordStack(g, walk)
	insns[0] = insns[0].WithSymbol(generationLabel(g)).WithSource(asm.Comment(fmt.Sprintf("count in generation %d", g)))
	insns = append(insns, lookupKey(stacksMap(g))...)
	insns = append(insns, asm.JEq.Imm(asm.R0, 0, insert))
	insns = append(insns, increment(u)...)
	insns = append(insns,
		asm.Ja.Label("exit"),
		asm.Mov.Imm(asm.R1, 1).WithSymbol(insert),
		asm.StoreMem(asm.R10, slotOne, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(stacksMap(g)),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, slotKey),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, slotOne),
		asm.Mov.Imm(asm.R4, int32(ebpf.UpdateNoExist)),
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(regInsertErr, asm.R0),
	)
	// Another CPU may have inserted the key first: look again.
	insns = append(insns, lookupKey(stacksMap(g))...)
	insns = append(insns, asm.JEq.Imm(asm.R0, 0, uncountedLabel))
	insns = append(insns, increment(u)...)
	return append(insns, asm.Ja.Label("exit"))
}

// recordStack stores the stack id of the count key: the kernel stack's in
// generation g's stack map where walk, else notWalked.
func recordStack(g uint32, walk bool) asm.Instructions {
	if !walk {
		return asm.Instructions{asm.StoreImm(asm.R10, slotKey+4, int64(notWalked), asm.Word)}
	}
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, 0).WithReference(tracesMap(g)),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnGetStackid.Call(),
		asm.StoreMem(asm.R10, slotKey+4, asm.R0, asm.Word),
	}
}

// Dump writes the instructions of every program cfg asks for, as they would
// be loaded with the first hook of each probe that this kernel offers.
func Dump(w io.Writer, cfg Config) error {
	pl, err := newPlan(cfg, false)
	if err != nil {
		return err
	}
	if cfg.Layout.IsSymbolic() {
		fmt.Fprintf(w, "; struct offsets are symbolic: this kernel's are calibrated at start, which --dump-bpf does not do: %s\n", cfg.Layout.Describe())
	}
	// Which update the kernel runs well is found by loading a program,
	// which --dump-bpf does not do.
	fmt.Fprintf(w, "; counters: %v; at start skbstat tries whether this kernel's JIT compiles one, else it counts with a plain add at hooks that never nest (-v says which)\n", cfg.update)
	if cfg.Consume || cfg.Drop {
		fmt.Fprintf(w, "; stack counters: preallocated, as shown; at start skbstat tries whether this kernel lets tracing programs allocate them on insert, and then counts inserts that find no memory in a note of their own (-v says which)\n")
	}
	for _, m := range pl.missing {
		fmt.Fprintf(w, "; %s: not attached: %v\n", m.Probe, m.Err)
	}
	rows := numberRows(pl.probes)
	for _, p := range pl.probes {
		h, err := firstHook(p)
		if err != nil {
			fmt.Fprintf(w, "; %s: %v\n", p.name, err)
			continue
		}
		g, err := program(p, h, cfg, rows)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n%v\n", g.header(p, h), g.insns)
	}
	return nil
}

// firstHook is the hook Dump shows: a tracepoint's first, a function's
// fentry where BTF describes it, else its kprobe.
func firstHook(p *probe) (hook, error) {
	if p.fn != nil {
		if p.fn.hasBTF {
			return p.fn.fentry()
		}
		return p.fn.kprobe(kernelArch())
	}
	var last error
	for _, resolve := range p.hooks {
		h, err := resolve()
		if err == nil {
			return h, nil
		}
		last = err
	}
	return nil, last
}
