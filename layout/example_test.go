package layout_test

import (
	"fmt"

	"github.com/skbstat/skbstat/internal/tracefs"
	"github.com/skbstat/skbstat/layout"
)

// The drop reason argument of skb:kfree_skb, from kernel BTF where the kernel
// has it, else from the tracepoint's format file.
func Example() {
	l, err := layout.Kernel()
	if err != nil {
		dir, err := tracefs.Mount()
		if err != nil {
			fmt.Println(err)
			return
		}
		f, err := tracefs.ReadFormat(dir, "skb", "kfree_skb")
		if err != nil {
			fmt.Println(err)
			return
		}
		tp, err := layout.PerfTracepoint(f, "skb", "kfree_skb")
		fmt.Println(tp.Reason, err, len(layout.DropReasonsFromFormat(f)))
		return
	}
	tp, err := l.RawTracepoint("skb", "kfree_skb")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sk_buff.len at", l.SkBuff.Len.Offset, "reason in slot", tp.Reason.Offset/8)
}

func ExampleReasonName() {
	reasons := map[uint32]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET"}
	for _, v := range []uint32{3, 200, 2<<16 | 5} {
		fmt.Println(layout.ReasonName(reasons, v))
	}
	// Output:
	// NO_SOCKET
	// 0xc8
	// SUBSYS_2:0x5
}
