package layout

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// A synthKernel is a made-up kernel layout to plant calibration's known
// values in: the search must find exactly these offsets, or fail, never
// find others.
type synthKernel struct {
	name    string
	order   binary.ByteOrder
	ptr     uint32
	skb     SkBuff
	tailEnd uint32 // 32-bit kernels: tail and end are pointers here, just before head
	ifindex Field
	sock    SockCommon
	skcNet  Field
	ndNet   Field
	inum    Field
}

var synthKernels = []synthKernel{
	{
		// Linux 6.18 x86-64, as its BTF says.
		name: "6.18 amd64", order: binary.LittleEndian, ptr: 8,
		skb: SkBuff{Head: Field{192, 8}, Data: Field{200, 8}, Len: Field{112, 4}, DataLen: Field{116, 4},
			Protocol: Field{176, 2}, TransportHeader: Field{178, 2}, NetworkHeader: Field{180, 2}, MacHeader: Field{182, 2},
			Dev: Field{16, 8}, Sk: Field{24, 8}},
		ifindex: Field{224, 4}, ndNet: Field{264, 8}, inum: Field{176, 4}, skcNet: Field{48, 8},
		sock: SockCommon{Daddr: Field{0, 4}, RcvSaddr: Field{4, 4}, Dport: Field{12, 2}, Num: Field{14, 2},
			Family: Field{16, 2}, V6Daddr: Field{56, 16}, V6RcvSaddr: Field{72, 16}, Net: Field{48, 8}},
	},
	{
		// A 32-bit big-endian router kernel: tail and end are pointers
		// and compete with head and data.
		name: "32-bit big-endian", order: binary.BigEndian, ptr: 4,
		skb: SkBuff{Head: Field{156, 4}, Data: Field{160, 4}, Len: Field{76, 4}, DataLen: Field{80, 4},
			Protocol: Field{140, 2}, TransportHeader: Field{142, 2}, NetworkHeader: Field{144, 2}, MacHeader: Field{146, 2},
			Dev: Field{8, 4}, Sk: Field{12, 4}},
		tailEnd: 148,
		ifindex: Field{96, 4}, ndNet: Field{1204, 4}, inum: Field{92, 4}, skcNet: Field{40, 4},
		sock: SockCommon{Daddr: Field{0, 4}, RcvSaddr: Field{4, 4}, Dport: Field{12, 2}, Num: Field{14, 2},
			Family: Field{16, 2}, V6Daddr: Field{44, 16}, V6RcvSaddr: Field{60, 16}, Net: Field{40, 4}},
	},
}

// synthPackets are calibration's packets, as calibrationPackets makes them
// for a lab with two devices.
func synthPackets() []sample {
	a4, b4 := netip.MustParseAddr("198.18.7.1"), netip.MustParseAddr("198.18.7.5")
	a6 := netip.MustParseAddr("fd12:3456:789a:1::1")
	pa4, pb4 := netip.MustParseAddr("198.18.7.2"), netip.MustParseAddr("198.18.7.6")
	pa6 := netip.MustParseAddr("fd12:3456:789a:1::2")
	mk := func(ipv6 bool, src, dst netip.Addr, paged uint32, dev string, idx int, k uint32) sample {
		return sample{ipv6: ipv6, src: netip.AddrPortFrom(src, 23456), dst: netip.AddrPortFrom(dst, 34567),
			skbLen: firstLen + k, paged: paged, ifindex: idx, devName: dev, magic: []byte("\x9a\x01magic!")}
	}
	return []sample{
		mk(false, a4, pa4, 0, "skbc0a0b0c", 1234567, 0),
		mk(true, a6, pa6, 0, "skbc0a0b0c", 1234567, 1),
		mk(false, a4, pa4, pagedBytes, "skbc0a0b0c", 1234567, 2),
		mk(false, b4, pb4, 0, "skbc0d0e0f", 7654321, 3),
	}
}

