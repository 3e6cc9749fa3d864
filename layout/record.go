package layout

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/skbstat/skbstat/internal/tracefs"
)

// A window is a run of kernel memory a recorder copies for each packet:
// size bytes at off past where path leads, starting from the sk_buff and
// following, in turn, the pointer at each of path's offsets. magic: the
// window may be the packet's frame, to recognize the lab's packets by.
type window struct {
	path      []uint32
	off, size uint32
	magic     bool
}

// A recorder is a BPF program at a perf tracepoint that copies kernel memory
// around the sk_buffs of chosen lengths: what calibration searches for the
// known values of its own packets. It runs nowhere near the user's traffic:
// only while calibration sends, and only for skb->len in [minLen, minLen+kinds).
type recorder struct {
	skb     tracefs.Field
	len     tracefs.Field
	ptrSize int
	windows []window
	minLen  uint32
	kinds   uint32
	// magic is what the lab's payloads start with, magicAt where that is
	// in a frame; order, how the kernel loads it.
	magic   []byte
	magicAt []uint32
	order   binary.ByteOrder
}

// A record is what a recorder copied for one packet: each window's bytes,
// or nil where the copy faulted (its path met a NULL or an unreadable
// address).
type record struct {
	skbaddr uint64
	windows [][]byte
}

// Record layout in the map value: the skb address, one status word per
// window (0 or the helper's -errno), then the windows' bytes in turn.
const recordHeader = 8

func (r *recorder) statusOffset(i int) int16 { return int16(recordHeader + 4*i) }

func (r *recorder) dataOffsets() (offsets []uint32, size uint32) {
	size = uint32(recordHeader + 4*len(r.windows))
	for _, w := range r.windows {
		size = (size + 7) &^ 7
		offsets = append(offsets, size)
		size += w.size
	}
	return offsets, size
}

// Stack slots of the recorder; below them, the pointers that windows'
// paths start with, each followed once.
const (
	recSlotCPU   = -4
	recSlotKind  = -8
	recSlotPtr   = -16
	recSlotFirst = -24
)

// program is the recorder's code: in this CPU's scratch record, store the
// skb address and make every copy; if one of the copies holds the lab's
// magic payload, keep the record as the one of this packet kind. Other
// calibrating skbstat instances send packets of the same lengths: theirs
// have other magic.
func (r *recorder) program() asm.Instructions {
	loadSize := func(n uint32) asm.Size {
		if n == 4 {
			return asm.Word
		}
		return asm.DWord
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R8, asm.R6, int16(r.len.Offset), asm.Word),
		asm.Sub.Imm(asm.R8, int32(r.minLen)),
		asm.JGE.Imm(asm.R8, int32(r.kinds), "exit"),
		asm.StoreMem(asm.R10, recSlotKind, asm.R8, asm.Word),
		asm.FnGetSmpProcessorId.Call(),
		asm.StoreMem(asm.R10, recSlotCPU, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("scratch"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, recSlotCPU),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, int16(r.skb.Offset), loadSize(r.skb.Size)),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R9, 0), // the magic was seen
	}
	// The first pointer of a path that several windows share is followed
	// once: that keeps the program, which the verifier checks instruction
	// by instruction, small (it matters under emulation).
	first := map[uint32]int16{}
	for _, w := range r.windows {
		if len(w.path) < 2 {
			continue
		}
		if _, ok := first[w.path[0]]; !ok {
			slot := recSlotFirst - 8*int16(len(first))
			first[w.path[0]] = slot
			insns = append(insns, asm.LoadMem(asm.R3, asm.R7, 0, asm.DWord))
			insns = append(insns, r.follow(w.path[0], fmt.Sprintf("first%d", len(first)))...)
			insns = append(insns, asm.StoreMem(asm.R10, slot, asm.R3, asm.DWord).WithSymbol(fmt.Sprintf("first%d", len(first))))
		}
	}
	offsets, _ := r.dataOffsets()
	for i, w := range r.windows {
		done := fmt.Sprintf("copied%d", i)
		path := w.path
		if slot, ok := first[firstOf(path)]; ok && len(path) > 1 {
			// A NULL there (or an unreadable first pointer) fails the copy.
			insns = append(insns,
				asm.LoadMem(asm.R3, asm.R10, slot, asm.DWord),
				asm.Mov.Imm(asm.R0, -int32(efault)),
				asm.JEq.Imm(asm.R3, 0, done),
			)
			path = path[1:]
		} else {
			insns = append(insns, asm.LoadMem(asm.R3, asm.R7, 0, asm.DWord))
		}
		for _, off := range path {
			insns = append(insns, r.follow(off, done)...)
		}
		insns = append(insns,
			asm.Add.Imm(asm.R3, int32(w.off)),
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Add.Imm(asm.R1, int32(offsets[i])),
			asm.Mov.Imm(asm.R2, int32(w.size)),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, done),
		)
		if w.magic {
			insns = append(insns, r.seeMagic(offsets[i], w.size, fmt.Sprintf("magic%d", i))...)
		}
		insns = append(insns, asm.StoreMem(asm.R7, r.statusOffset(i), asm.R0, asm.Word).WithSymbol(done))
	}
	return append(insns,
		asm.JEq.Imm(asm.R9, 0, "exit"),
		asm.LoadMapPtr(asm.R1, 0).WithReference("records"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, recSlotKind),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Mov.Imm(asm.R4, int32(ebpf.UpdateAny)),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
}

