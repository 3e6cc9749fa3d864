package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// framesCommand sends -n raw Ethernet frames through an AF_PACKET socket on
// -dev, each one UDP datagram behind the VLAN tags of -tags (outermost
// first), so that the receiving kernel finds the tags in the packet data,
// and for IPv6 behind -ext destination options headers:
//
//	traffic frames -n N -dev DEV [-tags TPID:VID,...] [-ext N] -src IP:PORT DST_IP:PORT
//
// TPIDs are hex (8100, 88a8). Frames go to the broadcast address, which a
// veth peer takes whatever its own address.
func framesCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("frames")
	n := fs.Int("n", 1, "number of frames")
	dev := fs.String("dev", "", "device to send on")
	var tags tagsFlag
	fs.Var(&tags, "tags", "VLAN tags TPID:VID, outermost first")
	var src sourceFlag
	fs.Var(&src, "src", "source IP:PORT")
	ext := fs.Int("ext", 0, "IPv6 destination options headers before the UDP header")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkCount("frames", *n); err != nil {
		return err
	}
	if *dev == "" {
		return fmt.Errorf("%w: frames: want -dev DEV", errUsage)
	}
	dst, err := destination(fs)
	if err != nil {
		return err
	}
	if *ext < 0 || *ext > 0 && !dst.Addr().Is6() {
		return fmt.Errorf("%w: frames: -ext %d: want a number of headers, with an IPv6 destination", errUsage, *ext)
	}
	if src.addr.Port() == 0 {
		return fmt.Errorf("%w: frames: want -src IP:PORT: a raw frame has no socket to choose them", errUsage)
	}
	from, err := src.localFor(dst)
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(*dev)
	if err != nil {
		return fmt.Errorf("frames: %w", err)
	}
	frame := ethernetFrame(ifi.HardwareAddr, tags, udpDatagram(from, dst, pattern(32), *ext), dst.Addr().Is6())
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("frames: packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index}
	sent, firstErr := sendEach(*n, 0, func() error { return unix.Sendto(fd, frame, 0, to) })
	fmt.Fprintf(stdout, "frames: sent %d of %d frames with tags %q from %s to %s on %s\n", sent, *n, tags.String(), from, dst, *dev)
	if firstErr != nil {
		return fmt.Errorf("frames: %d of %d frames not sent, first error: %w", *n-sent, *n, firstErr)
	}
	return nil
}

// vlanTag is one 802.1Q or 802.1ad tag.
type vlanTag struct{ tpid, vid uint16 }

// tagsFlag is -tags TPID:VID,...
type tagsFlag []vlanTag

func (f *tagsFlag) String() string {
	var s []string
	for _, t := range *f {
		s = append(s, fmt.Sprintf("%04x:%d", t.tpid, t.vid))
	}
	return strings.Join(s, ",")
}

func (f *tagsFlag) Set(v string) error {
	*f = nil
	for _, tag := range strings.Split(v, ",") {
		tpid, vid, ok := strings.Cut(tag, ":")
		p, perr := strconv.ParseUint(tpid, 16, 16)
		id, verr := strconv.ParseUint(vid, 10, 12)
		if !ok || perr != nil || verr != nil {
			return fmt.Errorf("tag %q: want TPID:VID, TPID in hex, VID 0 to 4095", tag)
		}
		*f = append(*f, vlanTag{uint16(p), uint16(id)})
	}
	return nil
}

// ethernetFrame puts ip behind an Ethernet header to the broadcast address
// and the tags.
func ethernetFrame(src net.HardwareAddr, tags []vlanTag, ip []byte, ipv6 bool) []byte {
	frame := append(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, src...)
	for _, t := range tags {
		frame = binary.BigEndian.AppendUint16(frame, t.tpid)
		frame = binary.BigEndian.AppendUint16(frame, t.vid)
	}
	ethertype := uint16(unix.ETH_P_IP)
	if ipv6 {
		ethertype = unix.ETH_P_IPV6
	}
	return append(binary.BigEndian.AppendUint16(frame, ethertype), ip...)
}

// udpDatagram returns the IP packet of a UDP datagram, checksums and all,
// for IPv6 behind ext destination options headers.
func udpDatagram(src, dst netip.AddrPort, payload []byte, ext int) []byte {
	udp := binary.BigEndian.AppendUint16(nil, src.Port())
	udp = binary.BigEndian.AppendUint16(udp, dst.Port())
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(binary.BigEndian.AppendUint16(udp, 0), payload...)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	// The pseudo-header: addresses, protocol and UDP length.
	sum := checksum(s, d, []byte{0, unix.IPPROTO_UDP}, udp[4:6], udp)
	if sum == 0 {
		sum = 0xffff // 0 would say there is no checksum
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	if dst.Addr().Is6() {
		headers := append(destinationOptions(ext, unix.IPPROTO_UDP), udp...)
		ip := []byte{0x60, 0, 0, 0}
		ip = binary.BigEndian.AppendUint16(ip, uint16(len(headers)-1))
		ip = append(ip, headers[0], 64)
		return append(append(append(ip, s...), d...), headers[1:]...)
	}
	ip := []byte{0x45, 0}
	ip = binary.BigEndian.AppendUint16(ip, uint16(20+len(udp)))
	ip = append(ip, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0)
	ip = append(append(ip, s...), d...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, udp...)
}

// destinationOptions returns the next header field of an IPv6 header
// followed by n destination options headers and then proto: the field, then
// the headers, 8 bytes each, whose one option is padding (PadN of 4).
func destinationOptions(n int, proto byte) []byte {
	if n == 0 {
		return []byte{proto}
	}
	b := []byte{unix.IPPROTO_DSTOPTS}
	for i := range n {
		next := byte(unix.IPPROTO_DSTOPTS)
		if i == n-1 {
			next = proto
		}
		b = append(b, next, 0, 1, 4, 0, 0, 0, 0)
	}
	return b
}

// checksum is the Internet checksum of the parts, each of even length but
// the last.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	for _, p := range parts {
		for i := 0; i < len(p); i += 2 {
			word := uint32(p[i]) << 8
			if i+1 < len(p) {
				word |= uint32(p[i+1])
			}
			sum += word
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
