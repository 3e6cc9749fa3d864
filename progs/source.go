package progs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf/asm"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/layout"
)

// Stack frame shared by every generated program, as offsets from R10. The
// verifier insists on aligned stack access, so every slot is 8-aligned and a
// copied span of a kernel struct keeps the struct's own alignment.
const (
	slotArg   = -8  // the probe's struct sk_buff * or struct sock *
	slotAvail = -16 // bytes Fetch may read from the IP header on
	slotKey   = -48 // count key (a row's 4 bytes, a stackKey's 24)
	// slotScratch is the filter's (filter.Source.Scratch). It shares the
	// count key's bytes: the key is written only after the filter ran.
	slotScratch = slotKey
	slotOne     = -56  // the value 1, for a first map insert
	slotFetch   = -104 // filter.Source Fetch buffer
	fetchSize   = 48
	// slotSynth holds the IP header a socket-level row makes up.
	slotSynth = -152
	synthSize = 48
	// The span of the probed struct lies below the buffers.
	spanTop  = slotSynth
	maxStack = 512
)

// span is a run of a kernel struct's bytes that holds every field a Source
// needs, so that one bpf_probe_read_kernel call copies them all.
type span struct {
	start, size uint32 // in the struct
}

func newSpan(fields ...layout.Field) (span, error) {
	var present []layout.Field
	for _, f := range fields {
		if f.Size > 0 {
			present = append(present, f)
		}
	}
	sort.Slice(present, func(i, j int) bool { return present[i].Offset < present[j].Offset })
	start := present[0].Offset &^ 7
	last := present[len(present)-1]
	size := (last.Offset + last.Size - start + 7) &^ 7
	if int(size) > maxStack+spanTop {
		return span{}, fmt.Errorf("struct fields span %d bytes, more than the BPF stack holds", size)
	}
	return span{start, size}, nil
}

func (s span) base() int16 { return spanTop - int16(s.size) }

// slot is where the span keeps field f.
func (s span) slot(f layout.Field) int16 { return s.base() + int16(f.Offset-s.start) }

// load loads field f of the copied span.
func (s span) load(dst asm.Register, f layout.Field) asm.Instruction {
	return asm.LoadMem(dst, asm.R10, s.slot(f), sizeOf(f.Size))
}

// read copies the span from the struct at slotArg to the stack.
func (s span) read(reject string) asm.Instructions {
	insns := asm.Instructions{
		probed().WithSource(asm.Comment(fmt.Sprintf("copy %d bytes of the probed struct", s.size))),
		asm.Add.Imm(asm.R3, int32(s.start)),
	}
	return append(insns, probeRead(s.base(), int32(s.size), reject)...)
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

// fetch is the Fetch of both Sources: copy size bytes at R7 + off into the
// fetch buffer, after checking them against the bytes available. off is
// none of R1-R3, which the check and the call's arguments use.
func fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	if size > fetchSize {
		panic(fmt.Sprintf("filter fetch of %d bytes exceeds the %d-byte buffer", size, fetchSize))
	}
	if off >= asm.R1 && off <= asm.R3 {
		panic(fmt.Sprintf("filter fetch at an offset in %v, which fetch uses", off))
	}
	insns := append(checkAvailable(off, size, reject),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Reg(asm.R3, off),
	)
	insns = append(insns, probeRead(slotFetch, size, reject)...)
	return append(insns,
		asm.Mov.Reg(dst, asm.R10),
		asm.Add.Imm(dst, slotFetch),
	)
}

// ethertype is the immediate that an ETH_P_* value, stored in network byte
// order, has when loaded into a register.
func ethertype(order binary.ByteOrder, ethP uint16) int32 {
	return int32(order.Uint16(binary.BigEndian.AppendUint16(nil, ethP)))
}

const (
	ethPIP     = 0x0800
	ethPIPv6   = 0x86dd
	ethP8021Q  = 0x8100
	ethP8021AD = 0x88a8
)

// skbSource is the filter.Source of programs that see an skb: it reads the
// skb's fields as reads says, and copies packet bytes with
// bpf_probe_read_kernel. The program stores the skb pointer in slotArg
// first.
type skbSource struct {
	l     *layout.Layout
	reads reads
	span  span // the skb's fields, where reads copies them
	// fromData: the probe fires before the kernel sets skb->network_header
	// (net:netif_receive_skb), so the IP header is at skb->data.
	fromData bool
	// sockNet is skc_net, where the filter asks for the namespace of a
	// packet without a device (Netns); else its Size is 0.
	sockNet layout.Field
	labels  labels
}

