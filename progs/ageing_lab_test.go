package progs

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/internal/lab"
)

// sendKind is a way to send a datagram: each system call reaches the
// closed port's drop through kernel code of its own, so its stack differs.
type sendKind struct {
	name string
	send func(lb *lab.Lab, p lab.Packet) error
}

var sendKinds = []sendKind{
	{"send", func(lb *lab.Lab, p lab.Packet) error { return lb.Send(p) }},
	{"corked", func(lb *lab.Lab, p lab.Packet) error { p.Paged = 8; return lb.Send(p) }},
	{"write", onSocket(func(fd int, b []byte) error { _, err := unix.Write(fd, b); return err })},
	{"writev", onSocket(func(fd int, b []byte) error { _, err := unix.Writev(fd, [][]byte{b}); return err })},
	{"sendmsg", onSocket(func(fd int, b []byte) error { _, err := unix.SendmsgN(fd, b, nil, nil, 0); return err })},
}

// onSocket sends a datagram through write on the lab's socket for p, again
// where the socket had a pending error from an ICMP message about an
// earlier datagram, which fails a write without sending it.
func onSocket(write func(fd int, b []byte) error) func(*lab.Lab, lab.Packet) error {
	return func(lb *lab.Lab, p lab.Packet) error {
		fd, err := lb.Socket(p)
		if err != nil {
			return err
		}
		b := make([]byte, p.Payload)
		if err := write(fd, b); !errors.Is(err, unix.ECONNREFUSED) {
			return err
		}
		return write(fd, b)
	}
}

// intervalCounts is what one Read gave: events with a recorded stack, with
// a lost one, and in the count-map-full note.
type intervalCounts struct{ recorded, lost, full uint64 }

func (c intervalCounts) all() uint64 { return c.recorded + c.lost + c.full }

func (c *intervalCounts) add(o intervalCounts) {
	c.recorded, c.lost, c.full = c.recorded+o.recorded, c.lost+o.lost, c.full+o.full
}

// lostShare is the share of events without a stack or a counter of their own.
func (c intervalCounts) lostShare() float64 { return float64(c.lost+c.full) / float64(c.all()) }

func classify(c Counts) intervalCounts {
	ic := intervalCounts{full: c.Noted(Drop, CountMapFull)}
	for _, st := range c.Stacks {
		if st.Lost != 0 {
			ic.lost += st.Count
		} else {
			ic.recorded += st.Count
		}
	}
	return ic
}

// TestAgeingLostShare runs 100 intervals with maps of 8 stacks and 8
// counters per generation, sending datagrams to a closed port in 10 kinds
// (five system calls, IPv4 and IPv6), each reaching the drop at a stack of
// its own. Busy intervals send 2 of every kind: more stacks than the maps
// hold, so some are lost. Quiet intervals, in between, send 5 of one kind,
// a different one each time. Every interval's events are all counted
// (recorded, lost or noted); the quiet ones lose nothing (kept forever,
// the busy intervals' stacks and keys would block theirs); and the busy
// ones lose as much at the end as at the start.
func TestAgeingLostShare(t *testing.T) {
	l := kernelLayout(t)
	defer func(counters, stacks uint32) { countEntries, stackEntries = counters, stacks }(countEntries, stackEntries)
	countEntries, stackEntries = 8, 8
	lb := openLab(t)
	if !lb.IPv6 {
		t.Fatal("no IPv6 in the test namespace: half of the kinds cannot be sent")
	}
	from, to := lb.Addrs(lab.Packet{})
	s := loadDrops(t, l, filter.Options{Sport: strconv.Itoa(int(from.Port())), Dport: strconv.Itoa(int(to.Port())), Proto: "udp"})
	const intervals, window = 100, 20
	kinds := 2 * len(sendKinds)
	var sent uint64
	var quiet, firstBusy, lastBusy, all intervalCounts
	for i := range intervals {
		want := sendInterval(t, lb, i, kinds)
		sent += want
		waitTotal(t, s, sent)
		c, err := s.Read()
		if err != nil {
			t.Fatal(err)
		}
		ic := classify(c)
		if ic.all() != want {
			t.Errorf("interval %d: %+v, %d in all, want %d", i, ic, ic.all(), want)
		}
		all.add(ic)
		switch {
		case i%2 == 1:
			quiet.add(ic)
		case i < window:
			firstBusy.add(ic)
		case i >= intervals-window:
			lastBusy.add(ic)
		}
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	all.add(classify(c))
	t.Logf("all: %+v of %d sent; quiet intervals: %+v; busy: lost share %.3f in the first %d intervals, %.3f in the last %d",
		all, sent, quiet, firstBusy.lostShare(), window, lastBusy.lostShare(), window)
	if all.all() != sent {
		t.Errorf("%d events counted (%+v), want %d", all.all(), all, sent)
	}
	if firstBusy.lost+firstBusy.full == 0 {
		t.Error("nothing lost in busy intervals: the maps were not too small, the test tests nothing")
	}
	// A quiet interval's one stack could only collide with a stack of
	// its own kind sent from another context (ksoftirqd, say): rare.
	if quiet.lostShare() > 0.05 {
		t.Errorf("quiet intervals lost %.3f of their events (%+v): earlier stacks kept theirs out", quiet.lostShare(), quiet)
	}
	if lastBusy.lostShare() > firstBusy.lostShare()+0.05 {
		t.Errorf("busy intervals' lost share grew from %.3f in the first %d intervals to %.3f in the last %d", firstBusy.lostShare(), window, lastBusy.lostShare(), window)
	}
}

// sendInterval sends interval i's datagrams, of kinds kinds, and returns
// how many.
func sendInterval(t *testing.T, lb *lab.Lab, i, kinds int) uint64 {
	t.Helper()
	send := func(k, n int) {
		kind := sendKinds[k/2]
		for range n {
			if err := kind.send(lb, lab.Packet{IPv6: k%2 == 1, Payload: 32}); err != nil {
				t.Fatalf("%s: %v", kind.name, err)
			}
		}
	}
	if i%2 == 1 {
		send(i/2%kinds, 5)
		return 5
	}
	for k := range kinds {
		send(k, 2)
	}
	return uint64(2 * kinds)
}

// waitTotal waits until s has counted want events since Load, or 5 seconds.
func waitTotal(t *testing.T, s *Set, want uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n, err := s.total()
		if err != nil {
			t.Fatal(err)
		}
		if n >= want {
			return
		}
	}
}