// plant fills the sample's record as kernel k would hold the packet, with
// random bytes everywhere else.
func (k synthKernel) plant(rng *rand.Rand, sm *sample) {
	ptr := k.ptr
	random := func(n uint32) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	put := func(b []byte, f Field, v uint64) {
		switch f.Size {
		case 2:
			k.order.PutUint16(b[f.Offset:], uint16(v))
		case 4:
			k.order.PutUint32(b[f.Offset:], uint32(v))
		case 8:
			k.order.PutUint64(b[f.Offset:], v)
		}
	}
	skb := random(skbWindow)
	windows := [][]byte{skb}
	for off := uint32(0); off < skbWindow; off += ptr {
		// Most members are no pointers, or point at nothing readable.
		if rng.IntN(3) == 0 {
			windows = append(windows, random(pointeeWindow))
		} else {
			windows = append(windows, nil)
		}
	}
	pointee := func(f Field) []byte {
		w := random(pointeeWindow)
		windows[1+f.Offset/ptr] = w
		return w
	}
	mac := uint64(32 + rng.IntN(128))
	data := uint64(0xc0000000+rng.Uint32()&^7) & (1<<(8*ptr) - 1)
	put(skb, k.skb.Data, data)
	put(skb, k.skb.Head, data-mac)
	if k.tailEnd != 0 {
		put(skb, Field{k.tailEnd, ptr}, data+uint64(sm.skbLen-sm.paged))
		put(skb, Field{k.tailEnd + ptr, ptr}, data+uint64(sm.skbLen)+mac)
	}
	copy(skb[k.skb.Protocol.Offset:], ethertypeOf(sm.ipv6))
	put(skb, k.skb.MacHeader, mac)
	put(skb, k.skb.NetworkHeader, mac+ethHeaderLen)
	put(skb, k.skb.TransportHeader, mac+ethHeaderLen+uint64(ipHeaderLen(sm.ipv6)))
	put(skb, k.skb.Len, uint64(sm.skbLen))
	put(skb, k.skb.DataLen, uint64(sm.paged))

	frame := pointee(k.skb.Data)
	copy(frame[12:], ethertypeOf(sm.ipv6))
	ip := frame[ethHeaderLen:]
	if sm.ipv6 {
		ip[0], ip[6] = 0x60, 17
		copy(ip[8:], sm.src.Addr().AsSlice())
		copy(ip[24:], sm.dst.Addr().AsSlice())
	} else {
		ip[0], ip[9] = 0x45, 17
		copy(ip[12:], sm.src.Addr().AsSlice())
		copy(ip[16:], sm.dst.Addr().AsSlice())
	}
	udp := ip[ipHeaderLen(sm.ipv6):]
	binary.BigEndian.PutUint16(udp, sm.src.Port())
	binary.BigEndian.PutUint16(udp[2:], sm.dst.Port())
	copy(udp[8:], sm.magic)

	dev := pointee(k.skb.Dev)
	copy(dev[k.ifindex.Offset+20:], append([]byte(sm.devName), 0))
	put(dev, k.ifindex, uint64(sm.ifindex))

	sock := pointee(k.skb.Sk)
	family := uint64(afInet)
	if sm.ipv6 {
		family = afInet6
		copy(sock[k.sock.V6Daddr.Offset:], sm.dst.Addr().AsSlice())
		copy(sock[k.sock.V6RcvSaddr.Offset:], sm.src.Addr().AsSlice())
	} else {
		copy(sock[k.sock.Daddr.Offset:], sm.dst.Addr().AsSlice())
		copy(sock[k.sock.RcvSaddr.Offset:], sm.src.Addr().AsSlice())
	}
	binary.BigEndian.PutUint16(sock[k.sock.Dport.Offset:], sm.dst.Port())
	put(sock, k.sock.Num, uint64(sm.src.Port()))
	put(sock, k.sock.Family, family)
	sm.rec = record{skbaddr: data - 4096, windows: windows}
}

// netSamples makes the second pass's samples for the first pass's.
func (k synthKernel) netSamples(rng *rand.Rand, first []sample, inode uint64) []netSample {
	net := uint64(0xc1000000+rng.Uint32()&^7) & (1<<(8*k.ptr) - 1)
	var out []netSample
	for _, sm := range first {
		sock := sm.rec.windows[1+k.skb.Sk.Offset/k.ptr]
		k.order.PutUint32(sock[k.skcNet.Offset:], uint32(net))
		if k.ptr == 8 {
			k.order.PutUint64(sock[k.skcNet.Offset:], net)
		}
		ns := netSample{inode: inode, sock: sock, dev: make([]byte, netDeviceWindow)}
		for i := range ns.dev {
			ns.dev[i] = byte(rng.Uint32())
		}
		if k.ptr == 8 {
			k.order.PutUint64(ns.dev[k.ndNet.Offset:], net)
		} else {
			k.order.PutUint32(ns.dev[k.ndNet.Offset:], uint32(net))
		}
		for off := uint32(0); off < pointeeWindow; off += k.ptr {
			var w []byte
			if off == k.skcNet.Offset {
				w = make([]byte, pointeeWindow)
				k.order.PutUint32(w[k.inum.Offset:], uint32(inode))
			}
			ns.pointees = append(ns.pointees, w)
		}
		out = append(out, ns)
	}
	return out
}

