package progs

import (
	"os"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/internal/lab"
	"github.com/skbstat/skbstat/layout"
)

// TestProve proves the kernel's own BTF layout, which must pass, and
// layouts with one field moved, each of which must fail naming that field.
func TestProve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loads BPF programs and makes a network namespace: run as root")
	}
	truth, err := layout.Kernel()
	if err != nil {
		t.Skipf("no kernel BTF to take a true layout from: %v", err)
	}
	lb, err := lab.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	if err := Prove(truth, lb); err != nil {
		t.Fatalf("the kernel's BTF layout failed its proof: %v", err)
	}
	for _, c := range []struct {
		name  string
		wrong func(l *layout.Layout)
		blame string
	}{
		{"protocol", func(l *layout.Layout) { l.SkBuff.Protocol.Offset += 2 }, "skb->protocol"},
		{"data", func(l *layout.Layout) { l.SkBuff.Data.Offset = l.SkBuff.Head.Offset }, "skb->data"},
		{"data_len", func(l *layout.Layout) { l.SkBuff.DataLen.Offset = l.SkBuff.Len.Offset }, "skb->data_len"},
		{"dev", func(l *layout.Layout) { l.SkBuff.Dev.Offset += 8 }, "skb->dev"},
		{"ifindex", func(l *layout.Layout) { l.NetDevice.Ifindex.Offset += 4 }, "net_device ifindex"},
		{"nd_net", func(l *layout.Layout) { l.NetDevice.Net.Offset += uint32(l.PointerSize) }, "net_device nd_net"},
		{"ns.inum", func(l *layout.Layout) { l.Net.Inum.Offset += 4 }, "net ns.inum"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := *truth
			c.wrong(&l)
			err := Prove(&l, lb)
			if err == nil || !strings.Contains(err.Error(), "failed its proof") || !strings.Contains(err.Error(), c.blame) {
				t.Errorf("proof of a wrong %s: %v, want a failure naming %s", c.name, err, c.blame)
			}
		})
	}
}
