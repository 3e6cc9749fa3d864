package nothp

import (
	"os"
	"strings"
	"testing"
)

func TestDisabled(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "THP_enabled:"); ok {
			if got := strings.TrimSpace(v); got != "0" {
				t.Fatalf("THP_enabled: %s after init, want 0", got)
			}
			return
		}
	}
	t.Skip("/proc/self/status has no THP_enabled line (Linux 5.0 added it)")
}
