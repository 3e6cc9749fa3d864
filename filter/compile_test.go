package filter

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// countingSource counts the instructions its Source emits.
type countingSource struct {
	Source
	n *int
}

func (s countingSource) count(insns asm.Instructions) asm.Instructions {
	*s.n += len(insns)
	return insns
}

func (s countingSource) Ethertype(dst asm.Register, reject string) asm.Instructions {
	return s.count(s.Source.Ethertype(dst, reject))
}

func (s countingSource) Ifindex(dst asm.Register, reject string) asm.Instructions {
	return s.count(s.Source.Ifindex(dst, reject))
}

func (s countingSource) DeviceNetns(dst asm.Register, reject string) asm.Instructions {
	return s.count(s.Source.DeviceNetns(dst, reject))
}

func (s countingSource) Netns(dst asm.Register, reject, undecided string) asm.Instructions {
	return s.count(s.Source.Netns(dst, reject, undecided))
}

func (s countingSource) Setup(reject string) asm.Instructions {
	return s.count(s.Source.Setup(reject))
}

func (s countingSource) Fetch(dst, off asm.Register, size int32, reject string) asm.Instructions {
	return s.count(s.Source.Fetch(dst, off, size, reject))
}

// TestInstructionCounts prints what typical filters cost and keeps them
// from growing unnoticed. The ceilings count the filter's own
// instructions, without the Source's.
func TestInstructionCounts(t *testing.T) {
	for _, c := range []struct {
		name    string
		o       Options
		ifindex int
		netns   uint32
		ceiling int
	}{
		{"none", Options{}, 0, 0, 0},
		{"-p udp", Options{Proto: "udp"}, 0, 0, 115},
		{"-s 10.0.0.1", Options{Saddr: "10.0.0.1"}, 0, 0, 8},
		{"-N fd00::/64 -P 53", Options{Addr: "fd00::/64", Port: "53"}, 0, 0, 130},
		{"-I lo -p tcp -D 80", Options{Proto: "tcp", Dport: "80"}, loIfindex, 0, 125},
		{"-I lo in its netns", Options{}, loIfindex, xdpNetns, 2},
		{"--netns", Options{}, 0, xdpNetns, 1},
		{"--netns -p udp", Options{Proto: "udp"}, 0, xdpNetns, 116},
		{"-s 10.0.0.0/8 -d 192.168.0.0/16 -N 10.1.0.0/16 -S 1024-65535 -D 80 -P 80-90 -p tcp -I lo",
			Options{Saddr: "10.0.0.0/8", Daddr: "192.168.0.0/16", Addr: "10.1.0.0/16", Sport: "1024-65535", Dport: "80", Port: "80-90", Proto: "tcp"},
			loIfindex, 0, 44},
		{"-s fd00::/64 -d ff02::1 -N fd00::/8 -S 1024-65535 -D 80 -P 80-90 -p tcp -I lo",
			Options{Saddr: "fd00::/64", Daddr: "ff02::1", Addr: "fd00::/8", Sport: "1024-65535", Dport: "80", Port: "80-90", Proto: "tcp"},
			loIfindex, 0, 140},
	} {
		f, err := Parse(c.o)
		if err != nil {
			t.Fatal(err)
		}
		f.Ifindex, f.Netns = c.ifindex, c.netns
		var fromSource int
		insns := f.Instructions(countingSource{xdpSource{onLoopback}, &fromSource}, binary.NativeEndian, "reject")
		own := len(insns) - fromSource
		t.Logf("%-80s %3d instructions: %3d filter + %3d XDP source", c.name, len(insns), own, fromSource)
		if own > c.ceiling {
			t.Errorf("%s: %d instructions of its own, more than %d", c.name, own, c.ceiling)
		}
	}
}

// TestImmediatesFollowByteOrder checks that packet constants are laid out
// in the kernel's byte order, so that big-endian kernels compare the same
// bytes.
func TestImmediatesFollowByteOrder(t *testing.T) {
	f, err := Parse(Options{Saddr: "200.0.0.0/8", Dport: "8000-8100"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		order binary.ByteOrder
		want  []int64
	}{
		{binary.BigEndian, []int64{0x0800, -0x1000000, -0x38000000, 0x1fff, 8000, 8100}},
		{binary.LittleEndian, []int64{0x0008, 0xff, 0xc8, 0xff1f, 8000, 8100}},
	} {
		var got []int64
		for _, ins := range f.Instructions(xdpSource{onLoopback}, c.order, "reject") {
			if ins.OpCode.Source() == asm.ImmSource && (ins.OpCode.Class().IsJump() || ins.OpCode.ALUOp() == asm.And) {
				got = append(got, ins.Constant)
			}
		}
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%v: no immediate %#x among %#x", c.order, w, got)
			}
		}
	}
}

func TestEmptyFilterEmitsNothing(t *testing.T) {
	if insns := (Filter{}).Instructions(xdpSource{onLoopback}, binary.NativeEndian, "reject"); len(insns) != 0 {
		t.Errorf("%d instructions:\n%v", len(insns), insns)
	}
}

// TestFiltersShareAProgram puts two filters with different reject labels in
// one program: their labels must not collide (Marshal refuses duplicates).
func TestFiltersShareAProgram(t *testing.T) {
	f, err := Parse(Options{Addr: "fd00::/64", Port: "53"})
	if err != nil {
		t.Fatal(err)
	}
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	first := f.Instructions(xdpSource{onLoopback}, binary.NativeEndian, "first")
	second := f.Instructions(xdpSource{onLoopback}, binary.NativeEndian, "second")
	insns = append(append(insns, first...), second...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("first"),
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("second"),
		asm.Return(),
	)
	insns = append(insns, undecidedExits(first, "first")...)
	insns = append(insns, undecidedExits(second, "second")...)
	if err := insns.Marshal(&bytes.Buffer{}, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
}

// TestUnsatisfiableFilters: filters that Parse refuses but a caller could
// build still compile, and match nothing.
func TestUnsatisfiableFilters(t *testing.T) {
	requireBPF(t)
	frame := ethernet(etherIPv4, cat(ipv4(mustPrefix("10.0.0.1").Addr(), mustPrefix("10.0.0.2").Addr(), 1, 0, nil), ports(1, 2)))
	for _, f := range []Filter{
		{Src: mustPrefix("10.0.0.0/8"), Dst: mustPrefix("fd00::/8")},
		{Proto: Protocol{1, true}, Dport: PortRange{2, 2, true}},
		{Ifindex: -1},
	} {
		prog := loadFilter(t, f, onLoopback)
		if runFilter(t, prog, frame) != rejected {
			t.Errorf("%+v matched", f)
		}
		if referenceMatch(f, frame, onLoopback) != rejected {
			t.Errorf("reference: %+v matched", f)
		}
		prog.Close()
	}
}
