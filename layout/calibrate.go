package layout

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/skbstat/skbstat/internal/lab"
	"github.com/skbstat/skbstat/internal/tracefs"
)

// Calibration tells how a calibrated Layout was found.
type Calibration struct {
	// Took is how long calibration took.
	Took time.Duration
	// Missing names what could not be calibrated, and so which filters
	// are unavailable, with the reason.
	Missing []string
}

// The windows of kernel memory calibration reads: enough of the sk_buff to
// hold every member it searches (224-232 bytes on 64-bit kernels), enough
// behind each of its pointers to hold the Ethernet frame, the start of the
// socket and the net_device's name and index, and a whole net_device in
// chunks, each read on its own so that one unreadable page loses one chunk.
const (
	skbWindow       = 256
	pointeeWindow   = 512
	netDeviceWindow = 4096
	chunk           = 512
)

// calibrationTracepoint is where the packets are recorded: every packet the
// host sends passes it, with the Ethernet header just pushed, skb->dev set
// and skb->sk its socket.
const calibrationGroup, calibrationName = "net", "net_dev_queue"

// firstLen is the skb->len of the first calibration packet; packet k has
// firstLen+k. An unusual length, so that the recorder copies little else.
const firstLen = 0x1c3

// pagedBytes of one packet's payload are put in page fragments.
const pagedBytes = 100

// Calibrate learns the kernel's layout from the kernel itself: it sends
// packets whose every byte it knows in lab, copies the kernel memory around
// their sk_buffs at a tracepoint, and finds each field by the values it must
// hold. It needs tracefs, perf tracepoints and bpf_probe_read_kernel, not BTF.
func Calibrate(lb *lab.Lab) (*Layout, error) {
	start := time.Now()
	dir, err := tracefs.Mount()
	if err != nil {
		return nil, err
	}
	f, err := tracefs.ReadFormat(dir, calibrationGroup, calibrationName)
	if err != nil {
		return nil, err
	}
	skb, ok1 := f.Field("skbaddr")
	length, ok2 := f.Field("len")
	if !ok1 || !ok2 || (skb.Size != 4 && skb.Size != 8) || length.Size != 4 {
		return nil, fmt.Errorf("tracepoint %s:%s has no skbaddr and len fields of the expected sizes", calibrationGroup, calibrationName)
	}
	// A pointer in the record is as wide as the kernel's pointers, which
	// may be wider than this binary's.
	s := searcher{order: binary.NativeEndian, ptrSize: int(skb.Size)}
	c := calibrator{lab: lb, s: s, skb: skb, len: length, packets: calibrationPackets(lb)}
	l, err := c.run()
	if err != nil {
		return nil, fmt.Errorf("calibration: %w (pass --btf FILE with this kernel's BTF instead)", err)
	}
	l.Calibration.Took = time.Since(start)
	return l, nil
}

// calibrationPackets are the packets calibration sends: through each lab
// device, IPv4 and IPv6, and one whose payload is partly in page fragments;
// on the host's loopback, the same over lo.
func calibrationPackets(lb *lab.Lab) []lab.Packet {
	var ps []lab.Packet
	add := func(p lab.Packet) {
		if !p.IPv6 || lb.IPv6 {
			ps = append(ps, p)
		}
	}
	if len(lb.Devices) == 0 {
		add(lab.Packet{})
		add(lab.Packet{Paged: pagedBytes})
		add(lab.Packet{IPv6: true})
	}
	for i := range lb.Devices {
		d := &lb.Devices[i]
		add(lab.Packet{Via: d})
		add(lab.Packet{Via: d, IPv6: true})
		if i == 0 {
			add(lab.Packet{Via: d, Paged: pagedBytes})
		}
	}
	for k := range ps {
		ps[k].Payload = firstLen + k - ethHeaderLen - int(ipHeaderLen(ps[k].IPv6)) - udpHeaderLen
	}
	return ps
}

const udpHeaderLen = 8

// udpPayload is where a UDP datagram's payload starts in its Ethernet frame.
func udpPayload(ipv6 bool) uint32 { return ethHeaderLen + ipHeaderLen(ipv6) + udpHeaderLen }

// calibrator runs the two calibration passes.
type calibrator struct {
	lab      *lab.Lab
	s        searcher
	skb, len tracefs.Field
	packets  []lab.Packet
}

func (c *calibrator) run() (*Layout, error) {
	ptr := uint32(c.s.ptrSize)
	first := []window{{size: skbWindow}}
	for off := uint32(0); off < skbWindow; off += ptr {
		first = append(first, window{path: []uint32{off}, size: pointeeWindow, magic: true})
	}
	samples, err := c.pass(first, c.isOwn)
	if err != nil {
		return nil, err
	}
	h, err := c.s.findSkb(samples)
	if err != nil {
		return nil, err
	}
	dev, ifindex, err := c.s.findDev(samples)
	if err != nil {
		return nil, err
	}
	sk, sc, err := c.s.findSock(samples)
	if err != nil {
		return nil, err
	}
	l := &Layout{
		ByteOrder:   c.s.order,
		PointerSize: c.s.ptrSize,
		SkBuff: SkBuff{Head: h.head, Data: h.data, Len: h.len, DataLen: h.dataLen, Protocol: h.protocol,
			NetworkHeader: h.network, TransportHeader: h.transport, MacHeader: h.macHeader, Dev: dev, Sk: sk},
		NetDevice:   NetDevice{Ifindex: ifindex},
		Source:      "calibration",
		Calibration: &Calibration{},
	}
	if ifindex.Size == 0 {
		l.Calibration.Missing = append(l.Calibration.Missing, fmt.Sprintf("-I (net_device ifindex): %v", c.lab.NoDevices))
	}
	if !c.lab.IPv6 {
		l.Calibration.Missing = append(l.Calibration.Missing, "IPv6 socket addresses: IPv6 is off")
	}
	// Only -I and --netns need the namespace: where it cannot be found,
	// the rest of the layout serves all the same.
	if err := c.findNet(l, sk, &sc, samples); err != nil {
		l.Calibration.Missing = append(l.Calibration.Missing, fmt.Sprintf("the network namespace of devices and sockets: %v", err))
	}
	l.sock = &sc
	return l, nil
}