// TestSearchFindsPlantedLayout plants the known values of calibration's
// packets in random memory, laid out as each synthetic kernel lays it out,
// and checks that the search finds every field where it was planted.
func TestSearchFindsPlantedLayout(t *testing.T) {
	for _, k := range synthKernels {
		t.Run(k.name, func(t *testing.T) {
			for seed := uint64(0); seed < 200; seed++ {
				rng := rand.New(rand.NewPCG(seed, 1))
				samples := synthPackets()
				for i := range samples {
					k.plant(rng, &samples[i])
				}
				got, err := k.search(samples, k.netSamples(rng, samples, 4026532000+seed))
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if got != k.truth() {
					t.Fatalf("seed %d:\n got %+v\nwant %+v", seed, got, k.truth())
				}
			}
		})
	}
}

// found is everything the search finds.
type found struct {
	skb         SkBuff
	ifindex     Field
	sock        SockCommon
	ndNet, inum Field
}

func (k synthKernel) truth() found {
	return found{skb: k.skb, ifindex: k.ifindex, sock: k.sock, ndNet: k.ndNet, inum: k.inum}
}

func (k synthKernel) search(samples []sample, nets []netSample) (found, error) {
	s := searcher{order: k.order, ptrSize: int(k.ptr)}
	var f found
	h, err := s.findSkb(samples)
	if err != nil {
		return f, err
	}
	dev, ifindex, err := s.findDev(samples)
	if err != nil {
		return f, err
	}
	sk, sc, err := s.findSock(samples)
	if err != nil {
		return f, err
	}
	skcNet, ndNet, inum, err := s.findNet(nets, ifindex)
	if err != nil {
		return f, err
	}
	sc.Net = skcNet
	f.skb = SkBuff{Head: h.head, Data: h.data, Len: h.len, DataLen: h.dataLen, Protocol: h.protocol,
		NetworkHeader: h.network, TransportHeader: h.transport, MacHeader: h.macHeader, Dev: dev, Sk: sk}
	f.ifindex, f.sock, f.ndNet, f.inum = ifindex, sc, ndNet, inum
	return f, nil
}

// TestSearchCollisions plants decoys: values that equal a field's in some
// or all samples. Where another packet tells them apart, or the kernel's
// field order does, the search finds the true field; where nothing can, it
// fails and names the field. It never finds a decoy.
func TestSearchCollisions(t *testing.T) {
	k := synthKernels[0]
	tests := []struct {
		name    string
		decoy   func(k synthKernel, sm *sample, i int)
		wantErr string // "" means the search must still find the truth
	}{
		{"csum_start equals transport_header", func(k synthKernel, sm *sample, i int) {
			skb := sm.rec.windows[0]
			copy(skb[136:138], skb[k.skb.TransportHeader.Offset:])
		}, ""},
		{"a decoy len in the linear packets only", func(k synthKernel, sm *sample, i int) {
			k.order.PutUint32(sm.rec.windows[0][120:], sm.skbLen)
			if sm.paged == 0 {
				k.order.PutUint32(sm.rec.windows[0][124:], 0)
			}
		}, ""},
		{"len and a decoy both followed by data_len", func(k synthKernel, sm *sample, i int) {
			k.order.PutUint32(sm.rec.windows[0][128:], sm.skbLen)
			k.order.PutUint32(sm.rec.windows[0][132:], sm.paged)
		}, "skb->len: 2 offsets"},
		{"ifindex twice in one device only", func(k synthKernel, sm *sample, i int) {
			if sm.ifindex == 1234567 {
				dev := sm.rec.windows[1+k.skb.Dev.Offset/k.ptr]
				k.order.PutUint32(dev[300:], uint32(sm.ifindex))
			}
		}, ""},
		{"ifindex twice in both devices", func(k synthKernel, sm *sample, i int) {
			dev := sm.rec.windows[1+k.skb.Dev.Offset/k.ptr]
			k.order.PutUint32(dev[300:], uint32(sm.ifindex))
		}, "net_device->ifindex: 2 offsets"},
		{"a second pointer to the frame", func(k synthKernel, sm *sample, i int) {
			sm.rec.windows[1+40/k.ptr] = sm.rec.windows[1+k.skb.Data.Offset/k.ptr]
		}, "skb->data: 2 offsets"},
		{"the frame is unreadable", func(k synthKernel, sm *sample, i int) {
			if i == 2 {
				sm.rec.windows[1+k.skb.Data.Offset/k.ptr] = nil
			}
		}, "skb->data: no offset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			samples := synthPackets()
			for i := range samples {
				k.plant(rng, &samples[i])
				tt.decoy(k, &samples[i], i)
			}
			got, err := k.search(samples, k.netSamples(rng, samples, 4026532999))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("search failed: %v", err)
			case tt.wantErr == "" && got != k.truth():
				t.Fatalf("found a decoy:\n got %+v\nwant %+v", got, k.truth())
			case tt.wantErr != "" && (err == nil || !contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q (found %+v)", err, tt.wantErr, got)
			}
		})
	}
}

