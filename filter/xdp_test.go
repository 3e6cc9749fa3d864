package filter

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// xdpSource is the Source of the XDP programs that test the filter on
// frames through BPF_PROG_TEST_RUN, which come in as at says. The network
// header follows a 14-byte Ethernet header.
type xdpSource struct{ at arrival }

// arrival is where a test frame comes from, as the test Source tells the
// filter: the device it came in on, in a network namespace. XDP has no
// namespace, so the Source claims one (xdpNetns). A frame from nowhere
// stands for a packet with neither device nor socket.
type arrival struct {
	ifindex int // 0: no device
	netns   uint32
}

// xdpNetns is the namespace inode the test Source claims: a number like the
// kernel's (they start at 0xf0000000), on no machine the one of loopback.
const xdpNetns = 0xf0001234

var (
	onLoopback = arrival{loIfindex, xdpNetns}
	nowhere    = arrival{}
)

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

func (s xdpSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	if s.at == nowhere {
		return rejectAll(reject)
	}
	return asm.Instructions{asm.LoadMem(dst, asm.R6, xdpIngressIfindex, asm.Word)}
}

func (s xdpSource) DeviceNetns(dst asm.Register, reject string) asm.Instructions {
	if s.at == nowhere {
		return rejectAll(reject)
	}
	return asm.Instructions{asm.Mov.Imm32(dst, int32(s.at.netns))}
}

func (s xdpSource) Netns(dst asm.Register, reject, undecided string) asm.Instructions {
	if s.at == nowhere {
		return rejectAll(undecided)
	}
	return s.DeviceNetns(dst, reject)
}

// Setup points R7 at the network header.
func (xdpSource) Setup(reject string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R7, asm.R6, xdpData, asm.Word),
		asm.Add.Imm(asm.R7, ethHeaderLen),
	}
}

// Scratch: the XDP program keeps nothing else on its stack.
func (xdpSource) Scratch() int16 { return -8 }

// xdpFetchSlot is the stack buffer Fetch copies to.
const (
	xdpFetchSlot = -64
	xdpFetchSize = 48
)

// Fetch copies the bytes with bpf_xdp_load_bytes (Linux 5.18), like the
// tracing programs' Source, rather than reading the packet directly: a
// direct read makes the verifier track every offset of the IPv6 header walk
// precisely, and its work then doubles with each header walked.
func (xdpSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	if size > xdpFetchSize {
		panic("fetch larger than the buffer")
	}
	return asm.Instructions{
		asm.Mov.Reg(asm.R2, off),
		asm.Add.Imm(asm.R2, ethHeaderLen),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, xdpFetchSlot),
		asm.Mov.Imm(asm.R4, size),
		asm.FnXdpLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, reject),
		asm.Mov.Reg(dst, asm.R10),
		asm.Add.Imm(dst, xdpFetchSlot),
	}
}

const (
	xdpDrop = 1
	xdpPass = 2
	// xdpUndecided + u is returned for packets undecided for reason u: XDP_TX,
	// XDP_REDIRECT.
	xdpUndecided = 3
)

// xdpProgram is the filter as a whole XDP program for frames that come in
// as at says: XDP_PASS for a match, xdpUndecided + the reason for a packet
// it cannot decide, XDP_DROP otherwise.
func xdpProgram(f Filter, at arrival) asm.Instructions {
	filter := f.Instructions(xdpSource{at}, binary.NativeEndian, "reject")
	insns := append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, filter...)
	insns = append(insns, asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
	if len(filter) == 0 {
		return insns // the verifier refuses unreachable code
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("reject"), asm.Return())
	return append(insns, undecidedExits(filter, "reject")...)
}

// undecidedExits returns xdpUndecided + the reason at each undecided label
// of the filter with reject label reject that its code refers to.
func undecidedExits(filter asm.Instructions, reject string) asm.Instructions {
	var insns asm.Instructions
	for _, u := range UndecidedIn(filter, reject) {
		insns = append(insns, asm.Mov.Imm(asm.R0, xdpUndecided+int32(u)).WithSymbol(UndecidedLabel(reject, u)), asm.Return())
	}
	return insns
}

// loadFilter loads the filter's XDP program for frames that come in as at
// says, failing the test with the verifier's log and the listing when the
// kernel refuses it. The caller closes the program.
func loadFilter(tb testing.TB, f Filter, at arrival) *ebpf.Program {
	tb.Helper()
	insns := xdpProgram(f, at)
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
			tb.Fatalf("filter %q: %+v\n%v", f, verr, xdpProgram(f, at))
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
// returns the filter's verdict.
func runFilter(tb testing.TB, prog *ebpf.Program, frame []byte) verdict {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: loIfindex},
	})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN on %d bytes: %v", len(frame), err)
	}
	switch {
	case ret == xdpPass:
		return matched
	case ret == xdpDrop:
		return rejected
	case ret >= xdpUndecided && ret < xdpUndecided+uint32(NumUndecided):
		return undecidedFor(Undecided(ret - xdpUndecided))
	}
	tb.Fatalf("program returned %d", ret)
	return rejected
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
