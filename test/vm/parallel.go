package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Each runs f for every kernel, each in a subtest named after the kernel,
// all at the same time, and returns when all have ended. Run boots only
// as many VMs at once as the machine has CPUs (two on the CI machine), so
// the others wait for a slot while their kernels are prepared and their
// binaries built. The subtests do not call
// t.Parallel: that would make the -parallel flag, not the machine's CPUs,
// decide how many run, and would run them only after the calling test
// returned.
func Each(t *testing.T, kernels []Kernel, f func(t *testing.T, k Kernel)) {
	var wg sync.WaitGroup
	for _, k := range kernels {
		wg.Go(func() { t.Run(k.Name, func(t *testing.T) { f(t, k) }) })
	}
	wg.Wait()
}

// bootSlots is how many VMs boot at once on this machine, counting those
// of every process that shares the cache (go test runs packages in
// parallel). Each software-emulated guest keeps one CPU busy; more guests
// than CPUs would only slow every boot down towards its timeout.
var bootSlots = runtime.NumCPU()

// slotPoll is how often a boot that waits for a slot tries again.
const slotPoll = 100 * time.Millisecond

// acquireBootSlot waits for a free boot slot and returns the function
// that frees it. A slot is an flock on one of bootSlots files in the cache
// directory: it holds between processes, and the kernel frees it when a
// process dies.
func acquireBootSlot(ctx context.Context) (release func(), err error) {
	dir, err := cacheDir()
	if err != nil {
		return nil, err
	}
	for {
		for i := range bootSlots {
			f, err := tryLock(filepath.Join(dir, fmt.Sprintf("boot-slot-%d", i)))
			if err != nil {
				return nil, err
			}
			if f != nil {
				return func() { f.Close() }, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a boot slot: %w", ctx.Err())
		case <-time.After(slotPoll):
		}
	}
}

// tryLock returns file opened and locked, or nil if another open file
// holds its lock.
func tryLock(file string) (*os.File, error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("boot slot: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, nil
	default:
		f.Close()
		return nil, fmt.Errorf("boot slot: lock %s: %w", file, err)
	}
}
