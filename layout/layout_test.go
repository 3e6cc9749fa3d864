package layout

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// testKernel is a hand-built 32-bit kernel's BTF: sk_buff nests its members
// in anonymous unions and structs as 6.x does, with offsets of its own.
type testKernel struct {
	skb, netdev *btf.Struct
	ulong       *btf.Int
	others      []btf.Type // tracepoint typedefs and functions
}

// Byte offsets of the members of testKernel's sk_buff and net_device.
var testKernelLayout = struct {
	SkBuff    SkBuff
	NetDevice NetDevice
}{
	SkBuff: SkBuff{
		Dev:             Field{Offset: 8, Size: 4},
		Len:             Field{Offset: 56, Size: 4},
		DataLen:         Field{Offset: 60, Size: 4},
		Protocol:        Field{Offset: 84, Size: 2},
		TransportHeader: Field{Offset: 86, Size: 2},
		NetworkHeader:   Field{Offset: 88, Size: 2},
		MacHeader:       Field{Offset: 90, Size: 2},
		Sk:              Field{Offset: 12, Size: 4},
		Head:            Field{Offset: 136, Size: 4},
		Data:            Field{Offset: 140, Size: 4},
	},
	NetDevice: NetDevice{Ifindex: Field{Offset: 100, Size: 4}},
}

func newTestKernel() *testKernel {
	var (
		void   = &btf.Void{}
		voidp  = &btf.Pointer{Target: void}
		ulong  = &btf.Int{Name: "long unsigned int", Size: 4}
		uchar  = &btf.Int{Name: "unsigned char", Size: 1}
		ushort = &btf.Int{Name: "short unsigned int", Size: 2}
		uint   = &btf.Int{Name: "unsigned int", Size: 4}
		sint   = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
		u16    = &btf.Typedef{Name: "__u16", Type: ushort}
		be16   = &btf.Typedef{Name: "__be16", Type: u16}
		netdev = &btf.Struct{Name: "net_device", Size: 128, Members: []btf.Member{
			{Name: "name", Type: &btf.Array{Index: uint, Type: uchar, Nelems: 16}, Offset: 0},
			{Name: "ifindex", Type: sint, Offset: 100 * 8},
		}}
		skb  = &btf.Struct{Name: "sk_buff", Size: 160}
		skbp = &btf.Pointer{Target: skb}
		sock = &btf.Pointer{Target: &btf.Struct{Name: "sock", Size: 64}}
		net  = &btf.Pointer{Target: &btf.Struct{Name: "net", Size: 64}}
	)
	headers := func(name string) btf.Member {
		return btf.Member{Name: name, Type: &btf.Struct{Size: 12, Members: []btf.Member{
			{Name: "protocol", Type: be16, Offset: 4 * 8},
			{Name: "transport_header", Type: u16, Offset: 6 * 8},
			{Name: "network_header", Type: u16, Offset: 8 * 8},
			{Name: "mac_header", Type: u16, Offset: 10 * 8},
		}}}
	}
	skb.Members = []btf.Member{
		{Type: &btf.Union{Size: 12, Members: []btf.Member{
			{Type: &btf.Struct{Size: 12, Members: []btf.Member{
				{Name: "next", Type: skbp, Offset: 0},
				{Name: "prev", Type: skbp, Offset: 4 * 8},
				{Type: &btf.Union{Size: 4, Members: []btf.Member{
					{Name: "dev", Type: &btf.Pointer{Target: netdev}},
					{Name: "dev_scratch", Type: ulong},
				}}, Offset: 8 * 8},
			}}},
		}}},
		{Name: "sk", Type: &btf.Pointer{Target: &btf.Struct{Name: "sock"}}, Offset: 12 * 8},
		{Name: "cb", Type: &btf.Array{Index: uint, Type: uchar, Nelems: 40}, Offset: 16 * 8},
		{Name: "len", Type: uint, Offset: 56 * 8},
		{Name: "data_len", Type: uint, Offset: 60 * 8},
		{Name: "pkt_type", Type: uchar, Offset: 64 * 8, BitfieldSize: 3},
		// struct_group(headers, ...): the anonymous copy first, then the named one.
		{Type: &btf.Union{Size: 12, Members: []btf.Member{headers(""), headers("headers")}}, Offset: 80 * 8},
		{Name: "head", Type: &btf.Pointer{Target: uchar}, Offset: 136 * 8},
		{Name: "data", Type: &btf.Pointer{Target: uchar}, Offset: 140 * 8},
	}

	reason := &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0},
		{Name: "SKB_CONSUMED", Value: 1},
		{Name: "SKB_DROP_REASON_NOT_SPECIFIED", Value: 2},
		{Name: "SKB_DROP_REASON_NO_SOCKET", Value: 3},
		{Name: "SKB_DROP_REASON_MAX", Value: 4},
		{Name: "SKB_DROP_REASON_SUBSYS_MASK", Value: 0xffff0000},
	}}
	tracepoint := func(name string, params ...btf.Type) btf.Type {
		proto := &btf.FuncProto{Return: void, Params: []btf.FuncParam{{Name: "__data", Type: voidp}}}
		for _, p := range params {
			proto.Params = append(proto.Params, btf.FuncParam{Type: p})
		}
		return &btf.Typedef{Name: "btf_trace_" + name, Type: &btf.Pointer{Target: proto}}
	}
	function := func(name string, params ...btf.FuncParam) btf.Type {
		return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: sint, Params: params}}
	}
	return &testKernel{
		skb: skb, netdev: netdev, ulong: ulong,
		others: []btf.Type{
			tracepoint("kfree_skb", skbp, voidp, reason),
			tracepoint("consume_skb", skbp, voidp),
			tracepoint("net_dev_xmit", &btf.Pointer{Target: &btf.Const{Type: skb}}, sint, &btf.Pointer{Target: netdev}, uint),
			tracepoint("sched_switch", &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}),
			&btf.Typedef{Name: "btf_trace_broken", Type: uint},
			function("ip_local_out", btf.FuncParam{Name: "net", Type: net}, btf.FuncParam{Name: "sk", Type: sock}, btf.FuncParam{Name: "skb", Type: skbp}),
			function("tcp_sendmsg", btf.FuncParam{Name: "sk", Type: sock}, btf.FuncParam{Name: "msg", Type: voidp}),
			function("schedule"),
		},
	}
}