// labels makes the jump labels of a Source unique: the filter calls a
// method once per address family path.
type labels int

func (n *labels) next(reject, name string) string {
	*n++
	return fmt.Sprintf("%s_%s%d", reject, name, *n)
}

// newSkbSource makes the Source of programs that see an skb; f is their
// filter, which tells what the Source must be able to read.
func newSkbSource(l *layout.Layout, r reads, fromData bool, f filter.Filter) (*skbSource, error) {
	sk := l.SkBuff
	sp, err := newSpan(sk.Head, sk.Data, sk.Len, sk.DataLen, sk.Protocol, sk.NetworkHeader)
	if err != nil {
		return nil, err
	}
	s := &skbSource{l: l, reads: r, span: sp, fromData: fromData}
	if f.Netns == 0 {
		return s, nil
	}
	if err := checkNetnsLayout(l); err != nil {
		return nil, err
	}
	if f.Ifindex == 0 {
		s.sockNet, err = socketNet(l)
	}
	return s, err
}

// checkNetnsLayout fails where l cannot tell a device's network namespace.
func checkNetnsLayout(l *layout.Layout) error {
	if l.NetDevice.Net.Size == 0 || l.Net.Inum.Size == 0 {
		return errors.New("the network namespace filter: the layout has no net_device nd_net or net ns.inum")
	}
	return nil
}

// socketNet is skc_net, where l has it and the namespace's inode number.
func socketNet(l *layout.Layout) (layout.Field, error) {
	sc, err := l.SockCommon()
	if err != nil {
		return layout.Field{}, err
	}
	if sc.Net.Size == 0 || l.Net.Inum.Size == 0 {
		return layout.Field{}, errors.New("the network namespace filter: the layout has no sock_common skc_net or net ns.inum")
	}
	return sc.Net, nil
}

// Ethertype reads the skb's fields and finds the IP header (locate), once
// for every later Fetch. It leaves the ethertype of the IP header:
// skb->protocol, but a packet the host makes has none until ip_local_out
// sets it, and a VLAN tag in the packet data makes it the tag's TPID. Both
// are rare: their code lies after the common path's.
func (s *skbSource) Ethertype(dst asm.Register, reject string) asm.Instructions {
	if dst == asm.R1 || dst == asm.R4 {
		panic(fmt.Sprintf("skbSource.Ethertype into %v, which it uses after setting dst", dst))
	}
	order := s.l.ByteOrder
	unset, tagged := s.labels.next(reject, "no_protocol"), s.labels.next(reject, "vlan")
	insns := append(s.skbFields(reject), s.locate(reject)...)
	insns = append(insns,
		s.loadSkb(dst, s.l.SkBuff.Protocol),
		asm.JEq.Imm(dst, ethertype(order, ethP8021Q), tagged),
		asm.JEq.Imm(dst, ethertype(order, ethP8021AD), tagged),
		asm.JNE.Imm(dst, 0, filter.Continue(reject, "Ethertype")),
	)
	version := s.versionEthertype(dst, reject)
	version[0] = version[0].WithSymbol(unset)
	tags := s.innerEthertype(dst, reject)
	tags[0] = tags[0].WithSymbol(tagged)
	return append(append(insns, version...), tags...)
}

// versionEthertype leaves in dst the ethertype that the IP version at the
// IP header tells, and goes on after Ethertype; other versions are no IP.
func (s *skbSource) versionEthertype(dst asm.Register, reject string) asm.Instructions {
	order := s.l.ByteOrder
	done := filter.Continue(reject, "Ethertype")
	insns := asm.Instructions{asm.Mov.Imm(asm.R4, 0).WithSource(asm.Comment("no skb->protocol yet: the IP version tells"))}
	insns = append(insns, fetch(asm.R1, asm.R4, 1, reject)...)
	return append(insns,
		asm.LoadMem(asm.R4, asm.R1, 0, asm.Byte),
		asm.RSh.Imm(asm.R4, 4),
		asm.Mov.Imm(dst, ethertype(order, ethPIP)),
		asm.JEq.Imm(asm.R4, 4, done),
		asm.Mov.Imm(dst, ethertype(order, ethPIPv6)),
		asm.JEq.Imm(asm.R4, 6, done),
		asm.Ja.Label(reject),
	)
}