// firstOf is the first offset of a path, or a value no path starts with.
func firstOf(path []uint32) uint32 {
	if len(path) == 0 {
		return ^uint32(0)
	}
	return path[0]
}

// follow replaces the address in R3 with the pointer stored at off past it,
// and jumps to fail, with R0 the error, where that cannot be read or is
// NULL; R3 is then 0.
func (r *recorder) follow(off uint32, fail string) asm.Instructions {
	size := asm.DWord
	if r.ptrSize == 4 {
		size = asm.Word
	}
	return asm.Instructions{
		asm.Add.Imm(asm.R3, int32(off)),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, recSlotPtr),
		asm.Mov.Imm(asm.R2, int32(r.ptrSize)),
		asm.FnProbeReadKernel.Call(),
		asm.LoadMem(asm.R3, asm.R10, recSlotPtr, size), // zeroed where the read failed
		asm.JNE.Imm(asm.R0, 0, fail),
		asm.Mov.Imm(asm.R0, -int32(efault)),
		asm.JEq.Imm(asm.R3, 0, fail),
		asm.Mov.Imm(asm.R0, 0),
	}
}

// seeMagic sets R9 if the window copied to the record at off holds the
// magic where an IPv4 or IPv6 frame's UDP payload starts, compared two
// bytes at a time (strict-alignment kernels allow no wider loads there).
// It leaves R0 alone and clobbers R1 and R2.
func (r *recorder) seeMagic(off, size uint32, label string) asm.Instructions {
	var insns asm.Instructions
	for j, at := range r.magicAt {
		if at+uint32(len(r.magic)) > size {
			continue
		}
		next := fmt.Sprintf("%s_%d", label, j)
		// Records are larger than a load's 16-bit offset reaches.
		insns = append(insns, asm.Mov.Reg(asm.R2, asm.R7), asm.Add.Imm(asm.R2, int32(off+at)))
		// Four bytes tell the lab's packets from others' in the kernel;
		// user space checks them all.
		for k := 0; k+1 < min(len(r.magic), 4); k += 2 {
			insns = append(insns,
				asm.LoadMem(asm.R1, asm.R2, int16(k), asm.Half),
				asm.JNE.Imm(asm.R1, int32(r.order.Uint16(r.magic[k:])), next),
			)
		}
		insns = append(insns,
			asm.Mov.Imm(asm.R9, 1),
			asm.Mov.Reg(asm.R0, asm.R0).WithSymbol(next),
		)
	}
	return insns
}

const efault = 14

// recording is an attached recorder.
type recording struct {
	r    *recorder
	m    *ebpf.Map // the records, by packet kind
	buf  *ebpf.Map // per CPU, the record being made
	prog *ebpf.Program
	link link.Link
	ncpu int
	size uint32 // of a record
}

// start loads the recorder and attaches it to its tracepoint, whose format
// is f.
func (r *recorder) start(group, name string) (_ *recording, err error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	_, size := r.dataOffsets()
	rec := &recording{r: r, ncpu: ncpu, size: size}
	defer func() {
		if err != nil {
			rec.close()
		}
	}()
	// Not per-CPU maps: their values may not exceed 32 KiB.
	for _, m := range []struct {
		m       **ebpf.Map
		entries int
	}{{&rec.m, int(r.kinds)}, {&rec.buf, ncpu}} {
		*m.m, err = ebpf.NewMap(&ebpf.MapSpec{Name: "skbstat_calib", Type: ebpf.Array, KeySize: 4, ValueSize: size, MaxEntries: uint32(m.entries)})
		if err != nil {
			return nil, fmt.Errorf("calibration record map: %w", err)
		}
	}
	insns := r.program()
	if err := insns.AssociateMap("records", rec.m); err != nil {
		return nil, err
	}
	if err := insns.AssociateMap("scratch", rec.buf); err != nil {
		return nil, err
	}
	rec.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "skbstat_calib", Type: ebpf.TracePoint, License: "GPL", Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("load the calibration program: %w", err)
	}
	rec.link, err = link.Tracepoint(group, name, rec.prog, nil)
	if err != nil {
		return nil, fmt.Errorf("attach the calibration program to %s:%s: %w", group, name, err)
	}
	return rec, nil
}

// record returns the record of packet kind k, if its packet was seen.
func (rec *recording) record(k uint32) (record, bool, error) {
	buf := make([]byte, rec.size)
	if err := rec.m.Lookup(k, buf); err != nil {
		return record{}, false, fmt.Errorf("read calibration record: %w", err)
	}
	r := record{skbaddr: binary.NativeEndian.Uint64(buf), windows: make([][]byte, len(rec.r.windows))}
	offsets, _ := rec.r.dataOffsets()
	for i, w := range rec.r.windows {
		if binary.NativeEndian.Uint32(buf[rec.r.statusOffset(i):]) == 0 {
			r.windows[i] = buf[offsets[i] : offsets[i]+w.size : offsets[i]+w.size]
		}
	}
	return r, r.skbaddr != 0, nil
}

// close detaches and unloads the recorder.
func (rec *recording) close() {
	if rec.link != nil {
		rec.link.Close()
	}
	if rec.prog != nil {
		rec.prog.Close()
	}
	if rec.m != nil {
		rec.m.Close()
	}
	if rec.buf != nil {
		rec.buf.Close()
	}
}
