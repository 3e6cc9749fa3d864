package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// arch is how to build for and boot one Debian architecture.
type arch struct {
	goEnv       []string // GOARCH and friends for a static build
	qemu        string   // emulator binary
	qemuPackage string   // Debian package that has it
	machine     []string // qemu machine, CPU and memory options
	console     string   // serial console device
}

// arches covers the architectures in Matrix, with the options measured
// in the kernel-matrix notes. All use TCG: KVM fails on the CI machine
// ("emulation failure"), and the others are foreign anyway.
var arches = map[string]arch{
	"amd64": {
		goEnv:       []string{"GOARCH=amd64"},
		qemu:        "qemu-system-x86_64",
		qemuPackage: "qemu-system-x86",
		machine:     []string{"-accel", "tcg", "-cpu", "max", "-m", "1024"},
		console:     "ttyS0",
	},
	"arm64": {
		goEnv:       []string{"GOARCH=arm64"},
		qemu:        "qemu-system-aarch64",
		qemuPackage: "qemu-system-arm",
		machine:     []string{"-M", "virt", "-accel", "tcg", "-cpu", "max", "-m", "1024"},
		console:     "ttyAMA0",
	},
	"armhf": {
		goEnv:       []string{"GOARCH=arm", "GOARM=7"},
		qemu:        "qemu-system-arm",
		qemuPackage: "qemu-system-arm",
		// The LPAE kernel needs a Cortex-A15 (or A7); virt passes the
		// device tree itself.
		machine: []string{"-M", "virt", "-accel", "tcg", "-cpu", "cortex-a15", "-m", "1024"},
		console: "ttyAMA0",
	},
	"mipsel": {
		goEnv:       []string{"GOARCH=mipsle", "GOMIPS=softfloat"},
		qemu:        "qemu-system-mipsel",
		qemuPackage: "qemu-system-mips",
		// 512 MB, as measured: the 32-bit kernel has no use for more.
		machine: []string{"-M", "malta", "-accel", "tcg", "-cpu", "24Kf", "-m", "512"},
		console: "ttyS0",
	},
	"s390x": {
		goEnv:       []string{"GOARCH=s390x"},
		qemu:        "qemu-system-s390x",
		qemuPackage: "qemu-system-misc",
		machine:     []string{"-M", "s390-ccw-virtio", "-accel", "tcg", "-cpu", "max", "-m", "1024"},
		console:     "ttysclp0",
	},
}

func lookupArch(name string) (arch, error) {
	a, ok := arches[name]
	if !ok {
		return arch{}, fmt.Errorf("architecture %q is not supported", name)
	}
	return a, nil
}

// BuildStatic cross-compiles the Go package pkg (an import path or a
// directory) statically for k's architecture into dir, and returns the
// binary's path. Each package is built once per architecture and
// directory in a process: kernels of one architecture share the binary,
// and callers that ask at the same time wait for the one build.
func BuildStatic(ctx context.Context, k Kernel, pkg, dir string) (string, error) {
	a, err := lookupArch(k.Arch)
	if err != nil {
		return "", fmt.Errorf("build %s for %s: %w", pkg, k, err)
	}
	return buildOnce(ctx, a, k.Arch, pkg, dir, "build")
}

// BuildTest cross-compiles the tests of Go package pkg into a static test
// binary for k's architecture in dir, as BuildStatic builds a command, so
// that a package's tests can run inside the VM.
func BuildTest(ctx context.Context, k Kernel, pkg, dir string) (string, error) {
	a, err := lookupArch(k.Arch)
	if err != nil {
		return "", fmt.Errorf("build the tests of %s for %s: %w", pkg, k, err)
	}
	return buildOnce(ctx, a, k.Arch, pkg, dir, "test")
}

// buildOnce runs go build (or go test -c, for kind "test") once per
// package, architecture and directory.
func buildOnce(ctx context.Context, a arch, archName, pkg, dir, kind string) (string, error) {
	v, _ := builds.LoadOrStore(buildKey{pkg, archName, dir, kind}, &build{})
	b := v.(*build)
	b.once.Do(func() { b.path, b.err = goBuild(ctx, a, archName, pkg, dir, kind) })
	return b.path, b.err
}

// builds holds BuildStatic's builds by buildKey.
var builds sync.Map

type buildKey struct{ pkg, arch, dir, kind string }

type build struct {
	once sync.Once
	path string
	err  error
}

func goBuild(ctx context.Context, a arch, archName, pkg, dir, kind string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg)+"-"+archName)
	args := []string{"build"}
	if kind == "test" {
		out += ".test"
		args = []string{"test", "-c"}
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-trimpath", "-ldflags=-s -w", "-o", out, pkg)...)
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), a.goEnv...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s for %s: %w\n%s", pkg, archName, err, msg)
	}
	return out, nil
}

var (
	installMu     sync.Mutex
	aptUpdateOnce sync.Once
	aptUpdateErr  error
)

// hostTool returns the path of binary, installing pkg with apt-get when
// it is missing. It needs root; the machine's package lists are updated
// at most once per process, and only when the install fails without.
func hostTool(ctx context.Context, binary, pkg string) (string, error) {
	installMu.Lock()
	defer installMu.Unlock()
	if path, err := exec.LookPath(binary); err == nil {
		return path, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s is missing and installing package %s needs root", binary, pkg)
	}
	install := func() error {
		return runLogged(ctx, "", "apt-get", "install", "-y", "--no-install-recommends", pkg)
	}
	if err := install(); err != nil {
		aptUpdateOnce.Do(func() { aptUpdateErr = runLogged(ctx, "", "apt-get", "update") })
		if aptUpdateErr != nil {
			return "", fmt.Errorf("install %s for %s: %w (and apt-get update: %v)", pkg, binary, err, aptUpdateErr)
		}
		if err := install(); err != nil {
			return "", fmt.Errorf("install %s for %s: %w", pkg, binary, err)
		}
	}
	return exec.LookPath(binary)
}

// runLogged runs a command in dir and returns its output in the error.
func runLogged(ctx context.Context, dir, name string, args ...string) error {
	_, err := output(ctx, dir, name, args...)
	return err
}

func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, shortArgs(args), err, tail(stderr.String()+stdout.String(), 10))
	}
	return stdout.String(), nil
}
