package progs

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeKernel counts events as the programs do, without a kernel: each in
// a read section that quiesce waits out (RCU's part), it reads the
// generation number, records the stack in that generation's stack map of
// few buckets (no probing: a taken bucket loses the stack, -EEXIST) and
// adds one to the counter of its key there.
type fakeKernel struct {
	rcu      sync.RWMutex
	active   atomic.Uint32
	mu       sync.Mutex // the maps
	counters [numGenerations]map[stackKey]uint64
	traces   [numGenerations]map[int32][]uint64
	buckets  int32
}

func newFakeKernel(buckets int32) *fakeKernel {
	f := &fakeKernel{buckets: buckets}
	for g := range f.counters {
		f.counters[g], f.traces[g] = map[stackKey]uint64{}, map[int32][]uint64{}
	}
	return f
}

// fakeStack is the kernel stack of kind i, and its location.
func fakeStack(i int) ([]uint64, uint64) {
	return []uint64{0xffff0000 + uint64(i), 0xffff1000}, uint64(i)
}

// event counts one event of kind i.
func (f *fakeKernel) event(i int) {
	f.rcu.RLock()
	defer f.rcu.RUnlock()
	g := f.active.Load()
	runtime.Gosched() // a switch may come between reading g and counting
	pcs, location := fakeStack(i)
	f.mu.Lock()
	defer f.mu.Unlock()
	id := int32(pcs[0] % uint64(f.buckets))
	if held, ok := f.traces[g][id]; ok && fmt.Sprint(held) != fmt.Sprint(pcs) {
		id = -17
	} else {
		f.traces[g][id] = pcs
	}
	f.counters[g][stackKey{Section: uint32(Drop), StackID: id, Location: location}]++
}

func (f *fakeKernel) use(g uint32) error { f.active.Store(g); return nil }

func (f *fakeKernel) quiesce(uint32) error {
	f.rcu.Lock() // waits until every read section that began has ended
	f.rcu.Unlock()
	return nil
}

func (f *fakeKernel) counts(g uint32) (map[stackKey]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	counts := map[stackKey]uint64{}
	for k, n := range f.counters[g] {
		counts[k] = n
	}
	return counts, nil
}

func (f *fakeKernel) stack(g uint32, id int32) ([]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pcs, ok := f.traces[g][id]
	if !ok {
		return nil, fmt.Errorf("no stack %d", id)
	}
	return pcs, nil
}

func (f *fakeKernel) clear(g uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters[g], f.traces[g] = map[stackKey]uint64{}, map[int32][]uint64{}
	return nil
}

// TestDrainExact drains while four CPUs count events of 40 kinds into a
// stack map of 16 buckets, so that stack ids are reused by other stacks
// from one generation to the next: every event is drained exactly once,
// under its own kind, and every recorded stack is its kind's.
func TestDrainExact(t *testing.T) {
	f := newFakeKernel(16)
	a := &ageing{gens: f}
	const cpus, perCPU, kinds = 4, 5000, 40
	var wg sync.WaitGroup
	for c := range cpus {
		wg.Go(func() {
			for i := range perCPU {
				f.event((c*perCPU + i) % kinds)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	got := map[uint64]uint64{} // drained per location, that is per kind
	var drains, lost int
	drain := func() {
		stacks, err := a.drain(false)
		if err != nil {
			t.Fatal(err)
		}
		drains++
		for _, st := range stacks {
			got[st.Location] += st.Count
			if st.Lost != 0 {
				lost++
				continue
			}
			if want, _ := fakeStack(int(st.Location)); fmt.Sprint(st.PCs) != fmt.Sprint(want) {
				t.Errorf("kind %d counted under stack %x", st.Location, st.PCs)
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		drain()
	}
	drain() // what was counted since the last drain that began before the end
	for i := range kinds {
		if want := uint64(cpus * perCPU / kinds); got[uint64(i)] != want {
			t.Errorf("kind %d: %d events drained, want %d", i, got[uint64(i)], want)
		}
	}
	for g := range uint32(numGenerations) {
		if n, _ := generationSum(f, g); n != 0 {
			t.Errorf("generation %d holds %d events after the last drain", g, n)
		}
	}
	if drains < 3 || lost == 0 {
		t.Errorf("%d drains, %d lost-stack entries: the test did not switch generations under load, or no stack collided", drains, lost)
	}
}

// TestDrainFreesStacks: in a stack map of one bucket, the stack of the
// first interval does not keep the second interval's from being recorded.
func TestDrainFreesStacks(t *testing.T) {
	f := newFakeKernel(1)
	a := &ageing{gens: f}
	for i := range 3 {
		f.event(i)
		stacks, err := a.drain(false)
		if err != nil {
			t.Fatal(err)
		}
		if len(stacks) != 1 || stacks[0].Lost != 0 || stacks[0].Location != uint64(i) || stacks[0].Count != 1 {
			t.Errorf("interval %d: %+v, want kind %d recorded once", i, stacks, i)
		}
	}
}

// TestEntriesWithin: a router of 128 MB RAM and 2 CPUs (a budget of 1 MB a
// map) keeps 512 stacks and 8192 counters per generation; a server of
// 64 GB and 256 CPUs keeps 8192 stacks and 16384 counters; a budget
// smaller than minEntries allows keeps minEntries.
func TestEntriesWithin(t *testing.T) {
	for _, c := range []struct {
		name          string
		cpus          int
		budget        uint64
		stacks, count uint32
	}{
		{"router", 2, 128 << 20 / 128, 512, 8192},
		{"server", 256, 64 << 30 / 128, 8192, 16384},
		{"tiny", 1, 1000, minEntries, minEntries},
	} {
		var got []uint32
		for _, spec := range stackSpecs(true, MaxStackDepth, Allocation{}) {
			if resizable(spec) {
				got = append(got, entriesWithin(spec, c.cpus, c.budget))
			}
		}
		if want := []uint32{c.count, c.stacks, c.count, c.stacks}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: entries %v, want %v (counters, stacks of each generation)", c.name, got, want)
		}
	}
}

// TestDrainEndedWaitsForNothing checks that the read after Detach does not
// wait for a grace period, which costs milliseconds at every exit: a
// program held in its read section would block a drain that waits.
func TestDrainEndedWaitsForNothing(t *testing.T) {
	f := newFakeKernel(8)
	f.event(1)
	a := &ageing{gens: f}
	f.rcu.RLock() // a program that never ends, which a wait would wait for
	defer f.rcu.RUnlock()
	done := make(chan []StackCount)
	go func() {
		stacks, err := a.drain(true)
		if err != nil {
			t.Error(err)
		}
		done <- stacks
	}()
	select {
	case stacks := <-done:
		if len(stacks) != 1 || stacks[0].Count != 1 {
			t.Errorf("drained %+v, want the one event", stacks)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain of ended programs waited for a program to leave its read section")
	}
}
