// Package vm boots Debian distribution kernels under qemu (software
// emulation) with a busybox initramfs, runs a shell script with given
// static binaries inside, and returns the serial console output.
//
// It is test infrastructure: the build machine's own kernel cannot probe
// kernel functions, so the tests that need kprobes, fentry and real
// distribution kernels run in these VMs instead.
//
// Everything is fetched with apt on first use and cached outside the
// repository, in /var/cache/skbstat-vm or $SKBSTAT_VM_CACHE: the kernel
// packages (resolved at run time from each suite's metapackage), their
// extracted kernels and modules, and busybox. The Debian archive is the
// one the machine's own apt sources name; other suites and architectures
// use a private apt configuration in the cache, so the machine's apt
// setup is never changed. Missing host tools (qemu) are installed with
// apt-get when running as root.
package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kernel is one Debian kernel to boot.
type Kernel struct {
	Name  string // short name for tests and messages, e.g. "6.1-arm64"
	Suite string // Debian suite, e.g. "bookworm"
	Arch  string // Debian architecture, e.g. "amd64"
	// Meta is the metapackage whose dependency names the current kernel
	// package, e.g. "linux-image-cloud-amd64".
	Meta string
	// BTF says whether the kernel has its BTF at /sys/kernel/btf/vmlinux
	// (measured; TestMatrix checks it). Without it skbstat needs --btf.
	BTF bool
}

func (k Kernel) String() string { return k.Name }

// Matrix is the set of kernels the project is tested on.
// The last three have no kernel BTF: 32-bit ARM and MIPS, the closest to
// an embedded router that boots here, and big-endian s390x.
var Matrix = []Kernel{
	{Name: "5.10-amd64", Suite: "bullseye", Arch: "amd64", Meta: "linux-image-cloud-amd64", BTF: true},
	{Name: "6.1-amd64", Suite: "bookworm", Arch: "amd64", Meta: "linux-image-cloud-amd64", BTF: true},
	{Name: "6.12-amd64", Suite: "trixie", Arch: "amd64", Meta: "linux-image-cloud-amd64", BTF: true},
	{Name: "6.1-arm64", Suite: "bookworm", Arch: "arm64", Meta: "linux-image-cloud-arm64", BTF: true},
	{Name: "6.1-armhf", Suite: "bookworm", Arch: "armhf", Meta: "linux-image-armmp-lpae"},
	{Name: "6.1-mipsel", Suite: "bookworm", Arch: "mipsel", Meta: "linux-image-4kc-malta"},
	{Name: "6.1-s390x", Suite: "bookworm", Arch: "s390x", Meta: "linux-image-s390x"},
}

// Options says what to run in the VM.
type Options struct {
	// Files maps guest paths to host paths; they are copied into the
	// initramfs with the host file's permissions.
	Files map[string]string
	// Modules are kernel modules to load, with their dependencies, before
	// the script runs, e.g. "veth". Built-in ones are skipped; one the
	// kernel package does not have is an error.
	Modules []string
	// Packages are Debian packages of the kernel's suite and architecture
	// to unpack, with their dependencies, into the guest's root, e.g.
	// "bpftrace" (see packages.go). A package's file takes the place of a
	// busybox applet of the same name (busybox --install keeps files).
	Packages []string
	// Script is run by busybox sh, with PATH covering busybox's applets.
	Script string
	// Timeout limits the boot; 0 means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout is the boot limit when Options.Timeout is 0. Software
// emulation boots in seconds, but the machine is shared.
const DefaultTimeout = 3 * time.Minute

// Result is what one boot gave.
type Result struct {
	// Console is the serial console output, with "\r\n" made "\n".
	Console string
	// ExitStatus is the script's exit status.
	ExitStatus int
	// Package is the kernel package that was booted.
	Package string
	// Prepare is how long fetching (or finding in the cache) the kernel,
	// modules and busybox took; Wait how long the boot waited for other
	// VMs to end (see Each); Boot is how long qemu ran.
	Prepare, Wait, Boot time.Duration
}

// Run boots k with opt's files, modules and script, and returns the
// console output and the script's exit status. An error means the script
// did not run to its end (no kernel, boot failure, timeout) or a module
// did not load; Result then holds what is known, including the console.
// Boots wait for a free slot: see Each.
func Run(ctx context.Context, k Kernel, opt Options) (Result, error) {
	var res Result
	a, err := lookupArch(k.Arch)
	if err != nil {
		return res, fmt.Errorf("kernel %s: %w", k, err)
	}

	start := time.Now()
	img, err := prepare(ctx, k, opt.Packages)
	res.Prepare = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("kernel %s: %w", k, err)
	}
	res.Package = img.pkg

	dir, err := os.MkdirTemp("", "skbstat-vm-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	token := newToken()
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := buildInitramfs(initrd, img, opt, token); err != nil {
		return res, fmt.Errorf("kernel %s: initramfs: %w", k, err)
	}

	timeout := opt.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	start = time.Now()
	release, err := acquireBootSlot(ctx)
	res.Wait = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("kernel %s: %w", k, err)
	}
	start = time.Now()
	console, err := boot(ctx, a, img.vmlinuz, initrd, timeout)
	release()
	res.Boot = time.Since(start)
	res.Console = console
	if err != nil {
		return res, fmt.Errorf("kernel %s (%s): %w\n%s", k, img.pkg, err, tail(console, 30))
	}
	if failed := failedModules(console); len(failed) > 0 {
		return res, fmt.Errorf("kernel %s (%s): modules %v failed to load\n%s", k, img.pkg, failed, tail(console, 30))
	}
	status, err := exitStatus(console, token)
	if err != nil {
		return res, fmt.Errorf("kernel %s (%s): %w\n%s", k, img.pkg, err, tail(console, 30))
	}
	res.ExitStatus = status
	return res, nil
}

// boot runs qemu until the guest powers off, and returns the console.
func boot(ctx context.Context, a arch, kernel, initrd string, timeout time.Duration) (string, error) {
	qemu, err := hostTool(ctx, a.qemu, a.qemuPackage)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := slices.Concat(a.machine, []string{
		"-smp", "1",
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=" + a.console + " quiet panic=-1"})
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	console := strings.ReplaceAll(stdout.String(), "\r\n", "\n")
	if ctx.Err() == context.DeadlineExceeded {
		return console, fmt.Errorf("boot timed out after %v", timeout)
	}
	if err != nil {
		return console, fmt.Errorf("%s: %w: %s", filepath.Base(qemu), err, strings.TrimSpace(stderr.String()))
	}
	return console, nil
}

// endMarker is printed by /init after the script, with a per-boot token
// so that nothing the script prints can be mistaken for it.
const endMarker = "skbstat-vm: end"

var endLine = regexp.MustCompile(`(?m)^` + endMarker + ` ([0-9a-f]+) status (\d+)$`)

func exitStatus(console, token string) (int, error) {
	for _, m := range endLine.FindAllStringSubmatch(console, -1) {
		if m[1] == token {
			return strconv.Atoi(m[2])
		}
	}
	return 0, errors.New("the console has no end marker: the script did not finish")
}

func newToken() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of s, for error messages.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
