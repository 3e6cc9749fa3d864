package tracing

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/internal/rawbtf"
)

// kernelType is the ID of the one type of kind called name in the running
// kernel's BTF.
func kernelType(t *testing.T, name string, kind rawbtf.Kind) uint32 {
	t.Helper()
	spec, err := rawbtf.Kernel()
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("kernel has no BTF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer spec.Close()
	typ, err := spec.One(name, kind)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(typ.ID)
}

func emptyTracing(name string, attach ebpf.AttachType) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Name: name, Type: ebpf.Tracing, AttachType: attach, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}
}

// TestLoadTpBTF loads a tp_btf program against the ID of
// btf_trace_kfree_skb and attaches it: the kernel's link is to the
// tracepoint of that name.
func TestLoadTpBTF(t *testing.T) {
	target := kernelType(t, "btf_trace_kfree_skb", rawbtf.KindTypedef)
	prog, err := Load(emptyTracing("skbstat_test_tp", ebpf.AttachTraceRawTp), target)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if info, err := prog.Info(); err != nil || info.Name != "skbstat_test_tp" || info.Type != ebpf.Tracing {
		t.Errorf("program info %+v, %v; want tracing program skbstat_test_tp", info, err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if tp := info.RawTracepoint(); tp == nil || tp.Name != "kfree_skb" {
		t.Errorf("link info %+v, want the raw tracepoint kfree_skb", tp)
	}
}

// TestLoadRefused loads against a type that is no tracepoint's: the kernel
// refuses it, and the error carries its errno and the verifier's reason.
func TestLoadRefused(t *testing.T) {
	target := kernelType(t, "sk_buff", rawbtf.KindStruct)
	_, err := Load(emptyTracing("skbstat_test_bad", ebpf.AttachTraceRawTp), target)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "skbstat_test_bad") || !strings.Contains(err.Error(), "is not a typedef") {
		t.Errorf("error %v, want EINVAL naming the program, with the verifier's words", err)
	}
	t.Logf("refused: %v", err)
}

func TestLoadBadSpec(t *testing.T) {
	kprobe := emptyTracing("skbstat_test_kp", ebpf.AttachNone)
	kprobe.Type = ebpf.Kprobe
	if _, err := Load(kprobe, 1); err == nil || !strings.Contains(err.Error(), "not tracing") {
		t.Errorf("kprobe program: error %v, want one saying it is not tracing", err)
	}
	if _, err := Load(emptyTracing("skbstat_test_0", ebpf.AttachTraceRawTp), 0); err == nil || !strings.Contains(err.Error(), "no attach target") {
		t.Errorf("target 0: error %v, want no attach target", err)
	}
}
