package layout

import (
	"errors"
	"maps"
	"testing"

	"github.com/skbstat/skbstat/internal/tracefs"
)

func TestDropReasonsFromBTF(t *testing.T) {
	got, err := newTestKernel().layout(t).DropReasons()
	if err != nil {
		t.Fatal(err)
	}
	// SKB_NOT_DROPPED_YET and SKB_CONSUMED are not drops; MAX and SUBSYS_MASK are bounds.
	want := map[uint32]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET"}
	if !maps.Equal(got, want) {
		t.Errorf("DropReasons = %v, want %v", got, want)
	}
}

func TestDropReasonsWithoutEnum(t *testing.T) {
	k := newTestKernel()
	k.others = k.others[1:] // the only user of enum skb_drop_reason, as on 5.10
	if _, err := k.layout(t).DropReasons(); !errors.Is(err, ErrNotFound) {
		t.Errorf("error %v, want ErrNotFound", err)
	}
}

func TestDropReasonsFromFormat(t *testing.T) {
	tests := []struct {
		name  string
		f     *tracefs.Format
		count int
		some  map[uint32]string
	}{
		{"6.18", readFixture(t, "kfree_skb-6.18.format"), 126, map[uint32]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET", 4: "SOCKET_CLOSE", 127: "RECURSION_LIMIT"}},
		{"6.1", readFixture(t, "kfree_skb-6.1.format"), 67, map[uint32]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET", 4: "PKT_TOO_SMALL", 68: "FRAG_TOO_FAR"}},
		{"5.10", readFixture(t, "kfree_skb-5.10.format"), 0, nil},
		{"hex and unresolved enums", &tracefs.Format{PrintFmt: `"r=%s", __print_symbolic(REC->reason, { 0x2, "A" }, { SKB_DROP_REASON_B, "B" }, { 10, "C" })`}, 2, map[uint32]string{2: "A", 10: "C"}},
		{"other symbolic field", &tracefs.Format{PrintFmt: `"%s", __print_symbolic(REC->proto, { 6, "TCP" })`}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DropReasonsFromFormat(tt.f)
			if len(got) != tt.count {
				t.Errorf("%d reasons, want %d", len(got), tt.count)
			}
			for v, name := range tt.some {
				if got[v] != name {
					t.Errorf("reason %d = %q, want %q", v, got[v], name)
				}
			}
			for v, name := range got {
				if isSentinel(name) {
					t.Errorf("reason %d = %s, a bound, not a reason", v, name)
				}
			}
		})
	}
}

// TestDropReasonsLive checks that the kernel's BTF and its tracepoint format
// name the same reasons.
func TestDropReasonsLive(t *testing.T) {
	l := kernelBTF(t)
	fromBTF, err := l.DropReasons()
	if err != nil {
		t.Fatal(err)
	}
	f, err := tracefs.ReadFormat(tracefsDir(t), "skb", "kfree_skb")
	if err != nil {
		t.Fatal(err)
	}
	fromFormat := DropReasonsFromFormat(f)
	common := 0
	for v, name := range fromFormat {
		if btfName, ok := fromBTF[v]; ok {
			common++
			if btfName != name {
				t.Errorf("reason %d: BTF %s, format %s", v, btfName, name)
			}
		}
	}
	if !maps.Equal(fromBTF, fromFormat) {
		t.Errorf("BTF has %d reasons, the format %d, %d in common", len(fromBTF), len(fromFormat), common)
	}
	noSocket := 0
	for v, name := range fromBTF {
		if name == "NO_SOCKET" {
			noSocket++
			if fromFormat[v] != "NO_SOCKET" {
				t.Errorf("NO_SOCKET is %d in BTF, the format has %q there", v, fromFormat[v])
			}
		}
	}
	if noSocket != 1 {
		t.Errorf("BTF names NO_SOCKET %d times, want 1", noSocket)
	}
	t.Logf("%d reasons, %d in common", len(fromBTF), common)
}

func TestReasonName(t *testing.T) {
	reasons := map[uint32]string{3: "NO_SOCKET"}
	tests := []struct {
		v    uint32
		want string
	}{
		{3, "NO_SOCKET"},
		{200, "0xc8"},
		{0x20005, "SUBSYS_2:0x5"},
		{0xffff0000, "SUBSYS_65535:0x0"},
	}
	for _, tt := range tests {
		if got := ReasonName(reasons, tt.v); got != tt.want {
			t.Errorf("ReasonName(%#x) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
