package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// cpioEntry is one member of a newc archive, as the kernel reads it.
type cpioEntry struct {
	name        string
	mode        uint32
	rdev        [2]int
	data        string
	dataAligned bool
}

// readCPIO parses a newc archive up to its trailer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	field := func(off, i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return int(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	var entries []cpioEntry
	for off := 0; ; {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc magic at %d", off)
		}
		size, nameSize := field(off, 6), field(off, 11)
		name := string(b[off+110 : off+110+nameSize-1])
		if name == "TRAILER!!!" {
			return entries
		}
		data := align(off + 110 + nameSize)
		entries = append(entries, cpioEntry{
			name: name, mode: uint32(field(off, 1)), rdev: [2]int{field(off, 9), field(off, 10)},
			data: string(b[data : data+size]), dataAligned: data%4 == 0,
		})
		off = align(data + size)
	}
}

func TestCPIOWriter(t *testing.T) {
	host := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(host, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.dir("/dev")
	w.charDevice("/dev/console", 5, 1)
	w.file("/a/b/c.txt", 0o644, []byte("hello"))
	if err := w.hostFile("/usr/bin/tool", host, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{name: "dev", mode: 0o040755},
		{name: "dev/console", mode: 0o020600, rdev: [2]int{5, 1}},
		{name: "a", mode: 0o040755},
		{name: "a/b", mode: 0o040755},
		{name: "a/b/c.txt", mode: 0o100644, data: "hello"},
		{name: "usr", mode: 0o040755},
		{name: "usr/bin", mode: 0o040755},
		{name: "usr/bin/tool", mode: 0o100755, data: "#!/bin/sh\necho hi\n"},
	}
	for i := range want {
		want[i].dataAligned = true
	}
	if got := readCPIO(t, buf.Bytes()); !slices.Equal(got, want) {
		t.Errorf("archive holds\n%+v\nwant\n%+v", got, want)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/net/veth.ko":         "veth",
		"kernel/drivers/net/veth.ko.xz":      "veth",
		"kernel/net/nf-conntrack.ko.zst":     "nf_conntrack",
		"ip6_udp_tunnel":                     "ip6_udp_tunnel",
		"kernel/net/ipv6/ip6_tunnel.ko.gz":   "ip6_tunnel",
		"kernel/drivers/block/virtio_blk.ko": "virtio_blk",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFailedModules(t *testing.T) {
	console := "skbstat-vm: insmod failed: veth\n[ 1.0] veth: Unknown symbol\nskbstat-vm: insmod failed: dummy\n" +
		"echo skbstat-vm: insmod failed: not_at_line_start\n"
	if got, want := failedModules(console), []string{"veth", "dummy"}; !slices.Equal(got, want) {
		t.Errorf("failedModules = %v, want %v", got, want)
	}
	if got := failedModules("skbstat-vm: start\n"); got != nil {
		t.Errorf("failedModules of a clean console = %v, want none", got)
	}
}
