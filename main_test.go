package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/layout"
	"github.com/skbstat/skbstat/progs"
)

// crossTargets are the architectures skbstat is meant to run on, with
// the GOARCH companions (GOARM, GOMIPS) that their usual hardware needs.
// They include 32-bit (arm, mips, mipsle, 386) and big-endian (mips,
// mips64, s390x) ones that no test machine here runs.
var crossTargets = []struct{ goarch, extra string }{
	{"386", ""},
	{"arm64", ""},
	{"arm", "GOARM=7"},
	{"mips", "GOMIPS=softfloat"},
	{"mipsle", "GOMIPS=softfloat"},
	{"mips64", ""},
	{"mips64le", ""},
	{"ppc64le", ""},
	{"riscv64", ""},
	{"loong64", ""},
	{"s390x", ""},
}

// TestCrossCompile builds the static binary for every crossTargets
// architecture: the code must not assume 64-bit pointers or little-endian
// byte order, and it must keep building there.
func TestCrossCompile(t *testing.T) {
	if testing.Short() {
		t.Skipf("cross-compiles for %d architectures: not with -short", len(crossTargets))
	}
	dir := t.TempDir()
	for _, target := range crossTargets {
		t.Run(target.goarch, func(t *testing.T) {
			cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", filepath.Join(dir, "skbstat-"+target.goarch), ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+target.goarch)
			if target.extra != "" {
				cmd.Env = append(cmd.Env, target.extra)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestParseNetns resolves --netns's forms to this process's own namespace.
func TestParseNetns(t *testing.T) {
	own, err := parseNetns("")
	if err != nil || own.inode == 0 || own.spec != "" {
		t.Fatalf(`parseNetns(""): %+v, %v; want this process's namespace`, own, err)
	}
	byInode := fmt.Sprintf("inode:%d", own.inode)
	for _, spec := range []string{ownNetns, fmt.Sprintf("pid:%d", os.Getpid()), byInode} {
		ns, err := parseNetns(spec)
		if err != nil || ns.inode != own.inode || ns.spec != spec || ns.path == "" {
			t.Errorf("parseNetns(%q): %+v, %v; want inode %d and a path that opens it", spec, ns, err, own.inode)
		}
	}
	// No namespace has so low a number: filtered on, opened by nothing.
	if ns, err := parseNetns("inode:7"); err != nil || ns.inode != 7 || ns.path != "" {
		t.Errorf(`parseNetns("inode:7"): %+v, %v; want inode 7 and no path`, ns, err)
	}
}

// TestNetnsUsageErrors: a --netns that names no network namespace, or -I
// with one that nothing opens, is a one-line usage error, found before
// anything is loaded.
func TestNetnsUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--netns", "/proc/self/ns/uts"}, "--netns /proc/self/ns/uts: not a network namespace"},
		{[]string{"--netns", "/dev/null"}, "--netns /dev/null: not a network namespace"},
		{[]string{"--netns", "pid:0"}, "--netns pid:0: not a process id"},
		{[]string{"--netns", "pid:2147483648"}, "--netns pid:2147483648: not a process id"},
		{[]string{"--netns", "inode:4294967296"}, "--netns inode:4294967296: not an inode number"},
		{[]string{"--netns", "inode:0"}, "--netns inode:0: not an inode number"},
		{[]string{"--netns", "inode:7", "-I", "lo"}, "--netns inode:7: no file under /proc/[0-9]*/ns/net or /run/netns/* opens that namespace, so -I cannot name its devices"},
	} {
		var stdout, stderr strings.Builder
		code := run(append([]string{"skbstat"}, c.args...), &stdout, &stderr)
		if want := "skbstat: " + c.msg + "\n"; code != exitUsage || stderr.String() != want {
			t.Errorf("skbstat %s: exit %d, %q; want exit 2, %q", strings.Join(c.args, " "), code, stderr.String(), want)
		}
	}
}

// TestNetnsFits: on a kernel without network namespaces (BTF without
// nd_net) -I's index alone is exact and --netns is refused; with them, -I
// needs skbstat's own namespace.
func TestNetnsFits(t *testing.T) {
	noNetns := &layout.Layout{Source: "kernel BTF"}
	withNetns := &layout.Layout{Source: "kernel BTF", NetDevice: layout.NetDevice{Ifindex: layout.Field{Offset: 8, Size: 4}, Net: layout.Field{Offset: 16, Size: 8}}}
	dev := filter.Filter{Ifindex: 2, Ifname: "eth0", Netns: 4026531840}
	o := options{cfg: progs.Config{Filter: dev}}
	if err := o.netnsFits(noNetns); err != nil || o.cfg.Filter.Netns != 0 {
		t.Errorf("-I without namespaces: %v, filter %v; want the index alone", err, o.cfg.Filter)
	}
	o = options{cfg: progs.Config{Filter: filter.Filter{Netns: 4026531840}}, netns: namespace{spec: "pid:1", inode: 4026531840}}
	if err := o.netnsFits(noNetns); err == nil || err.Error() != "--netns pid:1: this kernel has no network namespaces (net_device has no nd_net)" {
		t.Errorf("--netns without namespaces: %v", err)
	}
	o = options{cfg: progs.Config{Filter: dev}, netns: namespace{inode: dev.Netns}}
	if err := o.netnsFits(withNetns); err != nil || o.cfg.Filter != dev {
		t.Errorf("-I with namespaces: %v, filter %v; want %v", err, o.cfg.Filter, dev)
	}
	o = options{cfg: progs.Config{Filter: filter.Filter{Ifindex: 2, Ifname: "eth0"}}}
	if err := o.netnsFits(withNetns); err == nil {
		t.Errorf("-I with namespaces, none known for skbstat: no error")
	}
	o = options{cfg: progs.Config{Filter: dev}}
	want := "-I eth0: the network namespace of devices could not be calibrated (see above): pass --btf FILE with this kernel's BTF"
	if err := o.netnsCalibrated(&layout.Layout{Source: "calibration"}); err == nil || err.Error() != want {
		t.Errorf("-I, namespace not calibrated: %v, want %q", err, want)
	}
}

// TestReportPeak checks -v's last line against VmHWM read after it: the
// high-water mark never falls, so the line's figure is at most that.
func TestReportPeak(t *testing.T) {
	var b strings.Builder
	reportPeak(&b)
	m := regexp.MustCompile(`^skbstat: peak RSS (\d+\.\d) MiB\n$`).FindStringSubmatch(b.String())
	if m == nil {
		t.Fatalf("reportPeak wrote %q", b.String())
	}
	reported, _ := strconv.ParseFloat(m[1], 64)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	hwm := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status)
	if hwm == nil {
		t.Fatalf("no VmHWM in /proc/self/status:\n%s", status)
	}
	kib, _ := strconv.Atoi(string(hwm[1]))
	if now := float64(kib) / 1024; reported <= 0 || reported > now+0.05 {
		t.Errorf("reported %.1f MiB, VmHWM after it %.2f MiB", reported, now)
	}
}
