// Command traffic sends and receives a known number of packets, so that
// tests can compare skbstat's counts with what was really sent.
//
// It runs on the host (inside network namespaces, with ip netns exec) and
// inside the test VMs (test/vm), so it is a small static binary:
//
//	traffic udp -n N [-src IP[:PORT]] [-interval D] [-size B] DST_IP:PORT
//	traffic tcp -n N [-src IP[:PORT]] [-timeout D] DST_IP:PORT
//	traffic serve (-udp PORT [-unread] | -tcp PORT) [-addr IP] [-n N] [-timeout D]
//	traffic frames -n N -dev DEV [-tags TPID:VID,...] -src IP:PORT DST_IP:PORT
//	traffic progs
//	traffic veth -pid PID LOCAL_PREFIX PEER_PREFIX
//
// Flags come before the address. Every subcommand prints one summary line
// and exits 0 when it did what was asked, 1 when sending or receiving
// failed, and 2 on a usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors in the command line, which exit with status 2.
var errUsage = errors.New("usage")

// run executes one subcommand and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "traffic: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "traffic: %v\n", err)
		return 1
	}
}

func dispatch(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want a subcommand: udp, tcp, serve, frames, progs or veth", errUsage)
	}
	switch args[0] {
	case "udp":
		return udpCommand(args[1:], stdout)
	case "tcp":
		return tcpCommand(args[1:], stdout)
	case "serve":
		return serveCommand(args[1:], stdout)
	case "frames":
		return framesCommand(args[1:], stdout)
	case "progs":
		return progsCommand(args[1:], stdout)
	case "veth":
		return vethCommand(args[1:], stdout)
	default:
		return fmt.Errorf("%w: unknown subcommand %q (want udp, tcp, serve, frames, progs or veth)", errUsage, args[0])
	}
}

// newFlagSet returns a flag set whose errors are returned, not printed
// and exited on, so that bad input gives one line naming the option.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
	}
	return nil
}

// destination parses the single positional DST_IP:PORT argument.
func destination(fs *flag.FlagSet) (netip.AddrPort, error) {
	if fs.NArg() != 1 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: want exactly one DST_IP:PORT after the flags, got %d arguments", errUsage, fs.Name(), fs.NArg())
	}
	dst, err := netip.ParseAddrPort(fs.Arg(0))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: destination %q: want IP:PORT or [IPv6]:PORT", errUsage, fs.Name(), fs.Arg(0))
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), nil
}

// sourceFlag is -src IP or IP:PORT; port 0 lets the kernel choose.
type sourceFlag struct{ addr netip.AddrPort }

func (s *sourceFlag) String() string {
	if !s.addr.IsValid() {
		return ""
	}
	return s.addr.String()
}

func (s *sourceFlag) Set(v string) error {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		s.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		return nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("want IP, IP:PORT or [IPv6]:PORT")
	}
	s.addr = netip.AddrPortFrom(a.Unmap(), 0)
	return nil
}

// localFor returns the address to bind for sending to dst: the -src
// address when given (it must be of dst's family), else the wildcard.
func (s *sourceFlag) localFor(dst netip.AddrPort) (netip.AddrPort, error) {
	if !s.addr.IsValid() {
		if dst.Addr().Is4() {
			return netip.AddrPortFrom(netip.IPv4Unspecified(), 0), nil
		}
		return netip.AddrPortFrom(netip.IPv6Unspecified(), 0), nil
	}
	if s.addr.Addr().Is4() != dst.Addr().Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: -src %s and destination %s are of different IP families", errUsage, s.addr, dst)
	}
	return s.addr, nil
}

func checkCount(name string, n int) error {
	if n < 1 {
		return fmt.Errorf("%w: %s: -n %d: want at least 1", errUsage, name, n)
	}
	return nil
}

// network returns "udp4"/"tcp4" or "udp6"/"tcp6" for addr, so that an
// IPv4 test never silently travels as an IPv4-mapped IPv6 packet.
func network(proto string, addr netip.Addr) string {
	if addr.Is4() {
		return proto + "4"
	}
	return proto + "6"
}
