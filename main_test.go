package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