// VLAN tags in the packet data, as the filter sees through them.
const (
	maxVLANTags  = 2 // 802.1ad, then 802.1Q (QinQ)
	vlanTagLen   = 4 // TCI, then the next ethertype
	ethertypeLen = 2
)

// innerEthertype leaves in dst the ethertype after the VLAN tags in the
// packet data, and moves the IP header past them. The ethertype just
// before the network header tells where the tags are: where the network
// header is at the first tag (skb->data at net:netif_receive_skb, before
// the kernel untags, or a packet untagged once), that ethertype is a TPID
// and the tags follow it, 4 bytes each (TCI, then the next ethertype);
// where a tag was put into the data after the network header was set
// (validate_xmit_vlan), it is the inner ethertype already. A third tag
// leaves a TPID in dst, which is no IP. It ends where Ethertype does.
func (s *skbSource) innerEthertype(dst asm.Register, reject string) asm.Instructions {
	order := s.l.ByteOrder
	skipped := s.labels.next(reject, "vlan_skipped")
	skip := asm.R4 // bytes of tags to skip
	insns := asm.Instructions{
		asm.JLT.Imm(asm.R1, ethertypeLen, reject).WithSource(asm.Comment(fmt.Sprintf("VLAN: the ethertype after up to %d tags in the data", maxVLANTags))), // no ethertype before the network header
		asm.LoadMem(asm.R3, asm.R10, slotAvail, asm.Word),
		asm.JLT.Imm(asm.R3, vlanTagLen*maxVLANTags, reject),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Imm(asm.R3, -ethertypeLen),
	}
	insns = append(insns, probeRead(slotFetch, ethertypeLen+vlanTagLen*maxVLANTags, reject)...)
	insns = append(insns,
		asm.Mov.Imm(skip, 0),
		asm.LoadMem(dst, asm.R10, slotFetch, asm.Half),
	)
	// While the ethertype in dst is a TPID, a tag follows: skip it.
	for tag := int16(1); tag <= maxVLANTags; tag++ {
		tpid := s.labels.next(reject, "vlan_tag")
		insns = append(insns,
			asm.JEq.Imm(dst, ethertype(order, ethP8021Q), tpid),
			asm.JNE.Imm(dst, ethertype(order, ethP8021AD), skipped),
			asm.Mov.Imm(skip, int32(vlanTagLen*tag)).WithSymbol(tpid),
			asm.LoadMem(dst, asm.R10, slotFetch+vlanTagLen*tag, asm.Half),
		)
	}
	// There are at least vlanTagLen*maxVLANTags bytes to skip.
	return append(insns,
		asm.Add.Reg(asm.R7, skip).WithSymbol(skipped),
		asm.LoadMem(asm.R1, asm.R10, slotAvail, asm.Word),
		asm.Sub.Reg(asm.R1, skip),
		asm.StoreMem(asm.R10, slotAvail, asm.R1, asm.Word),
	)
}

func (s *skbSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	return append(s.device(reject), s.reads.field(dst, s.l.NetDevice.Ifindex, reject)...)
}

func (s *skbSource) DeviceNetns(dst asm.Register, reject string) asm.Instructions {
	return append(s.device(reject), s.reads.netnsInode(s.l, dst, s.l.NetDevice.Net, reject)...)
}

// Netns reads the device's namespace, else the socket's. A device that
// cannot be read counts as none: skb->dev shares its bytes with
// dev_scratch, which UDP writes while a datagram waits in a socket's
// queue (and drops it there with no socket when the socket closes).
func (s *skbSource) Netns(dst asm.Register, reject, undecided string) asm.Instructions {
	noDevice := s.labels.next(reject, "no_device")
	insns := s.reads.argField(asm.R3, s.l.SkBuff.Dev, reject)
	insns = append(insns, asm.JEq.Imm(asm.R3, 0, noDevice))
	insns = append(insns, s.reads.netnsInode(s.l, dst, s.l.NetDevice.Net, noDevice)...)
	insns = append(insns, asm.Ja.Label(filter.Continue(reject, "Netns")))
	sock := s.reads.argField(asm.R3, s.l.SkBuff.Sk, reject)
	sock[0] = sock[0].WithSymbol(noDevice).WithSource(asm.Comment("no device: the socket's namespace"))
	insns = append(insns, sock...)
	insns = append(insns, asm.JEq.Imm(asm.R3, 0, undecided))
	return append(insns, s.reads.netnsInode(s.l, dst, s.sockNet, reject)...)
}

