package output_test

import (
	"os"
	"time"

	"github.com/skbstat/skbstat/output"
)

func ExampleWrite() {
	now := time.Date(2021, 3, 9, 17, 53, 34, 0, time.UTC)
	output.Write(os.Stdout, now, []output.Section{
		{Name: "INGRESS", Rows: []output.Row{
			{Name: "net:netif_receive_skb", Rank: 30, Count: 3},
			{Name: "udp_rcv", Rank: 2, Count: 3},
		}},
		{Name: "DROP", Stacks: []output.Stack{
			{Count: 3, Reason: "NO_SOCKET", Frames: []string{
				"sk_skb_reason_drop+0x5",
				"__udp4_lib_rcv+0x7a1",
				"ip_protocol_deliver_rcu+0x2d",
			}},
			{Count: 1, Reason: "NO_SOCKET", LostID: -17, Frames: []string{"__udp4_lib_rcv+0x7a1"}},
		}},
	})
	// Output:
	// TIME     NUM    FUNC/STACK
	// 17:53:34        [INGRESS]
	//          3      udp_rcv
	//          3      net:netif_receive_skb
	//
	// TIME     NUM    FUNC/STACK
	// 17:53:34        [DROP]
	//          1      NO_SOCKET
	//                 [lost kernel stack id -17]
	//                 __udp4_lib_rcv+0x7a1
	//          3      NO_SOCKET
	//                 sk_skb_reason_drop+0x5
	//                 __udp4_lib_rcv+0x7a1
	//                 ip_protocol_deliver_rcu+0x2d
}
