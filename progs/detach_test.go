package progs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/skbstat/skbstat/internal/lab"
)

// labDatagram goes over the lab's lo to its closed port, where it is
// dropped.
var labDatagram = lab.Packet{Payload: 32}

// TestDetachThenRead floods a closed port and detaches mid-flood: the read
// after Detach holds every drop counted (the sum of all reads equals what
// the kernel's maps hold), no more than were sent when Detach returned,
// and nothing is counted after it, though the flood goes on. (Fewer may be
// counted than were sent before Detach: a datagram's drop may wait in a
// softirq past its send.)
func TestDetachThenRead(t *testing.T) {
	l := kernelLayout(t)
	lb := openLab(t)
	s, err := Load(Config{Layout: l, Filter: labFilter(t, lb, false, false), Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var sent atomic.Uint64
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			// Counted before it is sent: its drop, inside Send, may be
			// counted before Send returns.
			sent.Add(1)
			if err := lb.Send(labDatagram); err != nil {
				done <- err
				return
			}
		}
	}()
	var printed uint64
	read := func() uint64 {
		c, err := s.Read()
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, st := range c.Stacks {
			n += st.Count
		}
		printed += n
		return n
	}
	time.Sleep(100 * time.Millisecond)
	read() // an interval in the middle of the flood
	time.Sleep(100 * time.Millisecond)
	before := sent.Load()
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	after := sent.Load()
	read()
	time.Sleep(50 * time.Millisecond)
	late := read()
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	inMaps, err := s.total()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d datagrams sent before Detach, %d when it returned; %d counted", before, after, printed)
	if late != 0 {
		t.Errorf("%d drops counted after Detach", late)
	}
	if printed != inMaps {
		t.Errorf("reads gave %d drops, the kernel's maps hold %d", printed, inMaps)
	}
	if printed == 0 || printed > after {
		t.Errorf("%d drops counted, want some and at most %d (sent when Detach returned)", printed, after)
	}
}
