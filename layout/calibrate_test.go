package layout

import (
	"os"
	"testing"

	"github.com/cilium/ebpf/rlimit"

	"github.com/skbstat/skbstat/internal/lab"
)

// TestCalibrateMatchesBTF calibrates on the running kernel and compares
// every offset with the kernel's own BTF: where the truth is known,
// calibration must find it.
func TestCalibrateMatchesBTF(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("calibration needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	want, err := Kernel()
	if err != nil {
		t.Skipf("no kernel BTF to compare with: %v", err)
	}
	wantSock, err := want.SockCommon()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := lab.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	got, err := Calibrate(lb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("calibrated in %v", got.Calibration.Took)
	gotSock, err := got.SockCommon()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"sk_buff", got.SkBuff, want.SkBuff},
		{"net_device", got.NetDevice, want.NetDevice},
		{"net", got.Net, want.Net},
		{"sock_common", gotSock, wantSock},
		{"pointer size", got.PointerSize, want.PointerSize},
	} {
		if c.got != c.want {
			t.Errorf("%s: calibrated %+v, BTF %+v", c.name, c.got, c.want)
		}
	}
}
