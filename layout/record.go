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
// following, in turn, the pointer at each of path's offsets.
type window struct {
	path      []uint32
	off, size uint32
}

// A recorder is a BPF program at a perf tracepoint that copies kernel memory
// around the sk_buffs of chosen lengths: what calibration searches for the
// known values of its own packets. It runs nowhere near the user's traffic:
// only while calibration sends, and only for skb->len in [minLen, minLen+kinds).
type recorder struct {
	tp      string // net:net_dev_queue
	skb     tracefs.Field
	len     tracefs.Field
	ptrSize int
	windows []window
	minLen  uint32
	kinds   uint32
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

// Stack slots of the recorder.
const (
	recSlotKey = -8
	recSlotPtr = -16
)

// program is the recorder's code: find the record for this CPU and length,
// store the skb address, then make every copy.
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
		asm.FnGetSmpProcessorId.Call(),
		asm.Mul.Imm(asm.R0, int32(r.kinds)),
		asm.Add.Reg(asm.R0, asm.R8),
		asm.StoreMem(asm.R10, recSlotKey, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("records"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, recSlotKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, int16(r.skb.Offset), loadSize(r.skb.Size)),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.DWord),
	}
	offsets, _ := r.dataOffsets()
	for i, w := range r.windows {
		done := fmt.Sprintf("copied%d", i)
		insns = append(insns, asm.LoadMem(asm.R3, asm.R7, 0, asm.DWord))
		for _, off := range w.path {
			insns = append(insns,
				asm.Add.Imm(asm.R3, int32(off)),
				asm.Mov.Reg(asm.R1, asm.R10),
				asm.Add.Imm(asm.R1, recSlotPtr),
				asm.Mov.Imm(asm.R2, int32(r.ptrSize)),
				asm.FnProbeReadKernel.Call(),
				asm.JNE.Imm(asm.R0, 0, done),
				asm.LoadMem(asm.R3, asm.R10, recSlotPtr, loadSize(uint32(r.ptrSize))),
				asm.Mov.Imm(asm.R0, -int32(efault)),
				asm.JEq.Imm(asm.R3, 0, done),
			)
		}
		insns = append(insns,
			asm.Add.Imm(asm.R3, int32(w.off)),
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Add.Imm(asm.R1, int32(offsets[i])),
			asm.Mov.Imm(asm.R2, int32(w.size)),
			asm.FnProbeReadKernel.Call(),
			asm.StoreMem(asm.R7, r.statusOffset(i), asm.R0, asm.Word).WithSymbol(done),
		)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
}

const efault = 14

// recording is an attached recorder.
type recording struct {
	r      *recorder
	m      *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
	ncpu   int
	record uint32 // value size
}

// start loads the recorder and attaches it to its tracepoint, whose format
// is f.
func (r *recorder) start(group, name string) (_ *recording, err error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	_, size := r.dataOffsets()
	rec := &recording{r: r, ncpu: ncpu, record: size}
	defer func() {
		if err != nil {
			rec.close()
		}
	}()
	rec.m, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "skbstat_calib", Type: ebpf.Array, KeySize: 4, ValueSize: size,
		MaxEntries: uint32(ncpu) * r.kinds,
	})
	if err != nil {
		return nil, fmt.Errorf("record map: %w", err)
	}
	insns := r.program()
	if err := insns.AssociateMap("records", rec.m); err != nil {
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

// find returns the record of packet kind k that own recognizes, among
// those the CPUs made last. The record's windows are slices of one buffer,
// reused until a record is found: calibration runs on machines with little
// memory.
func (rec *recording) find(k uint32, own func(record) bool) (record, bool, error) {
	buf := make([]byte, rec.record)
	offsets, _ := rec.r.dataOffsets()
	for cpu := 0; cpu < rec.ncpu; cpu++ {
		if err := rec.m.Lookup(uint32(cpu)*rec.r.kinds+k, buf); err != nil {
			return record{}, false, fmt.Errorf("read calibration record: %w", err)
		}
		r := record{skbaddr: binary.NativeEndian.Uint64(buf), windows: make([][]byte, len(rec.r.windows))}
		if r.skbaddr == 0 {
			continue
		}
		for i, w := range rec.r.windows {
			if binary.NativeEndian.Uint32(buf[rec.r.statusOffset(i):]) == 0 {
				r.windows[i] = buf[offsets[i] : offsets[i]+w.size : offsets[i]+w.size]
			}
		}
		if own(r) {
			return r, true, nil
		}
	}
	return record{}, false, nil
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
}
