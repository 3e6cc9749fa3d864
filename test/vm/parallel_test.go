package vm

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
)

// TestBootSlots takes every slot, checks that one more waits until its
// context ends, and that a freed slot is taken again.
func TestBootSlots(t *testing.T) {
	t.Setenv("SKBSTAT_VM_CACHE", t.TempDir())
	var releases []func()
	for range bootSlots {
		release, err := acquireBootSlot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*slotPoll)
	defer cancel()
	if _, err := acquireBootSlot(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slot %d of %d: %v, want it to wait until the deadline", bootSlots+1, bootSlots, err)
	}
	releases[0]()
	release, err := acquireBootSlot(context.Background())
	if err != nil {
		t.Fatalf("after one was freed: %v", err)
	}
	release()
	for _, r := range releases[1:] {
		r()
	}
}

// TestBuildStaticOnce asks for one build from several goroutines at once:
// all get the same binary, and a later call does not build it again.
func TestBuildStaticOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the traffic helper: not with -short")
	}
	k := Kernel{Name: "6.1-s390x", Arch: "s390x"}
	dir := t.TempDir()
	const callers = 4
	paths := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var err error
			if paths[i], err = BuildStatic(context.Background(), k, "github.com/skbstat/skbstat/test/traffic", dir); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("paths %v, want one", paths)
		}
	}
	// Were it built again, the removed binary would be back.
	if err := os.Remove(paths[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildStatic(context.Background(), k, "github.com/skbstat/skbstat/test/traffic", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(paths[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a second call built %s again (%v)", paths[0], err)
	}
}
