package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skbstat/skbstat/internal/tracefs"
	"github.com/skbstat/skbstat/layout"
)

// TestDropsMatchBpftrace counts the same drops with bpftrace, an independent
// witness, and compares the counts per drop reason.
func TestDropsMatchBpftrace(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("bpftrace"); err != nil {
		t.Fatal("bpftrace is not installed (apt-get install bpftrace; test/all.sh does)")
	}
	if _, err := tracefs.Mount(); err != nil {
		t.Fatal(err) // bpftrace attaches perf tracepoints through tracefs
	}
	l, err := layout.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	reasons, err := l.DropReasons()
	if err != nil {
		t.Fatal(err)
	}
	p := newPair(t)
	const n = 13

	// The same filter as -d b4 -p udp, in bpftrace: skb->protocol and the
	// address are compared as loaded from memory, in this machine's order.
	dst := netip.MustParseAddr(p.b4).As4()
	script := fmt.Sprintf(`tracepoint:skb:kfree_skb {
  $skb = (struct sk_buff *)args->skbaddr;
  if ($skb->protocol == %d) {
    $ip = (struct iphdr *)($skb->head + $skb->network_header);
    if ($ip->daddr == %d && $ip->protocol == 17) { @[args->reason] = count(); }
  }
}`, binary.NativeEndian.Uint16([]byte{0x08, 0x00}), binary.NativeEndian.Uint32(dst[:]))
	bt := exec.Command("bpftrace", "-e", script)
	var btOut lockedBuffer
	bt.Stdout, bt.Stderr = &btOut, &btOut
	if err := bt.Start(); err != nil {
		t.Fatal(err)
	}
	defer bt.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(btOut.String(), "Attaching 1 probe") {
		if time.Now().After(deadline) {
			t.Fatalf("bpftrace did not attach:\n%s", btOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // "Attaching" comes just before the attach

	r := startSkbstat(t, "-i", "60", "-d", p.b4, "-p", "udp")
	p.sendUDP(t, n, p.a4, p.b4)
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	bt.Process.Signal(syscall.SIGINT)
	bt.Wait()

	want := map[string]uint64{}
	for _, m := range regexp.MustCompile(`@\[(\d+)\]: (\d+)`).FindAllStringSubmatch(btOut.String(), -1) {
		reason, _ := strconv.ParseUint(m[1], 10, 32)
		count, _ := strconv.ParseUint(m[2], 10, 64)
		want[layout.ReasonName(reasons, uint32(reason))] += count
	}
	got := map[string]uint64{}
	for _, iv := range ivs {
		for _, st := range iv["DROP"].stacks {
			got[st.reason] += st.count
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || want["NO_SOCKET"] != n {
		t.Errorf("skbstat drops by reason %v, bpftrace %v, want %d NO_SOCKET in both\nbpftrace:\n%s", got, want, n, btOut.String())
	}
}