// findNet runs the second pass, which follows skb->dev and skb->sk to
// their network namespace.
func (c *calibrator) findNet(l *Layout, sk Field, sc *SockCommon, first []sample) error {
	ptr := uint32(c.s.ptrSize)
	dev := l.SkBuff.Dev.Offset
	// Window 0 is the frame, to recognize the packet by.
	ws := []window{{path: []uint32{l.SkBuff.Data.Offset}, size: pointeeWindow, magic: true}}
	for off := uint32(0); off < netDeviceWindow; off += chunk {
		ws = append(ws, window{path: []uint32{dev}, off: off, size: chunk})
	}
	chunks := len(ws)
	for off := uint32(0); off < pointeeWindow; off += ptr {
		ws = append(ws, window{path: []uint32{sk.Offset, off}, size: pointeeWindow})
	}
	second, err := c.pass(ws, func(sm sample) bool { return isOwnFrame(sm, sm.rec.windows[0]) })
	if err != nil {
		return err
	}
	var nss []netSample
	for i, sm := range second {
		ns := netSample{inode: c.lab.NetnsInode, sock: c.s.pointee(first[i], sk.Offset), pointees: sm.rec.windows[chunks:]}
		for _, b := range sm.rec.windows[1:chunks] {
			if b == nil {
				b = make([]byte, chunk)
			}
			ns.dev = append(ns.dev, b...)
		}
		nss = append(nss, ns)
	}
	skcNet, ndNet, inum, err := c.s.findNet(nss, l.NetDevice.Ifindex)
	if err != nil {
		return err
	}
	sc.Net, l.NetDevice.Net, l.Net.Inum = skcNet, ndNet, inum
	return nil
}

// pass records c's packets with a recorder making windows, and returns them
// as samples. own recognizes a packet's record by its magic payload: the
// tracepoint is global, and other packets of the same length may pass it.
func (c *calibrator) pass(ws []window, own func(sample) bool) ([]sample, error) {
	r := &recorder{skb: c.skb, len: c.len, ptrSize: c.s.ptrSize, windows: ws, minLen: firstLen, kinds: uint32(len(c.packets)),
		magic: c.lab.Magic[:], order: c.s.order, magicAt: []uint32{udpPayload(false), udpPayload(true)}}
	rec, err := r.start(calibrationGroup, calibrationName)
	if err != nil {
		return nil, err
	}
	// Meanwhile the recorder copies only packets of its unusual lengths.
	defer c.lab.Later(rec.close)
	for _, p := range c.packets {
		if err := c.lab.Send(p); err != nil {
			return nil, fmt.Errorf("send a calibration packet: %w", err)
		}
	}
	var samples []sample
	for k, p := range c.packets {
		sm := c.sample(p)
		rc, found, err := rec.record(uint32(k))
		if err != nil {
			return nil, err
		}
		sm.rec = rc
		if !found || !own(sm) {
			return nil, fmt.Errorf("calibration packet %d (%s) was not seen at %s:%s", k, describe(p), calibrationGroup, calibrationName)
		}
		samples = append(samples, sm)
	}
	return samples, nil
}

// describe names packet p for messages.
func describe(p lab.Packet) string {
	family, via := "IPv4", "over lo"
	if p.IPv6 {
		family = "IPv6"
	}
	if p.Via != nil {
		via = "through " + p.Via.Name
	}
	return fmt.Sprintf("%s %s, %d bytes, %d paged", family, via, p.Payload, p.Paged)
}

// isOwn reports whether one of the pointers of sm's record points at its
// Ethernet frame.
func (c *calibrator) isOwn(sm sample) bool {
	for off := uint32(0); int(off)/c.s.ptrSize+1 < len(sm.rec.windows); off += uint32(c.s.ptrSize) {
		if isOwnFrame(sm, c.s.pointee(sm, off)) {
			return true
		}
	}
	return false
}

// sample is what calibration knows of packet p.
func (c *calibrator) sample(p lab.Packet) sample {
	src, dst := c.lab.Addrs(p)
	sm := sample{ipv6: p.IPv6, src: src, dst: dst, paged: uint32(p.Paged), magic: c.lab.Magic[:], devName: "lo"}
	sm.skbLen = uint32(ethHeaderLen + int(ipHeaderLen(p.IPv6)) + udpHeaderLen + p.Payload)
	if p.Via != nil {
		sm.ifindex, sm.devName = p.Via.Index, p.Via.Name
	}
	return sm
}
