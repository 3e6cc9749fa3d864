package filter

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParse: any option values give an *OptionError or a normalised filter
// whose code assembles.
func FuzzParse(f *testing.F) {
	f.Add("10.0.0.1/24", "", "", "", "", "", "")
	f.Add("::ffff:1.2.3.4", "10.0.0.0/8", "", "80", "", "", "tcp")
	f.Add("", "fd00::1", "::ffff:0:0/95", "", "8000-8100", "9-3", "udp")
	f.Add("", "", "fe80::1%eth0", "", "", "", "icmp")
	f.Add("", "", "", "", "80", "", "icmp")
	f.Add("fd00::/8", "", "", "", "", "", "44")
	f.Fuzz(func(t *testing.T, saddr, daddr, addr, sport, dport, port, proto string) {
		o := Options{saddr, daddr, addr, sport, dport, port, proto}
		flt, err := Parse(o)
		if err != nil {
			var oerr *OptionError
			if !errors.As(err, &oerr) || oerr.Option == "" || oerr.Reason == "" {
				t.Fatalf("%+v: error %#v, want an *OptionError", o, err)
			}
			return
		}
		for _, c := range []struct {
			value string
			set   bool
		}{
			{saddr, flt.Src.IsValid()}, {daddr, flt.Dst.IsValid()}, {addr, flt.Addr.IsValid()},
			{sport, flt.Sport.Set}, {dport, flt.Dport.Set}, {port, flt.Port.Set}, {proto, flt.Proto.Set},
		} {
			if (c.value != "") != c.set {
				t.Fatalf("%+v: option %q gave %+v", o, c.value, flt)
			}
		}
		for _, p := range []netip.Prefix{flt.Src, flt.Dst, flt.Addr} {
			if p != p.Masked() || p.Addr().Is4In6() && p.Bits() >= 96 {
				t.Fatalf("%+v: prefix %s is not normalised", o, p)
			}
		}
		for _, r := range []PortRange{flt.Sport, flt.Dport, flt.Port} {
			if r.Lo > r.Hi {
				t.Fatalf("%+v: reversed range in %+v", o, flt)
			}
		}
		if !flt.satisfiable() {
			t.Fatalf("%+v: accepted %+v, which nothing matches", o, flt)
		}
		_ = flt.String()
		if err := xdpProgram(flt, onLoopback).Marshal(&bytes.Buffer{}, binary.LittleEndian); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
	})
}

// FuzzDifferential: for any options that parse and any frame, the kernel's
// verdict is the reference's. ifindex is -I's (0: none; the frames come in
// on loopback, index 1, unless nowhere), netns --netns's or -I's device's (0:
// none; the frames' is xdpNetns); nowhere: the frames come from no device
// and no socket.
func FuzzDifferential(f *testing.F) {
	a := func(s string) []byte { return []byte(s) }
	udp := ethernet(etherIPv4, cat(ipv4(mustPrefix("10.0.0.1").Addr(), mustPrefix("200.1.2.3").Addr(), 17, 0, nil), ports(1234, 53)))
	frag6 := ethernet(etherIPv6, cat(ipv6(mustPrefix("fd00::1").Addr(), mustPrefix("ff02::1").Addr(), 0),
		extension(44, 0), fragment(6, 0, true), ports(1, 80)))
	f.Add("10.0.0.0/8", "", "", "", "53", "", "udp", uint16(0), uint32(0), false, udp)
	f.Add("", "200.0.0.0/8", "", "", "", "50-60", "", uint16(1), uint32(xdpNetns), false, udp)
	f.Add("", "", "ff02::/16", "", "", "80", "tcp", uint16(0), uint32(0), false, frag6)
	f.Add("", "", "", "", "", "", "", uint16(2), uint32(0), false, a("short"))
	f.Add("", "", "", "", "", "", "udp", uint16(0), uint32(xdpNetns), true, udp)
	f.Fuzz(func(t *testing.T, saddr, daddr, addr, sport, dport, port, proto string, ifindex uint16, netns uint32, fromNowhere bool, frame []byte) {
		flt, err := Parse(Options{saddr, daddr, addr, sport, dport, port, proto})
		if err != nil {
			return
		}
		flt.Ifindex, flt.Netns = int(ifindex), netns
		at := onLoopback
		if fromNowhere {
			at = nowhere
		}
		if len(frame) < minFrame {
			frame = append(frame, make([]byte, minFrame-len(frame))...)
		}
		frame = frame[:min(len(frame), maxFrame)]
		requireBPF(t)
		prog := loadFilter(t, flt, at)
		defer prog.Close()
		got := runFilter(t, prog, frame)
		if want := referenceMatch(flt, frame, at); got != want {
			t.Fatalf("%q from %+v: kernel %v, reference %v on frame\n%s\n%v", flt, at, got, want, hex.Dump(frame),
				strings.TrimSpace(xdpProgram(flt, at).String()))
		}
	})
}