// device leaves skb->dev in R3, and rejects packets without one.
func (s *skbSource) device(reject string) asm.Instructions {
	return append(s.reads.argField(asm.R3, s.l.SkBuff.Dev, reject), asm.JEq.Imm(asm.R3, 0, reject))
}

// regSkb holds the skb pointer for direct loads of its fields (in
// Ethertype, whose locate leaves R5 alone otherwise).
const regSkb = asm.R5

// skbFields makes the skb's fields loadable with loadSkb: it copies their
// span, or leaves the typed skb pointer in regSkb.
func (s *skbSource) skbFields(reject string) asm.Instructions {
	if s.reads.typed {
		return asm.Instructions{asm.LoadMem(regSkb, asm.R10, slotArg, asm.DWord)}
	}
	return s.span.read(reject)
}

// loadSkb loads field f of the skb, after skbFields.
func (s *skbSource) loadSkb(dst asm.Register, f layout.Field) asm.Instruction {
	if s.reads.typed {
		return asm.LoadMem(dst, regSkb, int16(f.Offset), sizeOf(f.Size))
	}
	return s.span.load(dst, f)
}

// probed leaves the address of the probed struct in R3.
func probed() asm.Instruction { return asm.LoadMem(asm.R3, asm.R10, slotArg, asm.DWord) }

// reads is how a program reads the kernel structs that the probed pointer
// leads to: copied with bpf_probe_read_kernel, or, where the pointer is
// BTF-typed (typed), with direct loads that the verifier checks against
// BTF and that read 0 where the memory faults; and, with packet, the
// packet's bytes too.
type reads struct{ typed, packet bool }

// argField leaves field f of the probed struct in dst.
func (r reads) argField(dst asm.Register, f layout.Field, reject string) asm.Instructions {
	return append(asm.Instructions{probed()}, r.field(dst, f, reject)...)
}

// field leaves in dst field f of the kernel struct that R3 points to.
func (r reads) field(dst asm.Register, f layout.Field, reject string) asm.Instructions {
	if r.typed {
		return asm.Instructions{asm.LoadMem(dst, asm.R3, int16(f.Offset), sizeOf(f.Size))}
	}
	insns := asm.Instructions{asm.Add.Imm(asm.R3, int32(f.Offset))}
	insns = append(insns, probeRead(slotFetch, int32(f.Size), reject)...)
	return append(insns, asm.LoadMem(dst, asm.R10, slotFetch, sizeOf(f.Size)))
}

// netnsInode leaves in dst the inode number of the network namespace that
// field net (a struct net *) of the struct R3 points to names; a NULL one
// (a typed load that faulted) jumps to reject.
func (r reads) netnsInode(l *layout.Layout, dst asm.Register, net layout.Field, reject string) asm.Instructions {
	insns := r.field(asm.R3, net, reject)
	insns = append(insns, asm.JEq.Imm(asm.R3, 0, reject))
	return append(insns, r.field(dst, l.Net.Inum, reject)...)
}

// locate finds the IP header at the network header and how many linear
// bytes follow it: R1 = its offset from head, R7 = head + R1; slotAvail =
// linear end - R1, where the linear end is (data - head) + (len -
// data_len).
func (s *skbSource) locate(reject string) asm.Instructions {
	sk := s.l.SkBuff
	located := s.labels.next(reject, "located")
	insns := asm.Instructions{
		s.loadSkb(asm.R1, sk.Data),
		s.loadSkb(asm.R2, sk.Head),
		asm.Sub.Reg(asm.R1, asm.R2), // R1 = data offset
		s.loadSkb(asm.R3, sk.Len),
		s.loadSkb(asm.R4, sk.DataLen),
		asm.Sub.Reg(asm.R3, asm.R4),
		asm.Add.Reg(asm.R3, asm.R1), // R3 = linear end offset
	}
	if !s.fromData {
		// network_header is 0 until the kernel first sets it.
		insns = append(insns,
			s.loadSkb(asm.R4, sk.NetworkHeader),
			asm.JEq.Imm(asm.R4, 0, located),
			asm.Mov.Reg(asm.R1, asm.R4),
		)
	}
	return append(insns,
		asm.JGT.Reg(asm.R1, asm.R3, reject).WithSymbol(located),
		asm.Sub.Reg(asm.R3, asm.R1),
		asm.StoreMem(asm.R10, slotAvail, asm.R3, asm.Word),
		asm.Mov.Reg(asm.R7, asm.R2),
		asm.Add.Reg(asm.R7, asm.R1),
	)
}

