package e2e

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vlanTag is an 802.1Q or 802.1ad tag.
type vlanTag struct{ tpid, vid uint16 }

// The VLAN tags of the tests, outermost first: one 802.1Q tag, and QinQ (an
// 802.1ad tag before an 802.1Q one).
var vlanTagSets = [][]vlanTag{{{0x8100, 10}}, {{0x88a8, 10}, {0x8100, 20}}}

// tagsArg writes tags as traffic frames -tags takes them.
func tagsArg(tags []vlanTag) string {
	var s []string
	for _, t := range tags {
		s = append(s, fmt.Sprintf("%04x:%d", t.tpid, t.vid))
	}
	return strings.Join(s, ",")
}

// TestVLANTagsInData sends raw Ethernet frames with VLAN tags from a to b:
// skbstat must see the IP datagram behind the tags in every row. On b,
// net:netif_receive_skb fires before the kernel untags, with skb->protocol
// the outer TPID and skb->data at the first tag's TCI (veth moves no tag
// into skb->vlan_tci: bpftrace showed protocol 0x8100 or 0x88a8, vlan_all
// 0 and len counting the tags there, on 6.18). Then b, which has no VLAN
// device, untags the outer tag and drops the frame: at kfree_skb a QinQ
// frame's network header is at its inner tag. On a, packet_snd set the
// network header past the tags, so the ethertype before it is the inner one.
func TestVLANTagsInData(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	for _, fam := range vlanFamilies(p) {
		for _, tags := range vlanTagSets {
			t.Run(fam.name+" "+tagsArg(tags), func(t *testing.T) {
				checkEveryRow(t, fam.src, fam.dst, func() { p.sendFrames(t, fam, tags) })
			})
		}
	}
	// Behind a third tag at skb->data the filter sees no IP: only the
	// QinQ frames count.
	t.Run("three tags", func(t *testing.T) {
		fam := vlanFamilies(p)[0]
		r := startSkbstat(t, "--input", "--no_drop", "-i", "60", "-d", fam.dst, "-D", closedPort, "-p", "udp")
		qinq := vlanTagSets[1]
		p.sendFrames(t, fam, qinq)
		p.sendFrames(t, fam, append([]vlanTag{{0x8100, 30}}, qinq...))
		settle()
		if n := sum(r.stop(t, syscall.SIGINT), rowCount("INGRESS", "net:netif_receive_skb")); n != datagrams {
			t.Errorf("INGRESS net:netif_receive_skb: %d, want the %d QinQ frames\n%s", n, datagrams, r.stdout.String())
		}
	})
}

// sendFrames sends raw frames with tags from a to b's closed port.
func (p *pair) sendFrames(t *testing.T, fam vlanFamily, tags []vlanTag) {
	t.Helper()
	p.traffic(t, p.a, "frames", "-n", strconv.Itoa(datagrams), "-dev", p.aDev, "-tags", tagsArg(tags),
		"-src", hostPort(fam.src, srcPort), hostPort(fam.dst, closedPort))
}

// TestVLANTagInsertedAtEgress tags a's UDP datagrams as a VLAN device does:
// a TC program on a's veth puts each tag into skb->vlan_tci before
// net_dev_queue (a second tag moves the first into the data, with the
// network header at its TCI), and with the veth's VLAN tag offloads off,
// validate_xmit_vlan writes the one in vlan_tci into the data after
// net_dev_queue, leaving the network header where it was: skb->protocol is
// a TPID at net_dev_xmit. (A VLAN device would need CONFIG_VLAN_8021Q,
// which this machine's kernel lacks.) b receives the tags in the data.
func TestVLANTagInsertedAtEgress(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Fatal("ethtool is not installed (apt-get install ethtool; test/all.sh does)")
	}
	for _, tags := range vlanTagSets {
		t.Run(tagsArg(tags), func(t *testing.T) {
			p := newPair(t)
			p.exec(t, p.a, "ethtool", "-K", p.aDev, "txvlan", "off", "tx-vlan-stag-hw-insert", "off")
			pushVLANTags(t, p, tags)
			for _, fam := range vlanFamilies(p) {
				t.Run(fam.name, func(t *testing.T) {
					checkEveryRow(t, fam.src, fam.dst, func() { p.sendUDP(t, datagrams, fam.src, fam.dst) })
				})
			}
		})
	}
}

type vlanFamily struct{ name, src, dst string }

func vlanFamilies(p *pair) []vlanFamily {
	return []vlanFamily{{"IPv4", p.a4, p.b4}, {"IPv6", p.a6, p.b6}}
}

// checkEveryRow checks that the datagrams send sends from src to dst's
// closed port are counted exactly once in every row, INGRESS, EGRESS and
// DROP, and that a filter on another address counts none of them.
func checkEveryRow(t *testing.T, src, dst string, send func()) {
	t.Helper()
	filter := func(addr string) []string {
		return []string{"--input", "--output", "-i", "60", "-d", addr, "-D", closedPort, "-p", "udp"}
	}
	match := startSkbstat(t, filter(dst)...)
	other := startSkbstat(t, filter(src)...)
	send()
	settle()
	for _, c := range []struct {
		r    *run
		want uint64
	}{{match, datagrams}, {other, 0}} {
		ivs := c.r.stop(t, syscall.SIGINT)
		checkTracepointRows(t, ivs, c.want, c.r.stdout.String())
		if n := sum(ivs, stackCount("DROP", "")); n != c.want {
			t.Errorf("DROP: %d, want %d\n%s", n, c.want, c.r.stdout.String())
		}
	}
}

// pushVLANTags attaches a TC program to the egress of a's veth that pushes
// tags, innermost first, with bpf_skb_vlan_push. The TC filter keeps the
// program until the namespace goes.
func pushVLANTags(t *testing.T, p *pair, tags []vlanTag) {
	t.Helper()
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	for _, tag := range slices.Backward(tags) {
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R6),
			// a __be16: the TPID as it lies in memory
			asm.Mov.Imm(asm.R2, int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, tag.tpid)))),
			asm.Mov.Imm(asm.R3, int32(tag.vid)),
			asm.FnSkbVlanPush.Call(),
		)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return()) // TC_ACT_OK
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "e2e_vlan_push", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	ns, err := netns.GetFromName(p.a)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth, err := h.LinkByName(p.aDev)
	if err != nil {
		t.Fatal(err)
	}
	index := veth.Attrs().Index
	clsact := &netlink.GenericQdisc{QdiscType: "clsact",
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := h.QdiscAdd(clsact); err != nil {
		t.Fatalf("clsact qdisc on %s: %v", p.aDev, err)
	}
	filter := &netlink.BpfFilter{Fd: prog.FD(), Name: "e2e_vlan_push", DirectAction: true,
		FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: netlink.HANDLE_MIN_EGRESS, Handle: netlink.MakeHandle(0, 1), Protocol: unix.ETH_P_ALL, Priority: 1}}
	if err := h.FilterAdd(filter); err != nil {
		t.Fatalf("TC filter on %s: %v", p.aDev, err)
	}
}
