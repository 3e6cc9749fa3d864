package vm

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExitStatus(t *testing.T) {
	const token = "0123abcd"
	for _, tc := range []struct {
		console string
		want    int
		ok      bool
	}{
		{"x\nskbstat-vm: end 0123abcd status 0\n", 0, true},
		{"skbstat-vm: end 0123abcd status 7\n[ 1.0] reboot: Power down\n", 7, true},
		{"skbstat-vm: end ffff status 0\nskbstat-vm: end 0123abcd status 3\n", 3, true},
		{"skbstat-vm: end ffff status 0\n", 0, false},
		{"Kernel panic - not syncing\n", 0, false},
	} {
		got, err := exitStatus(tc.console, token)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("exitStatus(%q) = %d, %v; want %d, ok %v", tc.console, got, err, tc.want, tc.ok)
		}
	}
}

func TestUnsupportedArchitecture(t *testing.T) {
	_, err := Run(context.Background(), Kernel{Name: "sparc", Suite: "bookworm", Arch: "sparc64", Meta: "x"}, Options{})
	if err == nil || !strings.Contains(err.Error(), `"sparc64"`) {
		t.Errorf("Run on sparc64: %v, want an error naming the architecture", err)
	}
}

// TestScriptStatusAndTimeout boots the host suite's kernel twice: the
// script's exit status comes back, and a script that hangs is stopped.
func TestScriptStatusAndTimeout(t *testing.T) {
	requireVMs(t)
	k := Matrix[slices.IndexFunc(Matrix, func(k Kernel) bool { return k.Name == "6.1-amd64" })]
	ctx := context.Background()
	res, err := Run(ctx, k, Options{Script: "echo guest says hello\nexit 7\n"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitStatus != 7 || !strings.Contains(res.Console, "\nguest says hello\n") {
		t.Errorf("exit status %d, console:\n%s\nwant 7 and the greeting", res.ExitStatus, res.Console)
	}

	res, err = Run(ctx, k, Options{Script: "echo sleeping\nsleep 600\n", Timeout: 15 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "timed out after 15s") {
		t.Errorf("hanging script: %v, want a timeout", err)
	}
	if !strings.Contains(res.Console, "\nsleeping\n") {
		t.Errorf("console so far lacks the script's output:\n%s", res.Console)
	}
}
