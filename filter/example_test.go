package filter

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A filter compiles to instructions that fall through on a match and jump
// to the reject label otherwise. Here the Source is the test's XDP one;
// a tracing probe gets the same filter code around its own Source.
func ExampleFilter_Instructions() {
	f, err := Parse(Options{Saddr: "10.0.0.0/8", Proto: "udp", Dport: "53"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(f)
	listing := fmt.Sprint(f.Instructions(xdpSource{onLoopback}, binary.LittleEndian, "reject"))
	for line := range strings.Lines(listing) {
		fmt.Println(strings.TrimRight(line, " \n")) // no trailing blanks in // Output
	}
	// Output:
	// src 10.0.0.0/8 and proto udp and dst port 53
	// 	   ; filter: ethertype 0x0800
	// 	  0: LdXMemW dst: r3 src: r6 off: 0 imm: 0
	// 	  1: LdXMemW dst: r4 src: r6 off: 4 imm: 0
	// 	  2: MovReg dst: r2 src: r3
	// 	  3: AddImm dst: r2 imm: 14
	// 	  4: JGTReg dst: r2 off: -1 src: r4 <reject>
	// 	  5: LdXMemH dst: r2 src: r3 off: 12 imm: 0
	// 	  6: JNE32Imm dst: r2 off: -1 imm: 8 <reject>
	// 	   ; filter: fetch the 20-byte IP header, and the ports where they follow it
	// 	  7: MovImm dst: r8 imm: 0
	// 	  8: LdXMemW dst: r7 src: r6 off: 0 imm: 0
	// 	  9: AddImm dst: r7 imm: 14
	// 	 10: MovReg dst: r2 src: r8
	// 	 11: AddImm dst: r2 imm: 14
	// 	 12: MovReg dst: r1 src: r6
	// 	 13: MovReg dst: r3 src: rfp
	// 	 14: AddImm dst: r3 imm: -64
	// 	 15: MovImm dst: r4 imm: 24
	// 	 16: Call FnXdpLoadBytes
	// 	 17: JNEImm dst: r0 off: -1 imm: 0 <reject>
	// 	 18: MovReg dst: r1 src: rfp
	// 	 19: AddImm dst: r1 imm: -64
	// 	 20: LdXMemB dst: r2 src: r1 off: 0 imm: 0
	// 	 21: MovReg dst: r8 src: r2
	// 	 22: AndImm dst: r8 imm: 15
	// 	 23: RShImm dst: r2 imm: 4
	// 	 24: JNEImm dst: r2 off: -1 imm: 4 <reject>
	// 	 25: JLTImm dst: r8 off: -1 imm: 5 <reject>
	// 	 26: LShImm dst: r8 imm: 2
	// 	   ; filter: address at header offset 12 in 10.0.0.0/8
	// 	 27: LdXMemW dst: r2 src: r1 off: 12 imm: 0
	// 	 28: AndImm32 dst: r2 imm: 255
	// 	 29: JNE32Imm dst: r2 off: -1 imm: 10 <reject>
	// 	 30: LdXMemB dst: r9 src: r1 off: 9 imm: 0
	// 	 31: LdXMemH dst: r2 src: r1 off: 6 imm: 0
	// 	 32: AndImm32 dst: r2 imm: 65311
	// 	 33: JNE32Imm dst: r2 off: -1 imm: 0 <reject>
	// 	 34: MovImm dst: r4 imm: 0
	// 	 35: JNEImm dst: r8 off: 2 imm: 20
	// 	 36: MovReg dst: r4 src: r1
	// 	 37: AddImm dst: r4 imm: 20
	// 	 38: JNEImm dst: r9 off: -1 imm: 17 <reject>
	// 	 39: JNEImm dst: r4 off: 10 imm: 0
	// 	 40: MovReg dst: r2 src: r8
	// 	 41: AddImm dst: r2 imm: 14
	// 	 42: MovReg dst: r1 src: r6
	// 	 43: MovReg dst: r3 src: rfp
	// 	 44: AddImm dst: r3 imm: -64
	// 	 45: MovImm dst: r4 imm: 4
	// 	 46: Call FnXdpLoadBytes
	// 	 47: JNEImm dst: r0 off: -1 imm: 0 <reject>
	// 	 48: MovReg dst: r4 src: rfp
	// 	 49: AddImm dst: r4 imm: -64
	// 	   ; filter: ports
	// 	 50: LdXMemH dst: r3 src: r4 off: 2 imm: 0
	// 	 51: SwapBE dst: r3
	// 	 52: JNEImm dst: r3 off: -1 imm: 53 <reject>
}

func ExampleParse() {
	_, err := Parse(Options{Saddr: "10.0.0.0/8", Daddr: "fd00::1"})
	fmt.Println(err)
	_, err = Parse(Options{Port: "9-3"})
	fmt.Println(err)
	f, _ := Parse(Options{Addr: "::ffff:192.0.2.1/120", Port: "8000-8100"})
	fmt.Println(f)
	// Output:
	// -s 10.0.0.0/8 -d fd00::1: -s is IPv4 and -d is IPv6, so no packet can match
	// -P 9-3: range is reversed
	// src or dst 192.0.2.0/24 and src or dst port 8000-8100
}
