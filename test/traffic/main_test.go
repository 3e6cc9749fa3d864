package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestMain lets the test binary act as the traffic command, so the tests
// run the real command line in a subprocess without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("TRAFFIC_TEST_RUN_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// server is a `traffic serve` subprocess.
type server struct {
	cmd    *exec.Cmd
	out    *bufio.Scanner
	stderr bytes.Buffer
	port   string
}

var listening = regexp.MustCompile(`^serve: listening (udp|tcp) .*:(\d+)$`)

// startServe runs `traffic serve args...` and waits until it listens.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), "TRAFFIC_TEST_RUN_MAIN=1")
	s := &server{cmd: cmd}
	cmd.Stderr = &s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s.out = bufio.NewScanner(stdout)
	if !s.out.Scan() {
		cmd.Wait()
		t.Fatalf("serve %v printed nothing; stderr: %s", args, s.stderr.String())
	}
	m := listening.FindStringSubmatch(s.out.Text())
	if m == nil {
		t.Fatalf("serve %v: first line %q, want the listening address", args, s.out.Text())
	}
	s.port = m[2]
	return s
}

// wait returns the server's last line and exit status.
func (s *server) wait(t *testing.T) (string, int) {
	t.Helper()
	var last string
	for s.out.Scan() {
		last = s.out.Text()
	}
	err := s.cmd.Wait()
	if exit, ok := err.(*exec.ExitError); ok {
		return last, exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return last, 0
}

// runTraffic runs the command in-process.
func runTraffic(args ...string) (stdout, stderr string, status int) {
	var o, e bytes.Buffer
	status = run(args, &o, &e)
	return o.String(), e.String(), status
}

func TestUDPCountsExactly(t *testing.T) {
	for _, tc := range []struct {
		name, dst, src string
	}{
		{"ipv4", "127.0.0.1", ""},
		{"ipv6", "[::1]", ""},
		{"ipv4 fixed source port", "127.0.0.1", "127.0.0.1:40123"},
		{"ipv6 fixed source port", "[::1]", "[::1]:40124"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100
			srv := startServe(t, "-udp", "0", "-n", fmt.Sprint(n), "-timeout", "20s")
			args := []string{"udp", "-n", fmt.Sprint(n), "-size", "200"}
			if tc.src != "" {
				args = append(args, "-src", tc.src)
			}
			out, errOut, status := runTraffic(append(args, tc.dst+":"+srv.port)...)
			if status != 0 {
				t.Fatalf("traffic %v: status %d, stderr %q", args, status, errOut)
			}
			if want := fmt.Sprintf("udp: sent %d of %d datagrams", n, n); !strings.HasPrefix(out, want) {
				t.Errorf("sender printed %q, want prefix %q", out, want)
			}
			if tc.src != "" && !strings.Contains(out, "from "+tc.src+" ") {
				t.Errorf("sender printed %q, want source %s", out, tc.src)
			}
			last, status := srv.wait(t)
			if want := fmt.Sprintf("serve: received %d udp datagrams", n); last != want || status != 0 {
				t.Errorf("server ended with %q, status %d; want %q, status 0 (stderr %q)", last, status, want, srv.stderr.String())
			}
		})
	}
}

// closedPort returns a TCP port on loopback that nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

func TestTCP(t *testing.T) {
	const n = 5
	t.Run("open port, fixed source port", func(t *testing.T) {
		srv := startServe(t, "-tcp", "0", "-addr", "127.0.0.1", "-n", fmt.Sprint(n), "-timeout", "20s")
		out, errOut, status := runTraffic("tcp", "-n", fmt.Sprint(n), "-src", "127.0.0.1:40125", "127.0.0.1:"+srv.port)
		if want := fmt.Sprintf("tcp: %d attempts to 127.0.0.1:%s: %d connected, 0 refused, 0 failed\n", n, srv.port, n); out != want || status != 0 {
			t.Errorf("sender printed %q, status %d (stderr %q); want %q, status 0", out, status, errOut, want)
		}
		if last, status := srv.wait(t); last != fmt.Sprintf("serve: received %d tcp messages", n) || status != 0 {
			t.Errorf("server ended with %q, status %d", last, status)
		}
	})
	t.Run("closed port", func(t *testing.T) {
		port := closedPort(t)
		out, errOut, status := runTraffic("tcp", "-n", fmt.Sprint(n), "127.0.0.1:"+port)
		if want := fmt.Sprintf("tcp: %d attempts to 127.0.0.1:%s: 0 connected, %d refused, 0 failed\n", n, port, n); out != want || status != 0 {
			t.Errorf("sender printed %q, status %d (stderr %q); want %q, status 0", out, status, errOut, want)
		}
	})
}