// planted reports whether the two bytes at off of record window w hold a
// planted value.
func (k synthKernel) planted(w int, off uint32) bool {
	in := func(fs ...Field) bool {
		for _, f := range fs {
			if off+2 > f.Offset && off < f.Offset+f.Size {
				return true
			}
		}
		return false
	}
	sk, sc := k.skb, k.sock
	switch uint32(w) {
	case 0:
		return in(sk.Head, sk.Data, sk.Len, sk.DataLen, sk.Protocol, sk.TransportHeader, sk.NetworkHeader,
			sk.MacHeader, sk.Dev, sk.Sk, Field{k.tailEnd, 2 * k.ptr})
	case 1 + sk.Data.Offset/k.ptr:
		return off < 96
	case 1 + sk.Dev.Offset/k.ptr:
		return in(k.ifindex, Field{k.ifindex.Offset + 20, 12})
	case 1 + sk.Sk.Offset/k.ptr:
		return in(sc.Daddr, sc.RcvSaddr, sc.Dport, sc.Num, sc.Family, sc.V6Daddr, sc.V6RcvSaddr)
	}
	return false
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// FuzzSearch plants the layout, then overwrites fuzzer-chosen bytes of the
// records, other than the planted fields, with fuzzer-chosen values: decoys
// may make the search fail, but whatever it finds must be the planted
// layout.
func FuzzSearch(f *testing.F) {
	f.Add(uint64(1), []byte{0, 112, 0xc3, 1, 0, 0})
	f.Add(uint64(2), []byte{0, 180, 0x08, 0, 0, 0, 1, 0, 0})
	f.Add(uint64(3), []byte{5, 0, 0x87, 0xd6, 0x12, 0})
	f.Fuzz(func(t *testing.T, seed uint64, edits []byte) {
		for _, k := range synthKernels {
			rng := rand.New(rand.NewPCG(seed, 3))
			samples := synthPackets()
			for i := range samples {
				k.plant(rng, &samples[i])
			}
			// Each edit: window, offset, value bytes, in every sample.
			for len(edits) >= 4 {
				w, off, v := int(edits[0]), int(edits[1])*2, edits[2:4]
				edits = edits[4:]
				w %= len(samples[0].rec.windows)
				if k.planted(w, uint32(off)) {
					continue
				}
				for _, sm := range samples {
					if b := sm.rec.windows[w]; off+2 <= len(b) {
						copy(b[off:], v)
					}
				}
			}
			got, err := k.search(samples, k.netSamples(rng, samples, 4026532111))
			if err == nil && got != k.truth() {
				t.Fatalf("%s: found a wrong layout:\n got %+v\nwant %+v", k.name, got, k.truth())
			}
		}
	})
}

// TestSearchWithoutIPv6 searches the samples of a lab without IPv6 (the
// kernel's IPv6 off): everything is found but the socket's IPv6 addresses,
// which stay unset.
func TestSearchWithoutIPv6(t *testing.T) {
	for _, k := range synthKernels {
		rng := rand.New(rand.NewPCG(5, 5))
		var samples []sample
		for _, sm := range synthPackets() {
			if !sm.ipv6 {
				k.plant(rng, &sm)
				samples = append(samples, sm)
			}
		}
		got, err := k.search(samples, k.netSamples(rng, samples, 4026532777))
		if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		want := k.truth()
		want.sock.V6Daddr, want.sock.V6RcvSaddr = Field{}, Field{}
		if got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", k.name, got, want)
		}
	}
}

// TestSearchNetPastTheStruct plants the namespace pointer again before the
// device's ifindex and many times past the struct, as memory after a
// net_device may hold it (32-bit ARM's 6.1 did): nd_net is still found.
func TestSearchNetPastTheStruct(t *testing.T) {
	for _, k := range synthKernels {
		t.Run(k.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, 9))
			samples := synthPackets()
			for i := range samples {
				k.plant(rng, &samples[i])
			}
			nets := k.netSamples(rng, samples, 4026532999)
			for _, ns := range nets {
				copies := []uint32{k.ifindex.Offset - 2*k.ptr}
				for off := uint32(2080); off+k.ptr <= netDeviceWindow; off += 36 &^ (k.ptr - 1) {
					copies = append(copies, off)
				}
				for _, off := range copies {
					copy(ns.dev[off:off+k.ptr], ns.dev[k.ndNet.Offset:])
				}
			}
			got, err := k.search(samples, nets)
			if err != nil || got != k.truth() {
				t.Fatalf("search: %v; found %+v, want %+v", err, got, k.truth())
			}
		})
	}
}
