package filter

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// xdpSource is the Source of XDP programs: direct packet access, bounds
// checked against data_end. The network header follows a 14-byte Ethernet
// header.
type xdpSource struct{}

// struct xdp_md offsets.
const (
	xdpData           = 0
	xdpDataEnd        = 4
	xdpIngressIfindex = 12

	ethHeaderLen = 14
	ethTypeOff   = 12
)

// scratch returns two registers of R3-R5 that are not dst.
func scratch(dst asm.Register) (asm.Register, asm.Register) {
	var regs []asm.Register
	for _, r := range []asm.Register{asm.R3, asm.R4, asm.R5} {
		if r != dst {
			regs = append(regs, r)
		}
	}
	return regs[0], regs[1]
}

func (xdpSource) Ethertype(dst asm.Register, reject string) asm.Instructions {
	data, end := scratch(dst)
	return asm.Instructions{
		asm.LoadMem(data, asm.R6, xdpData, asm.Word),
		asm.LoadMem(end, asm.R6, xdpDataEnd, asm.Word),
		asm.Mov.Reg(dst, data),
		asm.Add.Imm(dst, ethHeaderLen),
		asm.JGT.Reg(dst, end, reject),
		asm.LoadMem(dst, data, ethTypeOff, asm.Half),
	}
}

func (xdpSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	return asm.Instructions{asm.LoadMem(dst, asm.R6, xdpIngressIfindex, asm.Word)}
}

// Setup points R7 at the network header.
func (xdpSource) Setup(reject string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R7, asm.R6, xdpData, asm.Word),
		asm.Add.Imm(asm.R7, ethHeaderLen),
	}
}

func (xdpSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	last, end := scratch(dst)
	return asm.Instructions{
		asm.Mov.Reg(dst, asm.R7),
		asm.Add.Reg(dst, off),
		asm.Mov.Reg(last, dst),
		asm.Add.Imm(last, size),
		asm.LoadMem(end, asm.R6, xdpDataEnd, asm.Word),
		asm.JGT.Reg(last, end, reject),
	}
}

const (
	xdpDrop = 1
	xdpPass = 2
)

// xdpProgram is the filter as a whole XDP program: XDP_PASS for a match,
// XDP_DROP otherwise.
func xdpProgram(f Filter) asm.Instructions {
	filter := f.Instructions(xdpSource{}, binary.NativeEndian, "reject")
	insns := append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, filter...)
	insns = append(insns, asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
	if len(filter) == 0 {
		return insns // the verifier refuses unreachable code
	}
	return append(insns, asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("reject"), asm.Return())
}

// loadFilter loads the filter's XDP program, failing the test with the
// verifier's log and the listing when the kernel refuses it. The caller
// closes the program.
func loadFilter(tb testing.TB, f Filter) *ebpf.Program {
	tb.Helper()
	insns := xdpProgram(f)
	for i := range insns {
		// Comments are for listings; loaded, they would be line info.
		insns[i] = insns[i].WithSource(nil)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "filter_test",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			tb.Fatalf("filter %q: %+v\n%v", f, verr, xdpProgram(f))
		}
		tb.Fatalf("filter %q: %v", f, err)
	}
	return prog
}

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// loIfindex is the loopback device, which exists in every network
// namespace with this index; XDP test runs may claim to have come in on it.
const loIfindex = 1

// runFilter runs prog on an Ethernet frame received on loopback and
// reports whether the filter matched.
func runFilter(tb testing.TB, prog *ebpf.Program, frame []byte) bool {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: loIfindex},
	})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN on %d bytes: %v", len(frame), err)
	}
	switch ret {
	case xdpPass:
		return true
	case xdpDrop:
		return false
	}
	tb.Fatalf("program returned %d", ret)
	return false
}

// requireBPF skips tests that load programs where the kernel does not let
// this process do so.
func requireBPF(tb testing.TB) {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		tb.Skipf("cannot load an XDP program (euid %d; run as root): %v", os.Geteuid(), err)
	}
	prog.Close()
}

// minFrame and maxFrame bound what BPF_PROG_TEST_RUN takes for XDP: an
// Ethernet header, and what fits in a page after XDP head and tail room.
const (
	minFrame = ethHeaderLen
	maxFrame = 3000
)
