package filter

import "github.com/cilium/ebpf/asm"

// Source is how generated filter code reaches the packet it examines. The
// filter never touches memory itself: every program kind supplies its own
// Source (tracing programs copy from skb->head with bpf_probe_read_kernel;
// direct-packet-access programs bounds-check against data_end), so the same
// filter instructions serve every probe.
//
// Register contract, shared by the filter and every Source:
//   - R6 holds the program context. The caller sets it; nobody else writes it.
//   - R7 belongs to the Source (for example a pointer to the network header,
//     set in Setup). The filter never writes it.
//   - R8 and R9 belong to the filter. A Source never writes them.
//   - R0-R5 are scratch: any Source method may clobber them.
//
// Every method that can fail jumps to reject; otherwise it falls through,
// or, from code it places after its own, jumps to Continue(reject, method)
// with its result set.
type Source interface {
	// Ethertype leaves the ethertype of the packet's IP header (an ETH_P_*
	// value: skb->protocol, or the ethertype behind the VLAN tags in the
	// packet data) in dst exactly as it is stored in memory, that is in
	// network byte order, zero-extended. A packet without an IP header
	// may jump to reject.
	Ethertype(dst asm.Register, reject string) asm.Instructions

	// Ifindex leaves the index of the packet's network device in dst; a
	// packet without a device jumps to reject.
	Ifindex(dst asm.Register, reject string) asm.Instructions

	// DeviceNetns leaves in dst the inode number of the network namespace
	// of the packet's device; a packet without a device jumps to reject.
	DeviceNetns(dst asm.Register, reject string) asm.Instructions

	// Netns leaves in dst the inode number of the packet's network
	// namespace: its device's, else its socket's. A packet with neither
	// jumps to undecided.
	Netns(dst asm.Register, reject, undecided string) asm.Instructions

	// Setup runs once, after the Ethertype check and before the first
	// Fetch, for whatever state Fetch needs (it may write R7).
	Setup(reject string) asm.Instructions

	// Fetch makes size bytes of the packet, starting off bytes past the
	// start of the IP header (past the VLAN tags Ethertype saw through),
	// readable at [dst+0, dst+size) with asm.LoadMem. off is
	// a register holding a non-negative scalar that the filter has bounded.
	// Bytes outside the packet's linear data, or that cannot be read, jump
	// to reject. dst must be one of R0-R5.
	Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions

	// Scratch is an 8-byte, 8-aligned stack slot, as an offset from R10,
	// that the filter code may use while it runs.
	Scratch() int16
}

// Continue is the label that the filter code puts on its instruction right
// after the code of the Source method named method ("Ethertype", "Netns"),
// so that the method's code can end on a real instruction of the filter.
func Continue(reject, method string) string {
	return reject + "_filter_after_" + method
}
