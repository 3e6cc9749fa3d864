package progs

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Ageing. The programs count stacks in one of two generations of maps, the
// one that generationMap's value names. Each Read switches them to the
// other, waits until no program can still count in the old one, reads its
// counters and the stacks they name, and empties both of its maps before
// they are used again. So a generation holds one interval's stacks: stacks
// that stopped occurring free their buckets and keys, and what is lost to
// full maps depends on the traffic of one interval, not on the run's age.
// Nothing is lost or counted twice by it: no program counts in a
// generation while it is read and cleared.

// generations is what ageing needs of the kernel's maps.
type generations interface {
	// use makes the programs count in generation g from now on.
	use(g uint32) error
	// quiesce returns once no program can still count in generation g.
	quiesce(g uint32) error
	// counts returns generation g's counters, summed over CPUs.
	counts(g uint32) (map[stackKey]uint64, error)
	// stack returns generation g's kernel stack id, leaf first.
	stack(g uint32, id int32) ([]uint64, error)
	// clear empties generation g's counters and stacks.
	clear(g uint32) error
}

// ageing drains the generations in turn.
type ageing struct {
	gens   generations
	active uint32 // the generation the programs count in
}

// drain switches the programs to the other generation and returns what
// they counted in the one they used, which it leaves empty. Once the
// programs are detached (and have ended, see Detach), none can count in
// it: then it waits for nothing.
func (a *ageing) drain(detached bool) ([]StackCount, error) {
	old, next := a.active, 1-a.active
	if err := a.gens.use(next); err != nil {
		return nil, fmt.Errorf("switch to stack generation %d: %w", next, err)
	}
	a.active = next
	if err := a.quiesce(old, detached); err != nil {
		return nil, fmt.Errorf("wait for the programs to leave stack generation %d: %w", old, err)
	}
	counts, err := a.gens.counts(old)
	if err != nil {
		return nil, fmt.Errorf("read stack generation %d: %w", old, err)
	}
	stacks, err := a.withStacks(old, counts)
	if err != nil {
		return nil, err
	}
	if err := a.gens.clear(old); err != nil {
		return nil, fmt.Errorf("clear stack generation %d: %w", old, err)
	}
	return stacks, nil
}

func (a *ageing) quiesce(g uint32, detached bool) error {
	if detached {
		return nil
	}
	return a.gens.quiesce(g)
}

// withStacks pairs generation g's counts with the stacks they name, which
// the next use of g will give other ids.
func (a *ageing) withStacks(g uint32, counts map[stackKey]uint64) ([]StackCount, error) {
	stacks := make([]StackCount, 0, len(counts))
	pcs := map[int32][]uint64{} // a stack's several reasons and locations share it
	for key, n := range counts {
		st := StackCount{Section: Section(key.Section), Reason: key.Reason, Location: key.Location, Count: n}
		switch {
		case key.StackID == notWalked: // counted by location only
		case key.StackID < 0:
			st.Lost = key.StackID
		default:
			if _, ok := pcs[key.StackID]; !ok {
				frames, err := a.gens.stack(g, key.StackID)
				if err != nil {
					return nil, fmt.Errorf("read stack %d of generation %d: %w", key.StackID, g, err)
				}
				pcs[key.StackID] = frames
			}
			st.PCs = pcs[key.StackID]
		}
		stacks = append(stacks, st)
	}
	return stacks, nil
}

// kernelGenerations are the generations in the kernel's maps.
type kernelGenerations struct {
	selector *ebpf.Map // generationMap
	counters [numGenerations]*ebpf.Map
	traces   [numGenerations]*ebpf.Map
}

func newKernelGenerations(maps map[string]*ebpf.Map) *kernelGenerations {
	k := &kernelGenerations{selector: maps[generationMap]}
	for g := range uint32(numGenerations) {
		k.counters[g], k.traces[g] = maps[stacksMap(g)], maps[tracesMap(g)]
	}
	return k
}

func (k *kernelGenerations) use(g uint32) error {
	return k.selector.Update(uint32(0), g, ebpf.UpdateAny)
}

// quiesce waits for an RCU grace period: the programs run in RCU read-side
// critical sections, so every program that may have read the old
// generation's number has returned once one has passed. Where the kernel
// cannot say (membarrier is missing, or refused with nohz_full), it waits
// until the generation's counters stop changing, as settle does.
func (k *kernelGenerations) quiesce(g uint32) error {
	if err := waitGracePeriod(); err == nil {
		return nil
	}
	return untilUnchanged(func() (uint64, error) { return generationSum(k, g) })
}

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL (Linux 4.3, first named
// MEMBARRIER_CMD_SHARED): membarrier then returns after synchronize_rcu().
const membarrierCmdGlobal = 1

// waitGracePeriod returns after an RCU grace period.
func waitGracePeriod() error {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		return fmt.Errorf("membarrier: %w", errno)
	}
	return nil
}

func (k *kernelGenerations) counts(g uint32) (map[stackKey]uint64, error) {
	counts := map[stackKey]uint64{}
	per := make([]uint64, ebpf.MustPossibleCPU())
	var key stackKey
	it := k.counters[g].Iterate()
	for it.Next(&key, &per) {
		counts[key] = sumCPUs(per)
	}
	return counts, it.Err()
}

// generationSum is the total of generation g's counters.
func generationSum(gens generations, g uint32) (uint64, error) {
	counts, err := gens.counts(g)
	var total uint64
	for _, n := range counts {
		total += n
	}
	return total, err
}

func (k *kernelGenerations) stack(g uint32, id int32) ([]uint64, error) {
	frames := make([]uint64, k.traces[g].ValueSize()/8)
	if err := k.traces[g].Lookup(uint32(id), &frames); err != nil {
		return nil, err
	}
	for i, pc := range frames {
		if pc == 0 {
			return frames[:i], nil
		}
	}
	return frames, nil
}

// clear deletes every key of both of generation g's maps. The stacks map
// may hold stacks that no counter names (their events found the count map
// full): they go too.
func (k *kernelGenerations) clear(g uint32) error {
	if err := deleteAll[stackKey](k.counters[g]); err != nil {
		return fmt.Errorf("counters: %w", err)
	}
	if k.traces[g] == nil {
		return nil // counted by location only
	}
	if err := deleteAll[uint32](k.traces[g]); err != nil {
		return fmt.Errorf("stacks: %w", err)
	}
	return nil
}

// deleteAll deletes every key of m, which nothing else changes meanwhile.
// The keys are listed first: a deleted key cannot lead the listing on.
func deleteAll[K any](m *ebpf.Map) error {
	keys, err := listKeys[K](m)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := m.Delete(key); err != nil {
			return err
		}
	}
	return nil
}

// listKeys returns every key of m.
func listKeys[K any](m *ebpf.Map) ([]K, error) {
	var keys []K
	var prev any // nil: from the first key
	for {
		var key K
		err := m.NextKey(prev, &key)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, nil
		}
		if err != nil {
			return nil, err
		}
		keys, prev = append(keys, key), key
	}
}

// untilUnchanged reads sum until two reads a millisecond apart agree: a
// program that a CPU was running ends within microseconds, so then none
// runs that could still change it.
func untilUnchanged(sum func() (uint64, error)) error {
	last, err := sum()
	for i := 0; err == nil && i < settleReads; i++ {
		time.Sleep(time.Millisecond)
		var now uint64
		if now, err = sum(); err == nil && now == last {
			return nil
		}
		last = now
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("counters still changing after %d ms", settleReads)
}

// settleReads bounds how long untilUnchanged waits, in milliseconds.
const settleReads = 1000
