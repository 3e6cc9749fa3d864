// Package layout is the one place where facts about the running kernel's
// memory layout enter skbstat: sk_buff and net_device field offsets,
// tracepoint argument positions, pointer size and byte order. Every BPF
// program generator takes them from a Layout and assumes none of them.
//
// A Layout is filled from kernel BTF where the kernel has it, or from an
// external BTF file; kernels without BTF (32-bit routers, s390x) get one from
// such a file.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// Field is the position of a struct member: its byte offset and its size in
// bytes (1, 2, 4 or 8).
type Field struct {
	Offset uint32
	Size   uint32
}

// SkBuff holds the struct sk_buff members skbstat reads.
type SkBuff struct {
	Head, Data      Field // unsigned char * (pointer-sized)
	Len, DataLen    Field // unsigned int; linear length is Len-DataLen
	Protocol        Field // __be16, ETH_P_* in network byte order
	NetworkHeader   Field // offset from Head
	TransportHeader Field // offset from Head
	MacHeader       Field // offset from Head
	Dev             Field // struct net_device *
	Sk              Field // struct sock *
}

// NetDevice holds the struct net_device members skbstat reads.
type NetDevice struct {
	Ifindex Field
	Net     Field // nd_net: struct net *; Size 0 on kernels without network namespaces
}

// Net holds the struct net members skbstat reads.
type Net struct {
	Inum Field // ns.inum: the namespace's inode number
}

// SockCommon holds the struct sock_common members that socket-level rows
// (tcp_sendmsg, udp_recvmsg, ...) filter on. struct sock starts with it.
type SockCommon struct {
	Family              Field // unsigned short, AF_INET or AF_INET6
	Num                 Field // __u16 local port, host byte order
	Dport               Field // __be16 remote port, network byte order
	Daddr, RcvSaddr     Field // __be32 remote and local IPv4 address
	V6Daddr, V6RcvSaddr Field // struct in6_addr remote and local IPv6 address
	Net                 Field // skc_net: struct net *
}

// Layout describes the running kernel.
type Layout struct {
	ByteOrder   binary.ByteOrder // the kernel's, for instruction immediates
	PointerSize int              // 4 or 8
	SkBuff      SkBuff
	NetDevice   NetDevice
	Net         Net

	// Source says where the layout came from: "kernel BTF", "BTF file
	// FILE" or "calibration".
	Source string
	// Calibration tells how a calibrated layout was found; nil otherwise.
	Calibration *Calibration

	// sock is struct sock_common's layout where calibration found it.
	sock *SockCommon
	// btf answers the lookups made after construction (tracepoints,
	// functions, drop reasons), reading each type as it is looked up.
	btf *rawbtf.Spec
	// btfPath is the BTF file's path; "" for the running kernel's BTF,
	// whose type IDs programs attach by.
	btfPath string
}

// ErrNotFound is wrapped by the errors of lookups of what the BTF does not
// describe.
var ErrNotFound = rawbtf.ErrNotFound

// errNoBTF is returned by lookups on a Layout that was not built from BTF.
var errNoBTF = errors.New("layout has no BTF")

// ErrNoKernelBTF is wrapped by Kernel's error where the kernel has no BTF.
var ErrNoKernelBTF = errors.New("kernel has no BTF")

// Kernel returns the running kernel's Layout from its BTF. The error wraps
// ErrNoKernelBTF where the kernel has none.
func Kernel() (*Layout, error) {
	spec, err := rawbtf.Kernel()
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (/sys/kernel/btf/vmlinux): pass --btf FILE, or let skbstat calibrate (--layout auto or calibrate)", ErrNoKernelBTF)
	}
	if err != nil {
		return nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	l, err := fromBTF(spec)
	if err != nil {
		spec.Close()
		return nil, err
	}
	l.Source = "kernel BTF"
	return l, nil
}

// ReleaseBTF closes the BTF that l was read from, once nothing more is to be
// looked up in it (the programs are loaded, the drop reasons named): its
// index is megabytes of heap, which what follows can then reuse. Lookups
// after it fail as on a layout without BTF.
func (l *Layout) ReleaseBTF() {
	if l.btf != nil {
		l.btf.Close()
	}
	l.btf = nil
}

// FromFile returns a Layout from an external BTF file describing the running
// kernel, for kernels that do not expose their own: raw BTF (a copy of
// /sys/kernel/btf/vmlinux) or an ELF vmlinux with a .BTF section.
func FromFile(path string) (*Layout, error) {
	spec, err := rawbtf.File(path)
	if err != nil {
		return nil, fmt.Errorf("BTF file %s: %w", path, err)
	}
	l, err := fromBTF(spec)
	if err != nil {
		spec.Close()
		return nil, fmt.Errorf("BTF file %s: %w", path, err)
	}
	l.btfPath = path
	l.Source = "BTF file " + path
	return l, nil
}

