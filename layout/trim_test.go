package layout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// skbstatTracepoints are the tracepoints skbstat attaches, by group.
var skbstatTracepoints = [][2]string{
	{"skb", "kfree_skb"}, {"skb", "consume_skb"},
	{"net", "netif_receive_skb"}, {"net", "net_dev_queue"}, {"net", "net_dev_xmit"},
}

// trim writes the trimmed BTF of l keeping funcs, and reads it back.
func trim(t *testing.T, l *Layout, funcs []string) (*Layout, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTrimmedBTF(&buf, l, funcs); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trimmed.btf")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	trimmed, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return trimmed, buf.Bytes()
}

// result is what one lookup returned, as text, so that lookups of every
// kind compare alike, errors included.
func result(v any, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%+v", v)
}

// sameLookups fails t where got, read from a trimmed file, answers any
// lookup skbstat makes otherwise than want: the struct offsets, sock_common,
// the tracepoints, funcs' arguments, the argument registers of arch and the
// drop reasons.
func sameLookups(t *testing.T, want, got *Layout, funcs []string, arch string) {
	t.Helper()
	if got.PointerSize != want.PointerSize || got.SkBuff != want.SkBuff || got.NetDevice != want.NetDevice || got.Net != want.Net {
		t.Errorf("trimmed: pointer size %d, %+v, %+v, %+v\nwhole:   pointer size %d, %+v, %+v, %+v",
			got.PointerSize, got.SkBuff, got.NetDevice, got.Net, want.PointerSize, want.SkBuff, want.NetDevice, want.Net)
	}
	lookups := map[string]func(l *Layout) string{
		"SockCommon": func(l *Layout) string { return result(l.SockCommon()) },
		"DropReasons": func(l *Layout) string {
			reasons, err := l.DropReasons()
			return result(len(reasons), err) // the maps are compared below
		},
	}
	for _, tp := range skbstatTracepoints {
		lookups["RawTracepoint "+tp[1]] = func(l *Layout) string { return result(l.RawTracepoint(tp[0], tp[1])) }
	}
	for _, fn := range funcs {
		lookups["FuncSkbArg "+fn] = func(l *Layout) string { return result(l.FuncSkbArg(fn)) }
		lookups["FuncSockArg "+fn] = func(l *Layout) string { return result(l.FuncSockArg(fn)) }
		lookups["HasFunc "+fn] = func(l *Layout) string { return result(l.HasFunc(fn), nil) }
	}
	for i := range kprobeArgRegs[arch].regs {
		lookups[fmt.Sprintf("KprobeArg %s %d", arch, i)] = func(l *Layout) string { return result(l.KprobeArg(arch, i)) }
	}
	for name, lookup := range lookups {
		if w, g := lookup(want), lookup(got); w != g {
			t.Errorf("%s: trimmed %s, whole %s", name, g, w)
		}
	}
	wantReasons, _ := want.DropReasons()
	gotReasons, _ := got.DropReasons()
	if !maps.Equal(wantReasons, gotReasons) {
		t.Errorf("drop reasons: trimmed has %d, whole %d", len(gotReasons), len(wantReasons))
	}
}

// skbFuncs is every function of l's BTF that takes a struct sk_buff * or a
// struct sock *: a superset of the function rows' and of any -f's.
func skbFuncs(t *testing.T, l *Layout) []string {
	t.Helper()
	var names []string
	seen := map[string]bool{}
	for _, id := range l.btf.OfKind(rawbtf.KindFunc) {
		f, err := l.btf.Type(id)
		if err != nil {
			t.Fatal(err)
		}
		if seen[f.Name] {
			continue
		}
		skb, err := l.pointerParam(id, "sk_buff")
		if err != nil {
			t.Fatal(err)
		}
		sock, err := l.pointerParam(id, "sock")
		if err != nil {
			t.Fatal(err)
		}
		if skb >= 0 || sock >= 0 {
			seen[f.Name] = true
			names = append(names, f.Name)
		}
	}
	return names
}

// TestTrimmedKernel trims the running kernel's BTF: every lookup gives what
// the whole BTF gives, for every function that takes an skb or a socket, and
// with the functions of a run (tens of them) the file is small.
func TestTrimmedKernel(t *testing.T) {
	l := kernelBTF(t)
	funcs := append(skbFuncs(t, l), "no_such_function_xyz")
	if len(funcs) < 100 {
		t.Fatalf("only %d functions take an skb or a socket", len(funcs))
	}
	trimmed, raw := trim(t, l, funcs)
	t.Logf("%d functions: %d bytes", len(funcs), len(raw))
	sameLookups(t, l, trimmed, funcs, runtime.GOARCH)
	if _, err := trimmed.KprobeArg(runtime.GOARCH, 0); err != nil {
		t.Errorf("KprobeArg: %v", err)
	}

	// 64 functions: about twice the fixed function rows, with room for -f.
	_, raw = trim(t, l, funcs[:64])
	t.Logf("64 functions: %d bytes", len(raw))
	if len(raw) >= 100<<10 {
		t.Errorf("trimmed BTF with 64 functions has %d bytes, want fewer than 100 KiB", len(raw))
	}
	if !bytes.HasPrefix(raw, binary.NativeEndian.AppendUint16(nil, 0xeb9f)) {
		t.Errorf("trimmed BTF starts % x, not the magic in the kernel's byte order", raw[:2])
	}
}

// TestTrimmed32BitBigEndian trims the BTF file of a hand-built 32-bit
// big-endian kernel (a MIPS router's), whose struct pt_regs puts the
// registers elsewhere than the table: the trimmed file is big-endian too, and
// answers every lookup alike.
func TestTrimmed32BitBigEndian(t *testing.T) {
	k := newTestKernel()
	k.others = append(k.others, mipsPtRegs(k.ulong, 2))
	path := filepath.Join(t.TempDir(), "vmlinux.btf")
	if err := os.WriteFile(path, k.rawBTF(t, binary.BigEndian), 0o600); err != nil {
		t.Fatal(err)
	}
	whole, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	funcs := []string{"ip_local_out", "tcp_sendmsg", "schedule", "kfree_skb"}
	trimmed, raw := trim(t, whole, funcs)
	if !bytes.HasPrefix(raw, []byte{0xeb, 0x9f}) {
		t.Errorf("trimmed BTF starts % x, not big-endian BTF magic", raw[:2])
	}
	sameLookups(t, whole, trimmed, funcs, "mips")
	if f, err := trimmed.KprobeArg("mips", 1); err != nil || f != (Field{60, 4}) {
		t.Errorf("KprobeArg(mips, 1) = %+v, %v; want BTF's {60 4}, not the table's", f, err)
	}
	if skb, err := trimmed.FuncSkbArg("ip_local_out"); err != nil || skb != 2 {
		t.Errorf("FuncSkbArg(ip_local_out) = %d, %v; want 2", skb, err)
	}
}

func TestTrimmedNeedsBTF(t *testing.T) {
	if err := WriteTrimmedBTF(&bytes.Buffer{}, Symbolic(), nil); err == nil {
		t.Error("a layout without BTF was trimmed")
	}
}
