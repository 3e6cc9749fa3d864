package e2e

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"

	"github.com/skbstat/skbstat/filter"
)

// TestLongIPv6HeaderChain sends IPv6 datagrams behind as many destination
// options headers as the filter walks, and behind one more: the first are
// counted in the rows, the others in the section's note of packets not
// decided, never lost. A filter on the address alone needs no walk and
// counts both.
func TestLongIPv6HeaderChain(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	undecided := fmt.Sprintf("[not decided: IPv6 header chain longer than %d]", filter.MaxExtensionHeaders)
	ports := startSkbstat(t, "--input", "-i", "60", "-d", p.b6, "-D", closedPort, "-p", "udp")
	address := startSkbstat(t, "--input", "-i", "60", "-d", p.b6)
	for _, headers := range []int{filter.MaxExtensionHeaders, filter.MaxExtensionHeaders + 1} {
		p.traffic(t, p.a, "frames", "-n", strconv.Itoa(datagrams), "-dev", p.aDev, "-ext", strconv.Itoa(headers),
			"-src", hostPort(p.a6, srcPort), hostPort(p.b6, closedPort))
	}
	settle()
	out := ports.stop(t, syscall.SIGINT)
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"INGRESS net:netif_receive_skb", sum(out, rowCount("INGRESS", "net:netif_receive_skb")), datagrams},
		{"INGRESS " + undecided, sum(out, rowCount("INGRESS", undecided)), datagrams},
		{"DROP " + undecided, sum(out, stackCount("DROP", undecided)), datagrams},
		{"DROP in all", sum(out, stackCount("DROP", "")), 2 * datagrams},
	} {
		if c.got != c.want {
			t.Errorf("-D %s -p udp: %s: %d, want %d\n%s", closedPort, c.what, c.got, c.want, ports.stdout.String())
		}
	}
	if n := sum(address.stop(t, syscall.SIGINT), rowCount("INGRESS", "net:netif_receive_skb")); n != 2*datagrams {
		t.Errorf("-d %s: INGRESS net:netif_receive_skb: %d, want %d\n%s", p.b6, n, 2*datagrams, address.stdout.String())
	}
}
