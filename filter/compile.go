package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf/asm"
)

// Registers of the generated code, within the Source register contract.
const (
	regPtr  = asm.R1 // bytes made readable by the latest Fetch
	regTmp  = asm.R2
	regTmp2 = asm.R3
	// regPorts points at the ports where the header's read brought them
	// along, else is 0.
	regPorts = asm.R4
	regOff   = asm.R8 // offset of the next header past the network header
	regProto = asm.R9 // upper-layer protocol number
)

// Header layouts, as offsets into the fixed IPv4 and IPv6 headers.
const (
	ipv4HeaderLen   = 20
	ipv4FragOffset  = 6 // flags (3 bits) and fragment offset (13 bits)
	ipv4ProtoOffset = 9
	ipv4SrcOffset   = 12
	ipv4DstOffset   = 16

	ipv6HeaderLen     = 40
	ipv6NextHdrOffset = 6
	ipv6SrcOffset     = 8
	ipv6DstOffset     = 24

	// Every extension header the walk passes is at least 8 bytes: next
	// header, length in 8-byte units beyond the first 8 (the fragment
	// header has none: it is always 8), then for the fragment header the
	// fragment offset (13 bits) with flags (3 bits).
	extHeaderLen  = 8
	extNextHdr    = 0
	extLen        = 1
	extFragOffset = 2

	portsLen = 4 // source port, destination port
)

// Ethertypes, as they lie in memory.
var (
	ethIPv4 = []byte{0x08, 0x00}
	ethIPv6 = []byte{0x86, 0xdd}
)

// Instructions returns code that evaluates the filter on the packet that src
// reaches: it falls through when the packet matches and jumps to the label
// reject when it does not. order is the kernel's byte order; constants are
// immediates in it. The filter without conditions emits nothing. Labels the
// code defines begin with reject, so filters with different reject labels
// can share a program.
//
// The code uses registers as the Source contract says: it expects the
// context in R6, leaves R6 and R7 alone, and clobbers R0-R5, R8 and R9.
// It compares 32-bit words with JMP32 instructions (Linux 5.1 and later).
func (f Filter) Instructions(src Source, order binary.ByteOrder, reject string) asm.Instructions {
	if !f.satisfiable() {
		return rejectAll(reject)
	}
	var insns asm.Instructions
	if f.Ifindex != 0 {
		insns = append(insns, checkDevice(src, f, reject)...)
	}
	if f.hasIPCondition() {
		insns = append(insns, f.ipInstructions(src, order, reject)...)
	}
	if f.Ifindex == 0 && f.Netns != 0 {
		// Last, so that only packets that match all else are undecided.
		insns = append(insns, checkNetns(src, f.Netns, reject)...)
	}
	return insns
}

// ipInstructions checks the address, protocol and port conditions.
func (f Filter) ipInstructions(src Source, order binary.ByteOrder, reject string) asm.Instructions {
	g := generator{f: f, src: src, order: order, reject: reject}
	var insns asm.Instructions
	ipv4, ipv6 := f.Families()
	switch {
	case ipv4 && ipv6:
		insns = append(insns, g.dispatchFamily()...)
		insns = append(insns, g.ipv4()...)
		insns = append(insns, asm.Ja.Label(g.label("transport")))
		insns = append(insns, labelled(g.label("ipv6"), g.ipv6())...)
	case ipv4:
		insns = append(insns, g.checkEthertype(ethIPv4)...)
		insns = append(insns, g.ipv4()...)
	default:
		insns = append(insns, g.checkEthertype(ethIPv6)...)
		insns = append(insns, g.ipv6()...)
	}
	transport := g.transport()
	if ipv6 && len(transport) > 0 {
		// the IPv6 walk and the IPv4 code before it jump here
		transport = labelled(g.label("transport"), transport)
	}
	return append(insns, transport...)
}

// generator holds what every piece of one filter's code needs.
type generator struct {
	f      Filter
	src    Source
	order  binary.ByteOrder
	reject string
}

// commented attaches text to the first instruction, where listings (such as
// --dump-bpf) print it, before any comment the instruction had.
func commented(text string, insns asm.Instructions) asm.Instructions {
	if len(insns) > 0 {
		if old := insns[0].Source(); old != nil {
			text += "; " + old.String()
		}
		insns[0] = insns[0].WithSource(asm.Comment(text))
	}
	return insns
}

