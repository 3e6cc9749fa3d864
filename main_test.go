package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCrossCompile builds the static binary for the architectures skbstat
// is meant to run on, including the 32-bit and big-endian ones that no test
// machine here runs: the code must not assume 64-bit pointers or
// little-endian byte order, and it must keep building there.
func TestCrossCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles for five architectures: not with -short")
	}
	dir := t.TempDir()
	for _, target := range []struct{ goarch, extra string }{
		{"arm64", ""},
		{"arm", "GOARM=7"},
		{"mipsle", "GOMIPS=softfloat"},
		{"riscv64", ""},
		{"s390x", ""},
	} {
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
