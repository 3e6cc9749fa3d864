package progs

import (
	"fmt"
	"sort"

	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/layout"
)

// Stack frame shared by every generated program, as offsets from R10. The
// verifier insists on aligned stack access, so every slot is 8-aligned and
// the skb span keeps the struct's own alignment.
const (
	slotSkb   = -8  // struct sk_buff *
	slotAvail = -16 // linear bytes from the network header on
	slotKey   = -32 // count key (16 bytes)
	slotOne   = -40 // the value 1, for a first map insert
	slotFetch = -88 // filter.Source Fetch buffer (48 bytes)
	// The skb span lies below slotFetch; its size depends on the kernel.
	fetchSize = 48
	maxStack  = 512
)

// span is a run of sk_buff bytes that holds every field the filter needs, so
// that one bpf_probe_read_kernel call fetches them all.
type span struct {
	start, size uint32 // in struct sk_buff
}

func skbSpan(l *layout.Layout) (span, error) {
	fields := []layout.Field{l.SkBuff.Head, l.SkBuff.Data, l.SkBuff.Len, l.SkBuff.DataLen,
		l.SkBuff.Protocol, l.SkBuff.NetworkHeader}
	sort.Slice(fields, func(i, j int) bool { return fields[i].Offset < fields[j].Offset })
	start := fields[0].Offset &^ 7
	last := fields[len(fields)-1]
	size := (last.Offset + last.Size - start + 7) &^ 7
	if int(size) > maxStack+slotFetch-8 {
		return span{}, fmt.Errorf("sk_buff fields span %d bytes, more than the BPF stack holds", size)
	}
	return span{start, size}, nil
}

// stackSlot is where the span keeps field f.
func (s span) stackSlot(f layout.Field) int16 {
	return s.base() + int16(f.Offset-s.start)
}

func (s span) base() int16 { return slotFetch - int16(s.size) }

// skbSource is the filter.Source of tracing programs: it copies the skb's
// fields and packet bytes with bpf_probe_read_kernel. The caller stores the
// skb pointer in slotSkb first.
type skbSource struct {
	l    *layout.Layout
	span span
	// fromData: the probe fires before the kernel sets skb->network_header
	// (net:netif_receive_skb), so the IP header is at skb->data.
	fromData bool
}

// loadField loads a field of n bytes (1, 2, 4 or 8) from src+off.
func loadField(dst, src asm.Register, off int16, f layout.Field) asm.Instruction {
	return asm.LoadMem(dst, src, off, sizeOf(f.Size))
}

func sizeOf(n uint32) asm.Size {
	switch n {
	case 1:
		return asm.Byte
	case 2:
		return asm.Half
	case 4:
		return asm.Word
	}
	return asm.DWord
}

// probeRead copies size bytes from the kernel address in R3 to the stack at
// slot, and jumps to reject when the read faults.
func probeRead(slot int16, size int32, reject string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, int32(slot)),
		asm.Mov.Imm(asm.R2, size),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, reject),
	}
}

func (s skbSource) Ethertype(dst asm.Register, reject string) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R3, asm.R10, slotSkb, asm.DWord),
		asm.Add.Imm(asm.R3, int32(s.span.start)),
	}
	insns = append(insns, probeRead(s.span.base(), int32(s.span.size), reject)...)
	return append(insns, loadField(dst, asm.R10, s.span.stackSlot(s.l.SkBuff.Protocol), s.l.SkBuff.Protocol))
}

func (s skbSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	dev, ifindex := s.l.SkBuff.Dev, s.l.NetDevice.Ifindex
	insns := asm.Instructions{
		asm.LoadMem(asm.R3, asm.R10, slotSkb, asm.DWord),
		asm.Add.Imm(asm.R3, int32(dev.Offset)),
	}
	insns = append(insns, probeRead(slotFetch, int32(dev.Size), reject)...)
	insns = append(insns,
		loadField(asm.R3, asm.R10, slotFetch, dev),
		asm.JEq.Imm(asm.R3, 0, reject),
		asm.Add.Imm(asm.R3, int32(ifindex.Offset)),
	)
	insns = append(insns, probeRead(slotFetch, int32(ifindex.Size), reject)...)
	return append(insns, loadField(dst, asm.R10, slotFetch, ifindex))
}

// Setup finds the network header and how many linear bytes follow it:
// R7 = head + network offset; slotAvail = linear end - network offset, where
// the linear end is (data - head) + (len - data_len).
func (s skbSource) Setup(reject string) asm.Instructions {
	sk := s.l.SkBuff
	useData := reject + "_use_data"
	insns := asm.Instructions{
		loadField(asm.R1, asm.R10, s.span.stackSlot(sk.Data), sk.Data),
		loadField(asm.R2, asm.R10, s.span.stackSlot(sk.Head), sk.Head),
		asm.Sub.Reg(asm.R1, asm.R2), // R1 = data offset
		loadField(asm.R3, asm.R10, s.span.stackSlot(sk.Len), sk.Len),
		loadField(asm.R4, asm.R10, s.span.stackSlot(sk.DataLen), sk.DataLen),
		asm.Sub.Reg(asm.R3, asm.R4),
		asm.Add.Reg(asm.R3, asm.R1), // R3 = linear end offset
	}
	if !s.fromData {
		// network_header is 0 until the kernel first sets it.
		insns = append(insns,
			loadField(asm.R4, asm.R10, s.span.stackSlot(sk.NetworkHeader), sk.NetworkHeader),
			asm.JEq.Imm(asm.R4, 0, useData),
			asm.Mov.Reg(asm.R1, asm.R4),
		)
	}
	return append(insns,
		asm.JGT.Reg(asm.R1, asm.R3, reject).WithSymbol(useData),
		asm.Sub.Reg(asm.R3, asm.R1),
		asm.StoreMem(asm.R10, slotAvail, asm.R3, asm.DWord),
		asm.Mov.Reg(asm.R7, asm.R2),
		asm.Add.Reg(asm.R7, asm.R1),
	)
}

// Fetch copies size bytes at network header + off into the fetch buffer,
// after checking that they lie in the linear data.
func (s skbSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	if size > fetchSize {
		panic(fmt.Sprintf("filter fetch of %d bytes exceeds the %d-byte buffer", size, fetchSize))
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R4, off),
		asm.Mov.Reg(asm.R1, asm.R4),
		asm.Add.Imm(asm.R1, size),
		asm.LoadMem(asm.R2, asm.R10, slotAvail, asm.DWord),
		asm.JGT.Reg(asm.R1, asm.R2, reject),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Reg(asm.R3, asm.R4),
	}
	insns = append(insns, probeRead(slotFetch, size, reject)...)
	return append(insns,
		asm.Mov.Reg(dst, asm.R10),
		asm.Add.Imm(dst, slotFetch),
	)
}