// label names a place in this filter's code.
func (g generator) label(name string) string {
	return g.reject + "_filter_" + name
}

// rejectAll rejects every packet. It is a conditional jump because an
// unconditional one would leave the caller's code after the filter
// unreachable, which the verifier refuses.
func rejectAll(reject string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(regTmp, 0),
		asm.JEq.Imm(regTmp, 0, reject),
	}
}

// checkDevice rejects packets on other devices than f's: another index,
// or, where f has a namespace, the same index in another namespace.
func checkDevice(src Source, f Filter, reject string) asm.Instructions {
	insns := src.Ifindex(regTmp, reject)
	insns = append(insns, asm.JNE.Imm32(regTmp, int32(f.Ifindex), reject))
	if f.Netns == 0 {
		return commented(fmt.Sprintf("filter: device ifindex %d", f.Ifindex), insns)
	}
	insns = append(insns, src.DeviceNetns(regTmp, reject)...)
	return commented(fmt.Sprintf("filter: device ifindex %d in netns %d", f.Ifindex, f.Netns),
		append(insns, asm.JNE.Imm32(regTmp, int32(f.Netns), reject)))
}

// checkNetns rejects packets in other network namespaces than netns, and
// leaves undecided those whose namespace nothing tells.
func checkNetns(src Source, netns uint32, reject string) asm.Instructions {
	insns := src.Netns(regTmp, reject, UndecidedLabel(reject, NoNamespace))
	return commented(fmt.Sprintf("filter: netns %d", netns),
		append(insns, after(insns, reject, "Netns", asm.JNE.Imm32(regTmp, int32(netns), reject))))
}

// checkEthertype rejects packets whose ethertype is not want.
func (g generator) checkEthertype(want []byte) asm.Instructions {
	insns := g.src.Ethertype(regTmp, g.reject)
	return commented(fmt.Sprintf("filter: ethertype 0x%04x", binary.BigEndian.Uint16(want)),
		append(insns, after(insns, g.reject, "Ethertype", asm.JNE.Imm32(regTmp, int32(g.order.Uint16(want)), g.reject))))
}

// after is next, the instruction after the code src of the Source method
// named method, with the label Continue(reject, method) where src jumps
// there.
func after(src asm.Instructions, reject, method string, next asm.Instruction) asm.Instruction {
	label := Continue(reject, method)
	for _, ins := range src {
		if ins.Reference() == label {
			return next.WithSymbol(label)
		}
	}
	return next
}

// dispatchFamily continues with the IPv4 code after it for IPv4, jumps to
// the IPv6 code for IPv6, and rejects other packets.
func (g generator) dispatchFamily() asm.Instructions {
	insns := g.src.Ethertype(regTmp, g.reject)
	return commented("filter: IPv4 or IPv6", append(insns,
		after(insns, g.reject, "Ethertype", asm.JEq.Imm32(regTmp, int32(g.order.Uint16(ethIPv6)), g.label("ipv6"))),
		asm.JNE.Imm32(regTmp, int32(g.order.Uint16(ethIPv4)), g.reject),
	))
}

// fetchHeader makes the fixed IP header of headerLen bytes readable at
// regPtr, and the ports after it where the filter has port conditions: a
// packet too short for them has none to match.
func (g generator) fetchHeader(headerLen int32) asm.Instructions {
	size := headerLen
	if g.f.hasPortCondition() {
		size += portsLen
	}
	insns := asm.Instructions{asm.Mov.Imm(regOff, 0)}
	insns = append(insns, g.src.Setup(g.reject)...)
	what := fmt.Sprintf("filter: fetch the %d-byte IP header", headerLen)
	if size > headerLen {
		what += ", and the ports where they follow it"
	}
	return commented(what, append(insns, g.src.Fetch(regPtr, regOff, size, g.reject)...))
}

