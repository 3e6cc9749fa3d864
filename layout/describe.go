package layout

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Symbolic returns a stand-in Layout for a kernel whose layout skbstat
// calibrates at start, for what needs no real offsets: checking options and
// listing programs without creating anything in the kernel. Its offsets are
// made up, each field in a slot of its own, and Describe names them.
func Symbolic() *Layout {
	ptr := uint32(strconv.IntSize / 8)
	at := func(off, size uint32) Field { return Field{Offset: off, Size: size} }
	return &Layout{
		ByteOrder:   binary.NativeEndian,
		PointerSize: int(ptr),
		SkBuff: SkBuff{Head: at(0, ptr), Data: at(ptr, ptr), Len: at(2*ptr, 4), DataLen: at(2*ptr+4, 4),
			Protocol: at(2*ptr+8, 2), TransportHeader: at(2*ptr+10, 2), NetworkHeader: at(2*ptr+12, 2),
			MacHeader: at(2*ptr+14, 2), Dev: at(2*ptr+16, ptr), Sk: at(3*ptr+16, ptr)},
		NetDevice: NetDevice{Ifindex: at(0, 4), Net: at(8, ptr)},
		Net:       Net{Inum: at(0, 4)},
		sock: &SockCommon{Daddr: at(0, 4), RcvSaddr: at(4, 4), Dport: at(12, 2), Num: at(14, 2), Family: at(16, 2),
			V6Daddr: at(24, 16), V6RcvSaddr: at(40, 16), Net: at(56, ptr)},
		Source: "symbolic",
	}
}

// IsSymbolic reports whether l is Symbolic's stand-in.
func (l *Layout) IsSymbolic() bool { return l.Source == "symbolic" }

// Describe lists every offset of l, as "sk_buff.len 112/4" (offset/size).
func (l *Layout) Describe() string {
	var parts []string
	add := func(name string, f Field) {
		if f.Size != 0 {
			parts = append(parts, fmt.Sprintf("%s %d/%d", name, f.Offset, f.Size))
		}
	}
	sk := l.SkBuff
	for _, f := range []struct {
		name string
		f    Field
	}{{"head", sk.Head}, {"data", sk.Data}, {"len", sk.Len}, {"data_len", sk.DataLen}, {"protocol", sk.Protocol},
		{"transport_header", sk.TransportHeader}, {"network_header", sk.NetworkHeader}, {"mac_header", sk.MacHeader},
		{"dev", sk.Dev}, {"sk", sk.Sk}} {
		add("sk_buff."+f.name, f.f)
	}
	add("net_device.ifindex", l.NetDevice.Ifindex)
	add("net_device.nd_net", l.NetDevice.Net)
	add("net.ns.inum", l.Net.Inum)
	if l.sock != nil {
		sc := *l.sock
		for _, f := range []struct {
			name string
			f    Field
		}{{"skc_daddr", sc.Daddr}, {"skc_rcv_saddr", sc.RcvSaddr}, {"skc_dport", sc.Dport}, {"skc_num", sc.Num},
			{"skc_family", sc.Family}, {"skc_net", sc.Net}, {"skc_v6_daddr", sc.V6Daddr}, {"skc_v6_rcv_saddr", sc.V6RcvSaddr}} {
			add("sock_common."+f.name, f.f)
		}
	}
	return strings.Join(parts, ", ")
}
