package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeBTF runs skbstat --write-btf file with args and returns the file.
func writeBTF(t *testing.T, file string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(skbstatBin, append([]string{"--write-btf", file}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("skbstat --write-btf %s %s: %v: %s", file, strings.Join(args, " "), err, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestTrimmedBTF makes a trimmed BTF file from the kernel's, as for a
// router, and counts with it exactly as with the kernel's own: drops with
// their reason, and the tracepoint rows of --input --output.
func TestTrimmedBTF(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "trimmed.btf")
	raw := writeBTF(t, file)
	if len(raw) == 0 || len(raw) >= 100<<10 {
		t.Fatalf("trimmed BTF has %d bytes, want some, fewer than 100 KiB", len(raw))
	}
	// What skbstat reads of a trimmed file is all there is in it.
	if again := writeBTF(t, filepath.Join(dir, "again.btf"), "--btf", file); !bytes.Equal(again, raw) {
		t.Errorf("the trimmed file trimmed again has %d bytes, not the same %d", len(again), len(raw))
	}

	p := newPair(t)
	withFile := []string{skbstatBin, "-v", "--btf", file, "-i", "60", "-s", p.a4, "-d", p.b4, "-p", "udp"}
	drop := startCommand(t, withFile)
	rows := startCommand(t, append(withFile, "--input", "--output", "--no_drop"))
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	if n := sum(drop.stop(t, syscall.SIGINT), stackCount("DROP", "NO_SOCKET")); n != datagrams {
		t.Errorf("%d NO_SOCKET drops with the trimmed BTF, want %d\n%s", n, datagrams, drop.stderr.String())
	}
	checkTracepointRows(t, rows.stop(t, syscall.SIGINT), datagrams, "with the trimmed BTF:\n"+rows.stderr.String())
	for _, r := range []*run{drop, rows} {
		if want := "skbstat: layout: BTF file " + file; !strings.Contains(r.stderr.String(), want) {
			t.Errorf("-v does not say %q:\n%s", want, r.stderr.String())
		}
	}
}

// TestTrimmedBTFNeedsBTF asks for a trimmed file on a kernel without BTF
// and without --btf: bad usage (exit 2), saying why, and no file.
func TestTrimmedBTFNeedsBTF(t *testing.T) {
	requireRoot(t)
	file := filepath.Join(t.TempDir(), "trimmed.btf")
	for _, argv := range [][]string{withoutBTF(skbstatBin, "--write-btf", file), {skbstatBin, "--layout", "calibrate", "--write-btf", file}} {
		cmd := exec.Command(argv[0], argv[1:]...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "--write-btf "+file+": a trimmed file can only be made from BTF") {
			t.Errorf("%s: exit %d, %q; want exit 2 saying a trimmed file needs BTF", strings.Join(argv, " "), code, out)
		}
		if _, err := os.Stat(file); err == nil {
			t.Errorf("%s created %s", strings.Join(argv, " "), file)
		}
	}
}