// portsAfterHeader sets regPorts for port conditions: to the ports that
// fetchHeader brought along where the transport header follows the fixed
// header (at regOff == headerLen), else to 0.
func (g generator) portsAfterHeader(headerLen int32) asm.Instructions {
	if !g.f.hasPortCondition() {
		return nil
	}
	return asm.Instructions{
		asm.Mov.Imm(regPorts, 0),
		jumpBy(asm.JNE, regOff, headerLen, 2),
		asm.Mov.Reg(regPorts, regPtr),
		asm.Add.Imm(regPorts, headerLen),
	}
}

// ipv4 checks the IPv4 header, and leaves the protocol in regProto and the
// transport header's offset in regOff where later checks need them.
func (g generator) ipv4() asm.Instructions {
	insns := g.fetchHeader(ipv4HeaderLen)
	ports := g.f.hasPortCondition()
	insns = append(insns, g.checkVersion(4, ports)...)
	insns = append(insns, g.checkAddresses(ipv4SrcOffset, ipv4DstOffset)...)
	if g.f.Proto.Set || ports {
		insns = append(insns, asm.LoadMem(regProto, regPtr, ipv4ProtoOffset, asm.Byte))
	}
	if ports {
		insns = append(insns, g.rejectLaterFragment(ipv4FragOffset, []byte{0x1f, 0xff}, g.reject)...)
	}
	return append(insns, g.portsAfterHeader(ipv4HeaderLen)...)
}

// ipv6 checks the IPv6 header and walks its extension headers where later
// checks need the protocol.
func (g generator) ipv6() asm.Instructions {
	insns := g.fetchHeader(ipv6HeaderLen)
	insns = append(insns, g.checkVersion(6, false)...)
	insns = append(insns, g.checkAddresses(ipv6SrcOffset, ipv6DstOffset)...)
	if g.f.Proto.Set || g.f.hasPortCondition() {
		insns = append(insns,
			asm.LoadMem(regProto, regPtr, ipv6NextHdrOffset, asm.Byte),
			asm.Mov.Imm(regOff, ipv6HeaderLen),
		)
		insns = append(insns, g.portsAfterHeader(ipv6HeaderLen)...)
		insns = append(insns, g.walkExtensionHeaders()...)
	}
	return insns
}

// checkVersion rejects headers whose version field is not version. With
// ihl, it also rejects IPv4 header lengths below 20 bytes and leaves the
// header length in regOff.
func (g generator) checkVersion(version int32, ihl bool) asm.Instructions {
	insns := asm.Instructions{asm.LoadMem(regTmp, regPtr, 0, asm.Byte)}
	if ihl {
		insns = append(insns,
			asm.Mov.Reg(regOff, regTmp),
			asm.And.Imm(regOff, 0x0f),
		)
	}
	insns = append(insns,
		asm.RSh.Imm(regTmp, 4),
		asm.JNE.Imm(regTmp, version, g.reject),
	)
	if ihl {
		insns = append(insns,
			asm.JLT.Imm(regOff, ipv4HeaderLen/4, g.reject),
			asm.LSh.Imm(regOff, 2),
		)
	}
	return insns
}

// checkAddresses compares the source and destination addresses, at srcOff
// and dstOff in the header at regPtr, with the address conditions.
func (g generator) checkAddresses(srcOff, dstOff int16) asm.Instructions {
	var insns asm.Instructions
	if g.f.Src.IsValid() {
		insns = append(insns, g.comparePrefix(srcOff, g.f.Src, g.reject)...)
	}
	if g.f.Dst.IsValid() {
		insns = append(insns, g.comparePrefix(dstOff, g.f.Dst, g.reject)...)
	}
	if g.f.Addr.IsValid() {
		insns = append(insns, g.either(g.label("addr_dst"),
			func(miss string) asm.Instructions { return g.comparePrefix(srcOff, g.f.Addr, miss) },
			func(miss string) asm.Instructions { return g.comparePrefix(dstOff, g.f.Addr, miss) },
		)...)
	}
	return insns
}

