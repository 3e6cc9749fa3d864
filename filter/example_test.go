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
	listing := fmt.Sprint(f.Instructions(xdpSource{}, binary.LittleEndian, "reject"))
	for line := range strings.Lines(listing) {
		fmt.Println(strings.TrimRight(line, " \n")) // no trailing blanks in // Output
	}
	// Output:
	// src 10.0.0.0/8 and proto udp and dst port 53
	// 	  ; filter: ethertype 0x0800
	// 	 0: LdXMemW dst: r3 src: r6 off: 0 imm: 0
	// 	 1: LdXMemW dst: r4 src: r6 off: 4 imm: 0
	// 	 2: MovReg dst: r2 src: r3
	// 	 3: AddImm dst: r2 imm: 14
	// 	 4: JGTReg dst: r2 off: -1 src: r4 <reject>
	// 	 5: LdXMemH dst: r2 src: r3 off: 12 imm: 0
	// 	 6: JNE32Imm dst: r2 off: -1 imm: 8 <reject>
	// 	  ; filter: fetch the 20-byte IP header
	// 	 7: MovImm dst: r8 imm: 0
	// 	 8: LdXMemW dst: r7 src: r6 off: 0 imm: 0
	// 	 9: AddImm dst: r7 imm: 14
	// 	10: MovReg dst: r1 src: r7
	// 	11: AddReg dst: r1 src: r8
	// 	12: MovReg dst: r3 src: r1
	// 	13: AddImm dst: r3 imm: 20
	// 	14: LdXMemW dst: r4 src: r6 off: 4 imm: 0
	// 	15: JGTReg dst: r3 off: -1 src: r4 <reject>
	// 	16: LdXMemB dst: r2 src: r1 off: 0 imm: 0
	// 	17: MovReg dst: r8 src: r2
	// 	18: AndImm dst: r8 imm: 15
	// 	19: RShImm dst: r2 imm: 4
	// 	20: JNEImm dst: r2 off: -1 imm: 4 <reject>
	// 	21: JLTImm dst: r8 off: -1 imm: 5 <reject>
	// 	22: LShImm dst: r8 imm: 2
	// 	  ; filter: address at header offset 12 in 10.0.0.0/8
	// 	23: LdXMemW dst: r2 src: r1 off: 12 imm: 0
	// 	24: AndImm32 dst: r2 imm: 255
	// 	25: JNE32Imm dst: r2 off: -1 imm: 10 <reject>
	// 	26: LdXMemB dst: r9 src: r1 off: 9 imm: 0
	// 	27: LdXMemH dst: r2 src: r1 off: 6 imm: 0
	// 	28: AndImm32 dst: r2 imm: 65311
	// 	29: JNE32Imm dst: r2 off: -1 imm: 0 <reject>
	// 	30: JNEImm dst: r9 off: -1 imm: 17 <reject>
	// 	31: MovReg dst: r1 src: r7
	// 	32: AddReg dst: r1 src: r8
	// 	33: MovReg dst: r3 src: r1
	// 	34: AddImm dst: r3 imm: 4
	// 	35: LdXMemW dst: r4 src: r6 off: 4 imm: 0
	// 	36: JGTReg dst: r3 off: -1 src: r4 <reject>
	// 	  ; filter: ports
	// 	37: LdXMemH dst: r3 src: r1 off: 2 imm: 0
	// 	38: SwapBE dst: r3
	// 	39: JNEImm dst: r3 off: -1 imm: 53 <reject>
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
