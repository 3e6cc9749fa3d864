package kallsyms

import (
	"strings"
	"testing"
)

func TestHiddenCause(t *testing.T) {
	for _, c := range []struct {
		kptr, paranoid int
		capSyslog      bool
		want           string
	}{
		{2, 2, true, "kernel.kptr_restrict is 2: the kernel hides its addresses from everyone"},
		{1, -1, false, "kernel.kptr_restrict is 1 and skbstat lacks CAP_SYSLOG"},
		{0, 2, false, "kernel.perf_event_paranoid is 2 and skbstat lacks CAP_SYSLOG"},
		{1, 2, true, "skbstat has CAP_SYSLOG, yet"},
		{0, 1, false, "for a reason"},
	} {
		if got := hiddenCause(c.kptr, c.paranoid, c.capSyslog); !strings.Contains(got, c.want) {
			t.Errorf("kptr_restrict %d, perf_event_paranoid %d, CAP_SYSLOG %v: %q, want it to say %q", c.kptr, c.paranoid, c.capSyslog, got, c.want)
		}
	}
}