// comparePrefix jumps to miss unless the address at off in the header at
// regPtr lies in p. It compares 32-bit words with 32-bit instructions, so
// immediates are never sign-extended.
func (g generator) comparePrefix(off int16, p netip.Prefix, miss string) asm.Instructions {
	p = p.Masked()
	addr := p.Addr().AsSlice()
	var insns asm.Instructions
	for word, bits := 0, p.Bits(); bits > 0; word, bits = word+1, bits-32 {
		value := addr[4*word : 4*word+4]
		insns = append(insns, asm.LoadMem(regTmp, regPtr, off+int16(4*word), asm.Word))
		if bits < 32 {
			mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
			insns = append(insns, asm.And.Imm32(regTmp, int32(g.order.Uint32(mask))))
		}
		insns = append(insns, asm.JNE.Imm32(regTmp, int32(g.order.Uint32(value)), miss))
	}
	return commented(fmt.Sprintf("filter: address at header offset %d in %s", off, p), insns)
}

// either emits "first or second": first jumps to miss (a label on
// second's first instruction) when it fails; when it holds, second is
// skipped. A first that emits nothing always holds.
func (g generator) either(miss string, first, second func(miss string) asm.Instructions) asm.Instructions {
	a := first(miss)
	if len(a) == 0 {
		return nil
	}
	b := second(g.reject)
	return append(append(a, skip(b)), labelled(miss, b)...)
}

// rejectLaterFragment jumps to target when the 16-bit field at off in the
// header at regPtr, masked with mask (as in memory), is not zero: the
// fragment offset of a fragment after the first.
func (g generator) rejectLaterFragment(off int16, mask []byte, target string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(regTmp, regPtr, off, asm.Half),
		asm.And.Imm32(regTmp, int32(g.order.Uint16(mask))),
		asm.JNE.Imm32(regTmp, 0, target),
	}
}

// walkExtensionHeaders follows the IPv6 extension headers from the next
// header in regProto, with regOff past the fixed header: a bounded loop
// whose count lives in the Source's scratch slot (no register is free
// across Fetch's helper call). It leaves the upper-layer protocol in
// regProto and its offset in regOff. A fragment after the first ends the
// walk (its protocol is known, but what follows is payload) and rejects
// port conditions; a chain longer than MaxExtensionHeaders is undecided.
func (g generator) walkExtensionHeaders() asm.Instructions {
	walk, fragment := g.label("ext_walk"), g.label("ext_fragment")
	laterFragment := g.label("transport")
	if g.f.hasPortCondition() {
		laterFragment = g.reject
	}
	count := g.src.Scratch()
	insns := asm.Instructions{
		asm.Mov.Imm(regTmp, 0).WithSource(asm.Comment(fmt.Sprintf("filter: IPv6 extension headers, at most %d", MaxExtensionHeaders))),
		asm.StoreMem(asm.R10, count, regTmp, asm.DWord),
		// The fragment header's test is first: the verifier explores a
		// taken jump last, so it meets the fragment path (regOff + 8)
		// at the next iteration within the other headers' (regOff +
		// 8..2048) and prunes it. Where regOff is precise (a Source
		// whose packet pointer is typed), the other order takes it
		// down every mix of both, 2^MaxExtensionHeaders paths.
		jumpBy(asm.JEq, regProto, protoFragment, 3).WithSymbol(walk),
		jumpBy(asm.JEq, regProto, protoHopByHop, 2),
		jumpBy(asm.JEq, regProto, protoRouting, 1),
		asm.JNE.Imm(regProto, protoDstOpts, g.label("transport")),
		asm.LoadMem(regTmp, asm.R10, count, asm.DWord),
		asm.JGE.Imm(regTmp, MaxExtensionHeaders, UndecidedLabel(g.reject, LongChain)),
		asm.Add.Imm(regTmp, 1),
		asm.StoreMem(asm.R10, count, regTmp, asm.DWord),
	}
	insns = append(insns, g.src.Fetch(regPtr, regOff, extHeaderLen, g.reject)...)
	if g.f.hasPortCondition() {
		insns = append(insns, asm.Mov.Imm(regPorts, 0)) // past the header read
	}
	insns = append(insns,
		asm.JEq.Imm(regProto, protoFragment, fragment),
		asm.LoadMem(regTmp, regPtr, extLen, asm.Byte),
		asm.Add.Imm(regTmp, 1),
		asm.LSh.Imm(regTmp, 3),
		asm.Add.Reg(regOff, regTmp),
		asm.LoadMem(regProto, regPtr, extNextHdr, asm.Byte),
		asm.Ja.Label(walk),
		asm.LoadMem(regProto, regPtr, extNextHdr, asm.Byte).WithSymbol(fragment),
	)
	insns = append(insns, g.rejectLaterFragment(extFragOffset, []byte{0xff, 0xf8}, laterFragment)...)
	return append(insns,
		asm.Add.Imm(regOff, extHeaderLen),
		asm.Ja.Label(walk),
	)
}

