package e2e

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// withoutBTF runs argv with the kernel's BTF hidden from it (a private
// mount namespace with an empty /sys/kernel/btf), as on a kernel built
// without it; the machine and every other test keep theirs.
func withoutBTF(argv ...string) []string {
	script := `mount -t tmpfs none /sys/kernel/btf && exec "$@"`
	return append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"}, argv...)
}

// TestNoBTFCalibrates runs skbstat with no kernel BTF and no options
// about it: it calibrates, says how in -v, and counts drops exactly, also
// on a device (-I, through the calibrated net_device ifindex).
func TestNoBTFCalibrates(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	r := startCommand(t, append(withoutBTF(skbstatArgv()...), "-i", "60", "-d", p.b4, "-p", "udp"))
	// ip netns exec mounts a /sys of its own: BTF is hidden inside it.
	dev := startCommand(t, append([]string{"ip", "netns", "exec", p.b}, withoutBTF(skbstatBin, "-v", "-i", "60", "-I", p.bDev, "-d", p.b4, "-p", "udp")...))
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	for name, run := range map[string]*run{"no options": r, "-I": dev} {
		if n := sum(run.stop(t, syscall.SIGINT), stackCount("DROP", "NO_SOCKET")); n != datagrams {
			t.Errorf("%s: %d NO_SOCKET drops without BTF, want %d\n%s", name, n, datagrams, run.stderr.String())
		}
		if !strings.Contains(run.stderr.String(), "skbstat: layout: calibrated in ") {
			t.Errorf("%s: -v does not say the layout was calibrated:\n%s", name, run.stderr.String())
		}
	}
}

// TestCalibrateOnHostLoopback runs calibration where no network namespace
// can be made (no CAP_SYS_ADMIN): it calibrates on the host's loopback,
// says so in one line, and counts exactly; -I, which needs a device of
// its own to calibrate, is refused with the way out.
func TestCalibrateOnHostLoopback(t *testing.T) {
	requireRoot(t)
	noAdmin := []string{"setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"}
	p := newPair(t)
	r := startCommand(t, append(append(noAdmin, skbstatBin, "-v", "--layout", "calibrate"), "-i", "60", "-d", p.b4, "-p", "udp"))
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	if n := sum(r.stop(t, syscall.SIGINT), stackCount("DROP", "NO_SOCKET")); n != datagrams {
		t.Errorf("%d NO_SOCKET drops calibrated on the host's loopback, want %d\n%s", n, datagrams, r.stderr.String())
	}
	var notice []string
	for _, line := range strings.Split(r.stderr.String(), "\n") {
		if strings.HasPrefix(line, "skbstat: calibrating on the host's loopback") {
			notice = append(notice, line)
		}
	}
	if len(notice) != 1 || !strings.Contains(notice[0], "unshare: operation not permitted") {
		t.Errorf("want one line saying calibration fell back to the host's loopback and why, got %q", notice)
	}

	cmd := exec.Command(noAdmin[0], append(noAdmin[1:], skbstatBin, "--layout", "calibrate", "-I", "lo", "-c", "1", "-i", "0.01")...)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "skbstat: -I lo: net_device's ifindex could not be calibrated") {
		t.Errorf("-I without a calibrated ifindex: exit %d, %q; want exit 1 naming -I and --btf", code, out)
	}
}

// TestDumpBPFWithoutBTF lists the programs on a kernel without BTF: with
// symbolic offsets, and without creating anything in the kernel, which
// the test makes sure of by taking every capability but reading files away
// (a BPF object or a namespace would need CAP_BPF or CAP_SYS_ADMIN).
func TestDumpBPFWithoutBTF(t *testing.T) {
	requireRoot(t)
	// The tracepoint formats live in tracefs, which another test (or
	// skbstat with privileges) may have had to mount.
	if out, err := exec.Command(skbstatBin, "-c", "1", "-i", "0.01", "--layout", "calibrate").CombinedOutput(); err != nil {
		t.Fatalf("mount tracefs by running skbstat once: %v: %s", err, out)
	}
	argv := withoutBTF("setpriv", "--inh-caps=-all,+dac_override", "--ambient-caps=+dac_override", "--bounding-set=-all,+dac_override", "--",
		skbstatBin, "--dump-bpf", "-d", "10.1.2.3", "-p", "udp")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"; struct offsets are symbolic: ", "sk_buff.len ", "; skb:kfree_skb (skbstat_drop, perf tracepoint)",
		"; filter: address at header offset 16 in 10.1.2.3/32"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--dump-bpf without BTF lacks %q:\n%s", want, out)
		}
	}
}

// TestStacksWithoutSyslog runs skbstat without CAP_SYSLOG: /proc/kallsyms
// hides the kernel's addresses then (kernel.perf_event_paranoid above 1, or
// kernel.kptr_restrict 1). Where the kernel names addresses for a BPF
// program (Linux 5.14), stacks are named all the same, by the kernel, and
// nothing is said; else they print as raw addresses, and one warning says
// why. The drops are counted either way.
func TestStacksWithoutSyslog(t *testing.T) {
	requireRoot(t)
	sysctl := func(name string) int {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		v, aerr := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || aerr != nil {
			t.Fatalf("kernel.%s: %v %v", name, err, aerr)
		}
		return v
	}
	if sysctl("kptr_restrict") == 0 && sysctl("perf_event_paranoid") <= 1 {
		t.Skip("this machine shows kernel addresses to every process (kernel.kptr_restrict 0, kernel.perf_event_paranoid at most 1)")
	}
	p := newPair(t)
	r := startCommand(t, append([]string{"setpriv", "--inh-caps=-syslog", "--bounding-set=-syslog", "--"},
		append(skbstatArgv(), "-i", "60", "-d", p.b4, "-p", "udp")...))
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	ivs := r.stop(t, syscall.SIGINT)
	if n := sum(ivs, stackCount("DROP", "NO_SOCKET")); n != datagrams {
		t.Errorf("%d NO_SOCKET drops without CAP_SYSLOG, want %d", n, datagrams)
	}
	warning := "skbstat: warning: /proc/kallsyms hides the kernel's addresses ("
	warned := strings.Contains(r.stderr.String(), warning) && strings.Contains(r.stderr.String(), "CAP_SYSLOG")
	kernelNames := features.HaveProgramType(ebpf.Syscall) == nil && features.HaveProgramHelper(ebpf.Syscall, asm.FnSnprintf) == nil
	switch {
	case kernelNames && warned:
		t.Errorf("the kernel names addresses, yet a warning says that /proc/kallsyms hides them:\n%s", r.stderr.String())
	case !kernelNames && !warned:
		t.Errorf("no warning naming the cause and CAP_SYSLOG:\n%s", r.stderr.String())
	}
	frames := 0
	for _, iv := range ivs {
		for _, st := range iv["DROP"].stacks {
			for _, f := range st.frames {
				frames++
				if raw := strings.HasPrefix(f, "0x"); raw == kernelNames {
					t.Errorf("frame %q of a stack without CAP_SYSLOG, want a raw address: %v (the kernel names addresses: %v)", f, !kernelNames, kernelNames)
				}
			}
		}
	}
	if frames == 0 {
		t.Error("no frames printed")
	}
}