// fromBTF returns the Layout that spec describes. The byte order is the
// machine's: skbstat runs on the kernel it probes.
func fromBTF(spec *rawbtf.Spec) (*Layout, error) {
	l := &Layout{ByteOrder: binary.NativeEndian, btf: spec}
	var err error
	if l.PointerSize, err = l.pointerSize(); err != nil {
		return nil, err
	}

	skb := SkBuff{}
	_, err = l.fillStruct("sk_buff", []wantedMember{
		{"head", &skb.Head},
		{"data", &skb.Data},
		{"len", &skb.Len},
		{"data_len", &skb.DataLen},
		{"protocol", &skb.Protocol},
		{"network_header", &skb.NetworkHeader},
		{"transport_header", &skb.TransportHeader},
		{"mac_header", &skb.MacHeader},
		{"dev", &skb.Dev},
		{"sk", &skb.Sk},
	})
	if err != nil {
		return nil, err
	}
	dev := NetDevice{}
	if _, err := l.fillStruct("net_device", []wantedMember{{"ifindex", &dev.Ifindex}}); err != nil {
		return nil, err
	}
	// Without CONFIG_NET_NS there is one namespace, and possible_net_t is
	// empty.
	var net Net
	if _, err := l.fillStruct("net_device", []wantedMember{{"nd_net.net", &dev.Net}}); err == nil {
		if _, err := l.fillStruct("net", []wantedMember{{"ns.inum", &net.Inum}}); err != nil {
			return nil, err
		}
	}
	l.SkBuff, l.NetDevice, l.Net = skb, dev, net
	return l, nil
}

// unsignedLongNames are the names of unsigned long: pahole names the type as
// GCC's DWARF does, clang-built BTF as C does.
var unsignedLongNames = []string{"long unsigned int", "unsigned long"}

// pointerSize is the size of unsigned long, which the kernel keeps equal to a
// pointer's. BTF pointers carry no size of their own.
func (l *Layout) pointerSize() (int, error) {
	for _, name := range unsignedLongNames {
		ulong, err := l.btf.One(name, rawbtf.KindInt)
		if errors.Is(err, rawbtf.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("pointer size: %w", err)
		}
		if ulong.Size != 4 && ulong.Size != 8 {
			return 0, fmt.Errorf("pointer size: %s has size %d", name, ulong.Size)
		}
		return int(ulong.Size), nil
	}
	return 0, errors.New("pointer size: BTF has no unsigned long type")
}

// typeByName is the one type of kind called name in l's BTF.
func (l *Layout) typeByName(name string, kind rawbtf.Kind) (*rawbtf.Type, error) {
	if l.btf == nil {
		return nil, errNoBTF
	}
	return l.btf.One(name, kind)
}

// wantedMember names a struct member and where to store its position.
type wantedMember struct {
	name  string
	field *Field
}

// fillStruct stores the position of each of members of struct name, and
// returns the struct for lookups of other kinds.
func (l *Layout) fillStruct(name string, members []wantedMember) (*rawbtf.Type, error) {
	s, err := l.typeByName(name, rawbtf.KindStruct)
	if err != nil {
		return nil, fmt.Errorf("struct %s: %w", name, err)
	}
	for _, m := range members {
		f, err := l.member(s, m.name)
		if err != nil {
			return nil, err
		}
		*m.field = f
	}
	return s, nil
}

// member returns the position of a member of s that a BPF program loads: a
// whole integer, enum or pointer, possibly nested in anonymous structs and
// unions, or, for a dotted name (ns.inum), in named struct members.
func (l *Layout) member(s *rawbtf.Type, name string) (Field, error) {
	m, bits, ok, err := l.findMember(s, name)
	if err != nil {
		return Field{}, err
	}
	if outer, inner, dotted := strings.Cut(name, "."); !ok && dotted {
		var nested uint32
		if m, nested, ok, err = l.findMember(s, outer); err != nil {
			return Field{}, err
		}
		if ok {
			in, err := l.btf.Underlying(m.Type)
			if err != nil {
				return Field{}, err
			}
			if in.Kind != rawbtf.KindStruct {
				return Field{}, fmt.Errorf("struct %s member %s is not a struct", s.Name, outer)
			}
			f, err := l.member(in, inner)
			if err != nil {
				return Field{}, err
			}
			return Field{Offset: nested/8 + f.Offset, Size: f.Size}, nil
		}
	}
	if !ok {
		return Field{}, fmt.Errorf("struct %s has no member %s", s.Name, name)
	}
	if m.BitfieldSize != 0 || bits%8 != 0 {
		return Field{}, fmt.Errorf("struct %s member %s is a bitfield, which a load cannot read", s.Name, name)
	}
	size, err := l.loadSize(m.Type)
	if err != nil {
		return Field{}, fmt.Errorf("struct %s member %s: %w", s.Name, name, err)
	}
	return Field{Offset: bits / 8, Size: size}, nil
}

