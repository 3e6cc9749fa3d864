package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// closedPort is a UDP port nothing listens on in namespace b: every
// datagram to it is dropped by the kernel (skb:kfree_skb, NO_SOCKET).
const closedPort = 9

// pair is two network namespaces, a and b, joined by a veth pair. All of
// the benchmark's traffic goes from a to b.
type pair struct {
	a, b   string // namespace names
	a4, b4 string // IPv4 addresses
}

func newPair(ctx context.Context) (*pair, error) {
	id := strconv.Itoa(os.Getpid())
	net := os.Getpid()%250 + 1
	p := &pair{
		a: "skbench-a-" + id, b: "skbench-b-" + id,
		a4: fmt.Sprintf("10.250.%d.1", net), b4: fmt.Sprintf("10.250.%d.2", net),
	}
	const aMAC, bMAC = "02:00:00:fa:00:01", "02:00:00:fa:00:02"
	for _, args := range [][]string{
		{"netns", "add", p.a},
		{"netns", "add", p.b},
		{"link", "add", "skba" + id, "netns", p.a, "address", aMAC, "type", "veth",
			"peer", "name", "skbb" + id, "netns", p.b, "address", bMAC},
		{"-n", p.a, "addr", "add", p.a4 + "/24", "dev", "skba" + id},
		{"-n", p.b, "addr", "add", p.b4 + "/24", "dev", "skbb" + id},
		{"-n", p.a, "link", "set", "skba" + id, "up"},
		{"-n", p.b, "link", "set", "skbb" + id, "up"},
		// Permanent neighbours: no ARP joins the measured traffic.
		{"-n", p.a, "neigh", "replace", p.b4, "lladdr", bMAC, "dev", "skba" + id, "nud", "permanent"},
		{"-n", p.b, "neigh", "replace", p.a4, "lladdr", aMAC, "dev", "skbb" + id, "nud", "permanent"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			p.close()
			return nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	return p, nil
}

func (p *pair) close() {
	exec.Command("ip", "netns", "del", p.a).Run()
	exec.Command("ip", "netns", "del", p.b).Run()
}

// sendCmd sends n UDP datagrams from a to b's port, one every pause.
func (p *pair) sendCmd(ctx context.Context, t tools, n, port int, pause string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", "netns", "exec", p.a, t.traffic, "udp",
		"-n", strconv.Itoa(n), "-interval", pause, "-src", p.a4,
		fmt.Sprintf("%s:%d", p.b4, port))
}
