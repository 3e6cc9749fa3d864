package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

var updateMan = flag.Bool("update-man", false, "rewrite "+manPage+" from the flag definitions")

// manPage is skbstat's man page, in the place bcc keeps its tools' pages.
const manPage = "man/man8/skbstat.8"

// TestManPage renders the man page from the command line's own flag
// definitions and compares it with the one in the repository: a flag added,
// renamed or reworded without regenerating it (go test -run TestManPage
// -update-man) fails here.
func TestManPage(t *testing.T) {
	got, err := renderManPage()
	if err != nil {
		t.Fatal(err)
	}
	if *updateMan {
		if err := os.WriteFile(manPage, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(manPage)
	if err != nil {
		t.Fatalf("%v (create it with go test -run TestManPage -update-man)", err)
	}
	if got != string(want) {
		t.Errorf("%s is not what the flags make: regenerate it with go test -run TestManPage -update-man", manPage)
	}
	for _, f := range newApp(nil, nil).Flags {
		if name := f.Names()[0]; !strings.Contains(got, `\fB--`+name) {
			t.Errorf("the man page does not describe --%s", name)
		}
	}
}

// renderManPage is the man page of newApp in bcc's sections, rendered with
// urfave/cli's markdown template swapped for one that has them.
func renderManPage() (string, error) {
	app := newApp(nil, nil)
	app.Description = manDescription
	var ex bytes.Buffer
	for _, line := range strings.Split(examples, "\n")[1:] {
		cmd, what, _ := strings.Cut(strings.TrimSpace(line), "#")
		what = strings.TrimSpace(what)
		ex.WriteString("**" + strings.TrimSpace(cmd) + "**\n: " + strings.ToUpper(what[:1]) + what[1:] + ".\n\n")
	}
	app.Metadata = map[string]any{"examples": ex.String()}
	saved := cli.MarkdownDocTemplate
	defer func() { cli.MarkdownDocTemplate = saved }()
	cli.MarkdownDocTemplate = manTemplate
	return app.ToMan()
}

const manDescription = `skbstat answers "where in the kernel did my packet go, and why was it dropped?". Every
interval it prints, for the packets that match a filter (addresses or networks, IPv4 or IPv6; ports
or port ranges; protocol; device), how often each kernel receive and send routine saw them
(INGRESS, EGRESS and FUNC rows), and the kernel stacks and drop reasons at which they were dropped
(DROP, the default) or freed normally (CONSUME).

Counts are exact: every event is counted in its row or stack, or shown in its section as not
counted (a full count map, a lost kernel stack, a packet the filter could not decide), never
silently missing. Counters are never cleared in the kernel: each interval prints what was counted
since the last one, and the last interval, at the end of -c, SIGINT or SIGTERM, is read after every
probe is detached.

The BPF programs are generated at start, with the filter's constants as immediates; --dump-bpf
prints them. Where the kernel has no BTF, skbstat learns the few struct offsets it needs from the
running kernel in a private network namespace, in milliseconds, and proves them before counting.`

const manTemplate = `% {{ .App.Name }} 8

# NAME

{{ .App.Name }} - {{ .App.Usage }}

# SYNOPSIS

**{{ .App.UsageText }}**

# DESCRIPTION

{{ .App.Description }}

# REQUIREMENTS

Linux 5.3 or later with CONFIG_BPF_SYSCALL, CONFIG_BPF_EVENTS and tracefs; root, or CAP_BPF and
CAP_PERFMON (CAP_SYSLOG to name the functions of kernel stacks; CAP_SYS_ADMIN and CONFIG_NET_NS to
calibrate in a namespace of its own). Function rows need fentry (kernel BTF) or kprobes
(CONFIG_KPROBES). Kernel BTF (/sys/kernel/btf/vmlinux, or --btf FILE) is used where there is some;
without it the layout is calibrated at start.

# OPTIONS
{{ range $v := .GlobalArgs }}
{{ $v }}{{ end }}

# EXAMPLES

{{ .App.Metadata.examples }}
# FIELDS

TIME
: The time of the interval's end, in the section header ("17:53:34 [DROP]").

NUM
: How often the row's probe saw a matching packet in the interval, or how many matching packets
were dropped (DROP) or freed (CONSUME) at the stack below it.

FUNC/STACK
: The row's kernel function or tracepoint; for DROP and CONSUME, the drop reason and then the
kernel stack, innermost frame first, as function+offset [module]. Lines in brackets count the
section's events that no row or stack counts: "[not counted: count map full]",
"[not counted: no kernel memory for a new count]", "[not decided: IPv6 header chain longer than 64]", "[lost kernel stack id -17]".

# OVERHEAD

A packet that the filter rejects costs one copy of the sk_buff's fields and, for an address
condition, one of the IP header, about twice an empty program on the same tracepoint. A counted
row adds a per-CPU counter update. A counted drop walks the kernel stack, which is most of its cost
in a drop storm: measured figures are in BENCHMARKS.md.

# SOURCE

https://github.com/skbstat/skbstat, a Go reimplementation of bcc's skbstat.py. Also in the source
tree: README.md, BENCHMARKS.md and skbstat_example.txt.

# OS

Linux

# STABILITY

Unstable: in development.

# SEE ALSO

bpftrace(8), pwru(8), dropwatch(1), perf(1)
`

// exampleFile is bcc's TOOL_example.txt: real output of each mode, and the
// help at its end.
const exampleFile = "skbstat_example.txt"

// TestExampleFileHelp checks that the help at the end of the example file
// is the help skbstat prints, so that it follows the flags.
func TestExampleFileHelp(t *testing.T) {
	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	_, inFile, ok := strings.Cut(string(b), "# skbstat --help\n")
	if !ok {
		t.Fatalf("%s has no USAGE section with the output of skbstat --help", exampleFile)
	}
	var help bytes.Buffer
	if code := run([]string{"skbstat", "--help"}, &help, io.Discard); code != 0 {
		t.Fatalf("skbstat --help: exit %d", code)
	}
	if inFile != help.String() {
		t.Errorf("the help in %s is not skbstat's: paste the output of skbstat --help there\n--- skbstat --help\n%s", exampleFile, help.String())
	}
}