// Setup has nothing left to do: Ethertype located the IP header.
func (s *skbSource) Setup(reject string) asm.Instructions { return nil }

func (s *skbSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	if s.reads.packet {
		return pointAt(dst, off, size, reject)
	}
	return fetch(dst, off, size, reject)
}

// pointAt is the Fetch of a Source that reads the packet directly: it
// checks the size bytes at R7 + off against the bytes available, and
// points dst at them.
func pointAt(dst, off asm.Register, size int32, reject string) asm.Instructions {
	return append(checkAvailable(off, size, reject),
		asm.Mov.Reg(dst, asm.R7),
		asm.Add.Reg(dst, off),
	)
}

// checkAvailable jumps to reject unless size bytes at off lie within the
// bytes available; it uses R1 and R2.
func checkAvailable(off asm.Register, size int32, reject string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, off),
		asm.Add.Imm(asm.R1, size),
		asm.LoadMem(asm.R2, asm.R10, slotAvail, asm.Word),
		asm.JGT.Reg(asm.R1, asm.R2, reject),
	}
}

func (s *skbSource) Scratch() int16 { return slotScratch }

// sockSource is the filter.Source of socket-level rows (tcp_sendmsg,
// udp_recvmsg, ...), which see a struct sock and no packet: it makes up the
// IP and transport header of the socket's traffic in the stack, from the
// socket's addresses and ports, and lets the filter read that. A packet
// received has the peer as source; one sent, as destination.
type sockSource struct {
	l     *layout.Layout
	sk    layout.SockCommon
	span  span
	proto uint8 // the transport the probed function handles
	// received: the socket receives, so the peer is the source.
	received bool
	labels   labels
}

// newSockSource makes the Source of socket-level rows; f is their filter.
func newSockSource(l *layout.Layout, proto uint8, received bool, f filter.Filter) (*sockSource, error) {
	sk, err := l.SockCommon()
	if err != nil {
		return nil, err
	}
	if f.Netns != 0 {
		if _, err := socketNet(l); err != nil {
			return nil, err
		}
	}
	sp, err := newSpan(sk.Family, sk.Num, sk.Dport, sk.Daddr, sk.RcvSaddr, sk.V6Daddr, sk.V6RcvSaddr)
	return &sockSource{l: l, sk: sk, span: sp, proto: proto, received: received}, err
}

const (
	afInet  = 2
	afInet6 = 10
	// header lengths of the made-up headers, kept in slotAvail until Setup
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// Ethertype copies the socket's fields and says IPv4 for AF_INET sockets and
// for AF_INET6 sockets whose peer is IPv4-mapped (their packets are IPv4 on
// the wire), IPv6 for the other AF_INET6 sockets.
func (s *sockSource) Ethertype(dst asm.Register, reject string) asm.Instructions {
	order := s.l.ByteOrder
	v4, v6 := s.labels.next(reject, "sock_v4"), s.labels.next(reject, "sock_v6")
	insns := append(s.span.read(reject),
		s.span.load(asm.R1, s.sk.Family),
		asm.JEq.Imm(asm.R1, afInet, v4),
	)
	if s.sk.V6Daddr.Size == 0 { // a kernel without IPv6
		return append(insns,
			asm.Ja.Label(reject),
			asm.StoreImm(asm.R10, slotAvail, ipv4HeaderLen, asm.Word).WithSymbol(v4),
			asm.Mov.Imm(dst, ethertype(order, ethPIP)),
		)
	}
	insns = append(insns, asm.JNE.Imm(asm.R1, afInet6, reject))
	mapped := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}
	for i := 0; i < 3; i++ {
		f := layout.Field{Offset: s.sk.V6Daddr.Offset + uint32(4*i), Size: 4}
		insns = append(insns,
			s.span.load(asm.R1, f),
			asm.JNE.Imm32(asm.R1, int32(order.Uint32(mapped[4*i:])), v6),
		)
	}
	return append(insns,
		asm.StoreImm(asm.R10, slotAvail, ipv4HeaderLen, asm.Word).WithSymbol(v4),
		asm.Mov.Imm(dst, ethertype(order, ethPIP)),
		asm.Ja.Label(filter.Continue(reject, "Ethertype")),
		asm.StoreImm(asm.R10, slotAvail, ipv6HeaderLen, asm.Word).WithSymbol(v6),
		asm.Mov.Imm(dst, ethertype(order, ethPIPv6)),
	)
}