// transport checks the protocol and the ports.
func (g generator) transport() asm.Instructions {
	var insns asm.Instructions
	if g.f.Proto.Set {
		insns = append(insns, asm.JNE.Imm(regProto, int32(g.f.Proto.Number), g.reject))
	}
	if !g.f.hasPortCondition() {
		return insns
	}
	if !g.f.Proto.Set {
		insns = append(insns, g.checkCarriesPorts()...)
	}
	fetch := g.src.Fetch(regPorts, regOff, portsLen, g.reject)
	insns = append(insns, jumpBy(asm.JNE, regPorts, 0, int16(fetch.Size()/asm.InstructionSize)))
	insns = append(insns, fetch...)
	return append(insns, g.comparePorts()...)
}

// checkCarriesPorts rejects protocols without ports.
func (g generator) checkCarriesPorts() asm.Instructions {
	return asm.Instructions{
		jumpBy(asm.JEq, regProto, protoTCP, 3),
		jumpBy(asm.JEq, regProto, protoUDP, 2),
		jumpBy(asm.JEq, regProto, protoSCTP, 1),
		asm.JNE.Imm(regProto, protoUDPLite, g.reject),
	}
}

// comparePorts checks the port conditions against the ports at regPorts.
func (g generator) comparePorts() asm.Instructions {
	sport, dport := regTmp, regTmp2
	var insns asm.Instructions
	if g.f.Sport.Set || g.f.Port.Set {
		insns = append(insns, loadPort(sport, 0)...)
	}
	if g.f.Dport.Set || g.f.Port.Set {
		insns = append(insns, loadPort(dport, 2)...)
	}
	if g.f.Sport.Set {
		insns = append(insns, comparePortRange(sport, g.f.Sport, g.reject)...)
	}
	if g.f.Dport.Set {
		insns = append(insns, comparePortRange(dport, g.f.Dport, g.reject)...)
	}
	if g.f.Port.Set {
		insns = append(insns, g.either(g.label("port_dst"),
			func(miss string) asm.Instructions { return comparePortRange(sport, g.f.Port, miss) },
			func(miss string) asm.Instructions { return comparePortRange(dport, g.f.Port, miss) },
		)...)
	}
	return commented("filter: ports", insns)
}

// loadPort loads the port at off from regPorts into dst as a host-order
// number.
func loadPort(dst asm.Register, off int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(dst, regPorts, off, asm.Half),
		asm.HostTo(asm.BE, dst, asm.Half),
	}
}

// comparePortRange jumps to miss unless port lies in r.
func comparePortRange(port asm.Register, r PortRange, miss string) asm.Instructions {
	if r.Lo == r.Hi {
		return asm.Instructions{asm.JNE.Imm(port, int32(r.Lo), miss)}
	}
	var insns asm.Instructions
	if r.Lo > 0 {
		insns = append(insns, asm.JLT.Imm(port, int32(r.Lo), miss))
	}
	if r.Hi < 0xffff {
		insns = append(insns, asm.JGT.Imm(port, int32(r.Hi), miss))
	}
	return insns
}

// jumpBy is a conditional jump over the next n instructions, all single
// slot, for short hops within one function's code.
func jumpBy(op asm.JumpOp, dst asm.Register, value int32, n int16) asm.Instruction {
	return asm.Instruction{OpCode: op.Op(asm.ImmSource), Dst: dst, Constant: int64(value), Offset: n}
}

// skip jumps over insns.
func skip(insns asm.Instructions) asm.Instruction {
	return asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: int16(insns.Size() / asm.InstructionSize)}
}

// labelled puts label on the first of insns, which are not empty and whose
// first instruction has no label yet.
func labelled(label string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSymbol(label)
	return insns
}
