package layout

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skbstat/skbstat/internal/rawbtf"
	"github.com/skbstat/skbstat/internal/tracefs"
)

func TestRawTracepoint(t *testing.T) {
	l := newTestKernel().layout(t)
	tests := []struct {
		name    string
		want    Tracepoint
		wantErr string
	}{
		// A 32-bit kernel's pointers too take a whole u64 slot.
		{name: "kfree_skb", want: Tracepoint{Group: "g", Name: "kfree_skb", Raw: true, Skb: Field{0, 8}, Location: Field{8, 8}, Reason: Field{16, 8}}},
		{name: "consume_skb", want: Tracepoint{Group: "g", Name: "consume_skb", Raw: true, Skb: Field{0, 8}, Location: Field{8, 8}}},
		// An int after the skb is no location.
		{name: "net_dev_xmit", want: Tracepoint{Group: "g", Name: "net_dev_xmit", Raw: true, Skb: Field{0, 8}}},
		{name: "sched_switch", wantErr: "has no struct sk_buff * argument"},
		{name: "broken", wantErr: "not a pointer to a function"},
		{name: "missing", wantErr: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.RawTracepoint("g", tt.name)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "g:"+tt.name) {
					t.Errorf("error %v, want one naming g:%s and containing %q", err, tt.name, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("RawTracepoint = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func readFixture(t *testing.T, name string) *tracefs.Format {
	t.Helper()
	file, err := os.Open(filepath.Join("..", "internal", "tracefs", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	f, err := tracefs.ParseFormat(file)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPerfTracepoint(t *testing.T) {
	kfree := func(skb, location, reason Field) Tracepoint {
		return Tracepoint{Group: "skb", Name: "kfree_skb", Skb: skb, Location: location, Reason: reason}
	}
	tests := []struct {
		name    string
		format  *tracefs.Format
		want    Tracepoint
		wantErr string
	}{
		{name: "6.18", format: readFixture(t, "kfree_skb-6.18.format"), want: kfree(Field{8, 8}, Field{16, 8}, Field{36, 4})},
		{name: "6.1", format: readFixture(t, "kfree_skb-6.1.format"), want: kfree(Field{8, 8}, Field{16, 8}, Field{28, 4})},
		{name: "5.10", format: readFixture(t, "kfree_skb-5.10.format"), want: kfree(Field{8, 8}, Field{16, 8}, Field{})},
		{
			name: "32-bit",
			format: &tracefs.Format{Name: "kfree_skb", Fields: []tracefs.Field{
				{Name: "skbaddr", Type: "void *", Offset: 8, Size: 4},
				{Name: "location", Type: "void *", Offset: 12, Size: 4},
				{Name: "protocol", Type: "unsigned short", Offset: 16, Size: 2},
				{Name: "reason", Type: "enum skb_drop_reason", Offset: 20, Size: 4},
			}},
			want: kfree(Field{8, 4}, Field{12, 4}, Field{20, 4}),
		},
		{
			name: "location not a pointer",
			format: &tracefs.Format{Name: "kfree_skb", Fields: []tracefs.Field{
				{Name: "skbaddr", Type: "void *", Offset: 8, Size: 8},
				{Name: "location", Type: "short", Offset: 16, Size: 2},
			}},
			wantErr: "location has size 2",
		},
		{
			name:    "no skbaddr",
			format:  &tracefs.Format{Name: "kfree_skb", Fields: []tracefs.Field{{Name: "skb", Offset: 8, Size: 8}}},
			wantErr: "has no skbaddr field",
		},
		{
			name:    "skbaddr not a pointer",
			format:  &tracefs.Format{Name: "kfree_skb", Fields: []tracefs.Field{{Name: "skbaddr", Offset: 8, Size: 2}}},
			wantErr: "skbaddr has size 2",
		},
		{name: "another tracepoint's format", format: &tracefs.Format{Name: "consume_skb"}, wantErr: `format is for "consume_skb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PerfTracepoint(tt.format, "skb", "kfree_skb")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("PerfTracepoint = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestPerfTracepointConsume reads consume_skb's format before Linux 6.3,
// without a location, and since.
func TestPerfTracepointConsume(t *testing.T) {
	skb := tracefs.Field{Name: "skbaddr", Type: "void *", Offset: 8, Size: 8}
	location := tracefs.Field{Name: "location", Type: "void *", Offset: 16, Size: 8}
	for _, tt := range []struct {
		name   string
		fields []tracefs.Field
		want   Field
	}{
		{"6.2", []tracefs.Field{skb}, Field{}},
		{"6.3", []tracefs.Field{skb, location}, Field{16, 8}},
	} {
		got, err := PerfTracepoint(&tracefs.Format{Name: "consume_skb", Fields: tt.fields}, "skb", "consume_skb")
		want := Tracepoint{Group: "skb", Name: "consume_skb", Skb: Field{8, 8}, Location: tt.want}
		if err != nil || got != want {
			t.Errorf("%s: PerfTracepoint = %+v, %v; want %+v", tt.name, got, err, want)
		}
	}
}

// liveTracepoints are the tracepoints skbstat attaches, with where their raw
// arguments are on every kernel that has them: the skb first, the location
// second, kfree_skb's reason third (rx_sk, where present, comes after it).
// consume_skb has a location only since Linux 6.3: on older kernels the
// tests take its absence.
var liveTracepoints = []struct {
	group, name string
	raw         Tracepoint
}{
	{"skb", "kfree_skb", Tracepoint{Skb: Field{0, 8}, Location: Field{8, 8}, Reason: Field{16, 8}}},
	{"skb", "consume_skb", Tracepoint{Skb: Field{0, 8}, Location: Field{8, 8}}},
	{"net", "netif_receive_skb", Tracepoint{Skb: Field{0, 8}}},
	{"net", "net_dev_queue", Tracepoint{Skb: Field{0, 8}}},
	{"net", "net_dev_xmit", Tracepoint{Skb: Field{0, 8}}},
}

func TestRawTracepointLive(t *testing.T) {
	l := kernelBTF(t)
	for _, tt := range liveTracepoints {
		got, err := l.RawTracepoint(tt.group, tt.name)
		if err != nil {
			t.Error(err)
			continue
		}
		want := tt.raw
		want.Group, want.Name, want.Raw = tt.group, tt.name, true
		if tt.name == "consume_skb" && got.Location.Size == 0 {
			want.Location = Field{}
		}
		if got != want {
			t.Errorf("RawTracepoint(%s, %s) = %+v, want %+v", tt.group, tt.name, got, want)
		}
		checkLocationName(t, l, got)
	}
}

// checkLocationName checks that the argument RawTracepoint takes for the
// location, found by its place, is the one the kernel calls location: the
// tracepoint's BPF probe function __bpf_trace_<name> names its parameters in
// BTF, where the kernel's pahole keeps such static functions.
func checkLocationName(t *testing.T, l *Layout, tp Tracepoint) {
	t.Helper()
	fn, err := l.typeByName("__bpf_trace_"+tp.Name, rawbtf.KindFunc)
	if err != nil {
		t.Logf("%s: no named parameters to check the location with: %v", tp.Name, err)
		return
	}
	proto, err := l.btf.Type(fn.Ref)
	if err != nil {
		t.Fatal(err)
	}
	params := proto.Params[1:] // after __data
	var named Field
	for i, p := range params {
		if p.Name == "location" {
			named = Field{Offset: uint32(i * rawSlotSize), Size: rawSlotSize}
		}
	}
	if named != tp.Location {
		t.Errorf("%s: location at %+v, but __bpf_trace_%s has it at %+v", tp.Name, tp.Location, tp.Name, named)
	}
}

// TestPerfTracepointLive checks the perf tracepoints against BTF: the same
// arguments, skbaddr pointer-sized.
func TestPerfTracepointLive(t *testing.T) {
	l := kernelBTF(t)
	dir := tracefsDir(t)
	for _, tt := range liveTracepoints {
		f, err := tracefs.ReadFormat(dir, tt.group, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		perf, err := PerfTracepoint(f, tt.group, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := l.RawTracepoint(tt.group, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if perf.Skb.Size != uint32(l.PointerSize) || (perf.Reason.Size != 0) != (raw.Reason.Size != 0) ||
			(perf.Location.Size != 0) != (raw.Location.Size != 0) || perf.Location.Size != 0 && perf.Location.Size != uint32(l.PointerSize) {
			t.Errorf("%s:%s: perf %+v, raw %+v, pointer size %d", tt.group, tt.name, perf, raw, l.PointerSize)
		}
		t.Logf("perf %s:%s: skb %+v location %+v reason %+v", tt.group, tt.name, perf.Skb, perf.Location, perf.Reason)
	}
}

// tracefsDir mounts tracefs if needed (leaving it mounted, as skbstat does).
func tracefsDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("reading tracepoint formats needs root")
	}
	dir, err := tracefs.Mount()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRawTracepointNotFound(t *testing.T) {
	_, err := newTestKernel().layout(t).RawTracepoint("skb", "no_such")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("error %v, want ErrNotFound", err)
	}
}