// Ifindex: a socket-level row has no device, so it never matches -I.
func (s *sockSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	return asm.Instructions{asm.Ja.Label(reject)}
}

// DeviceNetns: no device, as for Ifindex.
func (s *sockSource) DeviceNetns(dst asm.Register, reject string) asm.Instructions {
	return asm.Instructions{asm.Ja.Label(reject)}
}

// Netns is the socket's namespace: a socket-level row always has one.
func (s *sockSource) Netns(dst asm.Register, reject, undecided string) asm.Instructions {
	return append(asm.Instructions{probed()}, reads{}.netnsInode(s.l, dst, s.sk.Net, reject)...)
}

// Setup writes the made-up header to slotSynth and points R7 at it.
func (s *sockSource) Setup(reject string) asm.Instructions {
	order := s.l.ByteOrder
	v6, done := s.labels.next(reject, "synth_v6"), s.labels.next(reject, "synth_done")
	word := func(b ...byte) int64 { return int64(order.Uint32(b)) }
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R10, slotAvail, asm.Word),
		asm.JEq.Imm(asm.R1, ipv6HeaderLen, v6),
		// IPv4: version 4, IHL 5, no fragment, protocol.
		asm.StoreImm(asm.R10, slotSynth, word(0x45, 0, 0, 0), asm.Word),
		asm.StoreImm(asm.R10, slotSynth+4, 0, asm.Word),
		asm.StoreImm(asm.R10, slotSynth+8, word(64, s.proto, 0, 0), asm.Word),
	}
	insns = append(insns, s.addresses(slotSynth+12, s.sk.RcvSaddr, s.sk.Daddr)...)
	insns = append(insns, s.ports(slotSynth+ipv4HeaderLen, ipv4HeaderLen)...)
	insns = append(insns, asm.Ja.Label(done))
	if s.sk.V6Daddr.Size != 0 {
		v6insns := asm.Instructions{
			// IPv6: version 6, next header.
			asm.StoreImm(asm.R10, slotSynth, word(0x60, 0, 0, 0), asm.Word),
			asm.StoreImm(asm.R10, slotSynth+4, word(0, 0, s.proto, 64), asm.Word),
		}
		v6insns = append(v6insns, s.addresses(slotSynth+8, s.sk.V6RcvSaddr, s.sk.V6Daddr)...)
		v6insns = append(v6insns, s.ports(slotSynth+ipv6HeaderLen, ipv6HeaderLen)...)
		v6insns[0] = v6insns[0].WithSymbol(v6)
		insns = append(insns, v6insns...)
	}
	return append(insns,
		asm.Mov.Reg(asm.R7, asm.R10).WithSymbol(done),
		asm.Add.Imm(asm.R7, slotSynth),
	)
}

// addresses copies the source and then the destination address to slot.
func (s *sockSource) addresses(slot int16, local, peer layout.Field) asm.Instructions {
	src, dst := local, peer
	if s.received {
		src, dst = peer, local
	}
	var insns asm.Instructions
	for i, f := range []layout.Field{src, dst} {
		for w := uint32(0); w < f.Size; w += 4 {
			insns = append(insns,
				s.span.load(asm.R1, layout.Field{Offset: f.Offset + w, Size: 4}),
				asm.StoreMem(asm.R10, slot+int16(uint32(i)*f.Size+w), asm.R1, asm.Word),
			)
		}
	}
	return insns
}

// ports writes the source and destination port at slot, in network byte
// order like a packet's: skc_dport is stored so already, skc_num is not.
func (s *sockSource) ports(slot int16, headerLen int32) asm.Instructions {
	local, peer := slot, slot+2
	if s.received {
		local, peer = slot+2, slot
	}
	return asm.Instructions{
		s.span.load(asm.R1, s.sk.Num),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(asm.R10, local, asm.R1, asm.Half),
		s.span.load(asm.R1, s.sk.Dport),
		asm.StoreMem(asm.R10, peer, asm.R1, asm.Half),
		asm.StoreImm(asm.R10, slotAvail, int64(headerLen+4), asm.Word),
	}
}

func (s *sockSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	return fetch(dst, off, size, reject)
}

func (s *sockSource) Scratch() int16 { return slotScratch }