// findMember finds name among the members of struct or union s and,
// recursively, among the members of anonymous structs and unions, which C
// names as if they were the parent's (anonymous unions, struct_group). The
// offset is in bits from the start of s.
func (l *Layout) findMember(s *rawbtf.Type, name string) (rawbtf.Member, uint32, bool, error) {
	for _, m := range s.Members {
		if m.Name == name {
			return m, m.BitOffset, true, nil
		}
		if m.Name != "" {
			continue
		}
		in, err := l.btf.Underlying(m.Type)
		if err != nil {
			return rawbtf.Member{}, 0, false, err
		}
		if in.Kind != rawbtf.KindStruct && in.Kind != rawbtf.KindUnion {
			continue
		}
		found, offset, ok, err := l.findMember(in, name)
		if ok || err != nil {
			return found, m.BitOffset + offset, ok, err
		}
	}
	return rawbtf.Member{}, 0, false, nil
}

// loadSize is the size in bytes of a value of type id that a BPF load reads.
// Pointers take the kernel's pointer size.
func (l *Layout) loadSize(id rawbtf.ID) (uint32, error) {
	t, err := l.btf.Underlying(id)
	if err != nil {
		return 0, err
	}
	var size uint32
	switch t.Kind {
	case rawbtf.KindPointer:
		size = uint32(l.PointerSize)
	case rawbtf.KindInt, rawbtf.KindEnum, rawbtf.KindEnum64:
		size = t.Size
	default:
		return 0, fmt.Errorf("type %s %q is not an integer, enum or pointer", t.Kind, t.Name)
	}
	switch size {
	case 1, 2, 4, 8:
		return size, nil
	}
	return 0, fmt.Errorf("size %d cannot be loaded", size)
}

// pointee is what type id points to, looking through typedefs and
// qualifiers on both sides; nil where id is no pointer.
func (l *Layout) pointee(id rawbtf.ID) (*rawbtf.Type, error) {
	ptr, err := l.btf.Underlying(id)
	if err != nil || ptr.Kind != rawbtf.KindPointer {
		return nil, err
	}
	return l.btf.Underlying(ptr.Ref)
}

// isPointerTo reports whether type id points to struct name.
func (l *Layout) isPointerTo(id rawbtf.ID, name string) (bool, error) {
	t, err := l.pointee(id)
	return t != nil && t.Kind == rawbtf.KindStruct && t.Name == name, err
}

// SockCommon returns the layout of struct sock_common, which only
// socket-level rows need. A kernel built without IPv6 has no IPv6 addresses
// there: their Size is 0.
func (l *Layout) SockCommon() (SockCommon, error) {
	if l.sock != nil {
		return *l.sock, nil
	}
	var sk SockCommon
	s, err := l.fillStruct("sock_common", []wantedMember{
		{"skc_family", &sk.Family},
		{"skc_num", &sk.Num},
		{"skc_dport", &sk.Dport},
		{"skc_daddr", &sk.Daddr},
		{"skc_rcv_saddr", &sk.RcvSaddr},
	})
	if err != nil {
		return sk, err
	}
	// Empty without CONFIG_NET_NS, like nd_net.
	if f, err := l.member(s, "skc_net.net"); err == nil {
		sk.Net = f
	}
	for _, m := range []struct {
		name  string
		field *Field
	}{{"skc_v6_daddr", &sk.V6Daddr}, {"skc_v6_rcv_saddr", &sk.V6RcvSaddr}} {
		member, bits, ok, err := l.findMember(s, m.name)
		if err != nil {
			return sk, err
		}
		if !ok || bits%8 != 0 {
			continue
		}
		if addr, err := l.btf.Underlying(member.Type); err != nil || addr.Size != 16 {
			return sk, fmt.Errorf("struct sock_common member %s: not a 16-byte address", m.name)
		}
		*m.field = Field{Offset: bits / 8, Size: 16}
	}
	return sk, nil
}