func TestServeStopsShortIsAnError(t *testing.T) {
	srv := startServe(t, "-udp", "0", "-n", "3", "-timeout", "200ms")
	last, status := srv.wait(t)
	if last != "serve: received 0 udp datagrams" || status != 1 {
		t.Errorf("server ended with %q, status %d; want 0 datagrams, status 1", last, status)
	}
	if !strings.Contains(srv.stderr.String(), "stopped with 0 of 3") {
		t.Errorf("stderr %q does not say what was missing", srv.stderr.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the one-line message
	}{
		{nil, "want a subcommand"},
		{[]string{"ping"}, `"ping"`},
		{[]string{"udp", "-n", "0", "127.0.0.1:9"}, "-n 0"},
		{[]string{"udp", "-n", "x", "127.0.0.1:9"}, "-n"},
		{[]string{"udp", "-size", "70000", "127.0.0.1:9"}, "-size 70000"},
		{[]string{"udp", "-src", "1.2.3", "127.0.0.1:9"}, "-src"},
		{[]string{"udp", "-src", "::1", "127.0.0.1:9"}, "different IP families"},
		{[]string{"udp", "127.0.0.1"}, `destination "127.0.0.1"`},
		{[]string{"udp"}, "got 0 arguments"},
		{[]string{"tcp", "-timeout", "0s", "127.0.0.1:9"}, "-timeout 0s"},
		{[]string{"serve"}, "exactly one of -udp PORT and -tcp PORT"},
		{[]string{"serve", "-udp", "1", "-tcp", "1"}, "exactly one of"},
		{[]string{"serve", "-udp", "70000"}, "-udp 70000"},
		{[]string{"serve", "-udp", "0", "-addr", "x"}, `-addr "x"`},
		{[]string{"frames", "-src", "10.0.0.1:1", "10.0.0.2:9"}, "want -dev DEV"},
		{[]string{"frames", "-dev", "lo", "-src", "10.0.0.1", "10.0.0.2:9"}, "want -src IP:PORT"},
		{[]string{"frames", "-dev", "lo", "-tags", "8100", "-src", "10.0.0.1:1", "10.0.0.2:9"}, `tag "8100"`},
		{[]string{"frames", "-dev", "lo", "-tags", "8100:4096", "-src", "10.0.0.1:1", "10.0.0.2:9"}, `tag "8100:4096"`},
		{[]string{"frames", "-dev", "lo", "-ext", "2", "-src", "10.0.0.1:1", "10.0.0.2:9"}, "-ext 2: want a number of headers, with an IPv6 destination"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, status := runTraffic(tc.args...)
			if status != 2 || out != "" {
				t.Errorf("status %d, stdout %q; want 2 and nothing", status, out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q; want one line containing %q", errOut, tc.want)
			}
		})
	}
}

// TestFrame checks a frame traffic frames sends: the tags in order behind
// the addresses, then the inner ethertype and a UDP datagram whose
// checksums verify (the checksum over a checksummed header is 0).
func TestFrame(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.1:5555"), netip.MustParseAddrPort("10.0.0.2:9999")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	frame := ethernetFrame(mac, []vlanTag{{0x88a8, 10}, {0x8100, 20}}, udpDatagram(src, dst, pattern(5), 0), false)
	want := "ffffffffffff020000000001" + "88a8000a" + "81000014" + "0800"
	if got := hex.EncodeToString(frame[:22]); got != want {
		t.Errorf("header %s, want %s", got, want)
	}
	ip := frame[22:]
	if len(ip) != 20+8+5 || ip[0] != 0x45 || ip[9] != 17 || checksum(ip[:20]) != 0 {
		t.Errorf("IPv4 header % x: want 33 bytes, version 4, IHL 5, UDP, a checksum that verifies", ip[:20])
	}
	if sum := checksum(ip[12:20], []byte{0, 17}, ip[24:26], ip[20:]); sum != 0 {
		t.Errorf("UDP checksum does not verify: %#x", sum)
	}
}

// TestDestinationOptions checks an IPv6 datagram behind destination options
// headers: the chain's next header fields, and a UDP checksum that
// verifies.
func TestDestinationOptions(t *testing.T) {
	src, dst := netip.MustParseAddrPort("[fd00::1]:5555"), netip.MustParseAddrPort("[fd00::2]:9999")
	ip := udpDatagram(src, dst, pattern(5), 3)
	if len(ip) != 40+3*8+8+5 || ip[0]>>4 != 6 || ip[6] != 60 || int(binary.BigEndian.Uint16(ip[4:])) != len(ip)-40 {
		t.Fatalf("IPv6 header % x: want 3 headers of 8 bytes, first next header 60, payload length %d", ip[:40], len(ip)-40)
	}
	for i, want := range []byte{60, 60, 17} {
		if h := ip[40+8*i:]; h[0] != want || h[1] != 0 || h[2] != 1 || h[3] != 4 {
			t.Errorf("header %d % x: want next header %d, length 0, PadN of 4", i, h[:8], want)
		}
	}
	udp := ip[40+3*8:]
	if sum := checksum(ip[8:40], []byte{0, 17}, udp[4:6], udp); sum != 0 {
		t.Errorf("UDP checksum does not verify: %#x", sum)
	}
}