// member returns the top-level member of s called name.
func member(s *btf.Struct, name string) *btf.Member {
	for i := range s.Members {
		if s.Members[i].Name == name {
			return &s.Members[i]
		}
	}
	panic("no member " + name)
}

// rawBTF encodes k in order, as a BTF file of another kernel would be.
func (k *testKernel) rawBTF(t *testing.T, order binary.ByteOrder) []byte {
	t.Helper()
	b, err := btf.NewBuilder(append([]btf.Type{k.skb, k.netdev, k.ulong}, k.others...), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: order})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (k *testKernel) layout(t *testing.T) *Layout {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vmlinux.btf")
	if err := os.WriteFile(path, k.rawBTF(t, binary.NativeEndian), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestFromFile32BitBigEndian reads the BTF of a 32-bit big-endian kernel
// (a MIPS or PowerPC router's) as --btf FILE would.
func TestFromFile32BitBigEndian(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmlinux.btf")
	if err := os.WriteFile(path, newTestKernel().rawBTF(t, binary.BigEndian), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.PointerSize != 4 {
		t.Errorf("PointerSize %d, want 4", l.PointerSize)
	}
	if l.SkBuff != testKernelLayout.SkBuff {
		t.Errorf("SkBuff\n got %+v\nwant %+v", l.SkBuff, testKernelLayout.SkBuff)
	}
	if l.NetDevice != testKernelLayout.NetDevice {
		t.Errorf("NetDevice %+v, want %+v", l.NetDevice, testKernelLayout.NetDevice)
	}
	// The byte order is the running machine's, and settable for generator tests.
	if l.ByteOrder != binary.NativeEndian {
		t.Errorf("ByteOrder %v, want native", l.ByteOrder)
	}
	l.ByteOrder = binary.BigEndian

	tp, err := l.RawTracepoint("skb", "kfree_skb")
	if err != nil {
		t.Fatal(err)
	}
	want := Tracepoint{Group: "skb", Name: "kfree_skb", Raw: true, Skb: Field{0, 8}, Location: Field{8, 8}, Reason: Field{16, 8}}
	if tp != want {
		t.Errorf("RawTracepoint = %+v, want %+v (u64 slots on 32-bit kernels too)", tp, want)
	}
}

func TestFromBTFErrors(t *testing.T) {
	tests := []struct {
		name    string
		change  func(k *testKernel)
		wantErr string
	}{
		{"no sk_buff", func(k *testKernel) { k.skb.Name = "sk_buff_old" }, "struct sk_buff: not found"},
		{"no net_device.ifindex", func(k *testKernel) { k.netdev.Members[1].Name = "idx" }, "struct net_device has no member ifindex"},
		{"missing top-level member", func(k *testKernel) { member(k.skb, "data_len").Name = "dlen" }, "struct sk_buff has no member data_len"},
		{"bitfield", func(k *testKernel) { member(k.skb, "len").BitfieldSize = 24 }, "member len is a bitfield"},
		{"not a scalar", func(k *testKernel) { member(k.skb, "head").Type = member(k.skb, "cb").Type }, "member head: type"},
		{"odd size", func(k *testKernel) { member(k.skb, "data_len").Type = &btf.Int{Name: "u24", Size: 3} }, "member data_len: size 3 cannot be loaded"},
		{"no unsigned long", func(k *testKernel) { k.ulong.Name = "ulong" }, "BTF has no unsigned long type"},
		{
			// Only anonymous members are searched: the named struct_group copy is not.
			"named struct not searched",
			func(k *testKernel) {
				headersGroup := k.skb.Members[6].Type.(*btf.Union)
				anon := headersGroup.Members[0].Type.(*btf.Struct)
				anon.Members[2].Name = "nh"
			},
			"struct sk_buff has no member network_header",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newTestKernel()
			tt.change(k)
			path := filepath.Join(t.TempDir(), "vmlinux.btf")
			if err := os.WriteFile(path, k.rawBTF(t, binary.NativeEndian), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := FromFile(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %v, want one naming %s and containing %q", err, path, tt.wantErr)
			}
		})
	}
}

func TestFromFileNotBTF(t *testing.T) {
	dir := t.TempDir()
	notBTF := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notBTF, []byte("not BTF"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{notBTF, filepath.Join(dir, "missing")} {
		if _, err := FromFile(path); err == nil || !strings.Contains(err.Error(), "BTF file "+path) {
			t.Errorf("FromFile(%s) error %v, want one naming the file", path, err)
		}
	}
}

func TestNoBTF(t *testing.T) {
	l := &Layout{PointerSize: 4, ByteOrder: binary.BigEndian}
	if _, err := l.RawTracepoint("skb", "kfree_skb"); !errors.Is(err, errNoBTF) {
		t.Errorf("RawTracepoint error %v, want errNoBTF", err)
	}
	if _, err := l.DropReasons(); !errors.Is(err, errNoBTF) {
		t.Errorf("DropReasons error %v, want errNoBTF", err)
	}
}

// kernelBTF skips tests that need the running kernel's BTF where it has none.
func kernelBTF(t *testing.T) *Layout {
	t.Helper()
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("kernel has no BTF: %v", err)
	}
	l, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestKernelLive(t *testing.T) {
	l := kernelBTF(t)
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	var machine strings.Builder
	for _, c := range uts.Machine {
		if c == 0 {
			break
		}
		machine.WriteByte(byte(c))
	}
	wantPtr := 4
	if strings.Contains(machine.String(), "64") {
		wantPtr = 8
	}
	if l.PointerSize != wantPtr {
		t.Errorf("PointerSize %d on %s, want %d", l.PointerSize, machine.String(), wantPtr)
	}
	s := l.SkBuff
	t.Logf("sk_buff: %+v", s)
	t.Logf("net_device: %+v", l.NetDevice)
	ptr := uint32(l.PointerSize)
	checks := []struct {
		what string
		ok   bool
	}{
		{"head, data, dev are pointers", s.Head.Size == ptr && s.Data.Size == ptr && s.Dev.Size == ptr},
		{"data follows head", s.Data.Offset == s.Head.Offset+ptr},
		{"len, data_len are unsigned int, in a row", s.Len.Size == 4 && s.DataLen.Size == 4 && s.DataLen.Offset == s.Len.Offset+4},
		{"protocol and headers are 16 bits", s.Protocol.Size == 2 && s.NetworkHeader.Size == 2 && s.TransportHeader.Size == 2},
		{"transport_header precedes network_header", s.NetworkHeader.Offset == s.TransportHeader.Offset+2},
		{"ifindex is an int", l.NetDevice.Ifindex.Size == 4},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not so", c.what)
		}
	}
}

func TestMember(t *testing.T) {
	l := newTestKernel().layout(t)
	skb, err := l.typeByName("sk_buff", rawbtf.KindStruct)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		want    Field
		wantErr string
	}{
		{name: "len", want: Field{56, 4}},
		{name: "next", want: Field{0, 4}},
		{name: "prev", want: Field{4, 4}},
		{name: "dev_scratch", want: Field{8, 4}},
		{name: "network_header", want: Field{88, 2}},
		{name: "pkt_type", wantErr: "bitfield"},
		{name: "cb", wantErr: "not an integer, enum or pointer"},
		{name: "headers", wantErr: "not an integer, enum or pointer"},
		{name: "tail", wantErr: "has no member tail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.member(skb, tt.name)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("member = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
