package kallsyms

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// HiddenBecause says why /proc/kallsyms hides the kernel's addresses from
// this process, as the kernel decides it (kallsyms_show_value): with
// kernel.kptr_restrict 2 from everyone; with 1 from a process without
// CAP_SYSLOG; with 0 from one without CAP_SYSLOG where
// kernel.perf_event_paranoid is above 1.
func HiddenBecause() string {
	kptr, kerr := readSysctl("kptr_restrict")
	paranoid, perr := readSysctl("perf_event_paranoid")
	if kerr != nil || perr != nil {
		return fmt.Sprintf("kernel.kptr_restrict or kernel.perf_event_paranoid could not be read (%v, %v)", kerr, perr)
	}
	return hiddenCause(kptr, paranoid, hasCapSyslog())
}

// hiddenCause is HiddenBecause's reasoning, on its inputs.
func hiddenCause(kptrRestrict, perfEventParanoid int, capSyslog bool) string {
	switch {
	case kptrRestrict >= 2:
		return fmt.Sprintf("kernel.kptr_restrict is %d: the kernel hides its addresses from everyone (sysctl kernel.kptr_restrict=1, and CAP_SYSLOG, shows them)", kptrRestrict)
	case capSyslog:
		return fmt.Sprintf("kernel.kptr_restrict is %d and skbstat has CAP_SYSLOG, yet the addresses are hidden (a security module?)", kptrRestrict)
	case kptrRestrict == 1:
		return "kernel.kptr_restrict is 1 and skbstat lacks CAP_SYSLOG, which would show them"
	case perfEventParanoid > 1:
		return fmt.Sprintf("kernel.perf_event_paranoid is %d and skbstat lacks CAP_SYSLOG, which would show them", perfEventParanoid)
	}
	return "the kernel hides them for a reason kernel.kptr_restrict and kernel.perf_event_paranoid do not tell"
}

func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// capSyslog is CAP_SYSLOG's bit in a capability set.
const capSyslog = 34

// hasCapSyslog reports whether this process has CAP_SYSLOG in effect.
func hasCapSyslog() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:\t"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSyslog) != 0
		}
	}
	return false
}
