package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// serveCommand listens on one UDP or TCP port and counts what arrives:
// datagrams, or TCP connections that delivered their line. It stops
// after -n arrivals, after -timeout, or on SIGINT/SIGTERM, and prints
// the count. With -n, stopping before n arrived is an error. With
// -unread it reads no datagram: the kernel drops what is queued when the
// socket closes.
func serveCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("serve")
	udpPort := fs.Int("udp", -1, "UDP port to listen on (0: any)")
	tcpPort := fs.Int("tcp", -1, "TCP port to listen on (0: any)")
	addrText := fs.String("addr", "", "IP to listen on (default: all, IPv4 and IPv6)")
	n := fs.Int("n", 0, "stop after this many arrivals (0: no limit)")
	timeout := fs.Duration("timeout", 0, "stop after this long (0: no limit)")
	unread := fs.Bool("unread", false, "UDP: read nothing, so that what arrived is dropped at the end")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *unread && (*udpPort < 0 || *n != 0) {
		return fmt.Errorf("%w: serve: -unread: only with -udp, and without -n", errUsage)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: serve: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if (*udpPort < 0) == (*tcpPort < 0) {
		return fmt.Errorf("%w: serve: want exactly one of -udp PORT and -tcp PORT", errUsage)
	}
	proto, port := "udp", *udpPort
	if *tcpPort >= 0 {
		proto, port = "tcp", *tcpPort
	}
	if port > 65535 {
		return fmt.Errorf("%w: serve: -%s %d: want a port from 0 to 65535", errUsage, proto, port)
	}
	if *n < 0 {
		return fmt.Errorf("%w: serve: -n %d: want 0 or more", errUsage, *n)
	}
	if *timeout < 0 {
		return fmt.Errorf("%w: serve: -timeout %v: want 0 or more", errUsage, *timeout)
	}
	// Without -addr the socket is dual-stack, so one server sees both families.
	nw, addr := proto, netip.AddrPortFrom(netip.Addr{}, uint16(port))
	if *addrText != "" {
		a, err := netip.ParseAddr(*addrText)
		if err != nil {
			return fmt.Errorf("%w: serve: -addr %q: want an IP address", errUsage, *addrText)
		}
		nw, addr = network(proto, a), netip.AddrPortFrom(a.Unmap(), uint16(port))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	listen := serveUDP
	switch {
	case *unread:
		listen = holdUDP
	case proto == "tcp":
		listen = serveTCP
	}
	received, err := listen(ctx, nw, addr, *n, stdout)
	unit := map[string]string{"udp": "udp datagrams", "tcp": "tcp messages"}[proto]
	fmt.Fprintf(stdout, "serve: received %d %s\n", received, unit)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if *n > 0 && received < *n {
		return fmt.Errorf("serve: stopped with %d of %d %s", received, *n, unit)
	}
	return nil
}

// listenAddr returns the net package's form of addr; the zero Addr means
// every local address.
func listenAddr(addr netip.AddrPort) string {
	if !addr.Addr().IsValid() {
		return fmt.Sprintf(":%d", addr.Port())
	}
	return addr.String()
}

// serveUDP counts datagrams until n arrived or ctx ends.
func serveUDP(ctx context.Context, nw string, addr netip.AddrPort, n int, stdout io.Writer) (int, error) {
	conn, err := net.ListenPacket(nw, listenAddr(addr))
	if err != nil {
		return 0, fmt.Errorf("listen udp %s: %w", listenAddr(addr), err)
	}
	defer conn.Close()
	fmt.Fprintf(stdout, "serve: listening udp %s\n", conn.LocalAddr())
	stopOnDone := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stopOnDone()

	buf := make([]byte, 65536)
	var count int
	for n == 0 || count < n {
		if _, _, err := conn.ReadFrom(buf); err != nil {
			if ctx.Err() != nil {
				return count, nil
			}
			return count, fmt.Errorf("receive: %w", err)
		}
		count++
	}
	return count, nil
}

// holdUDP listens until ctx ends, reading nothing, and closes: the
// datagrams that arrived meanwhile are dropped with the socket.
func holdUDP(ctx context.Context, nw string, addr netip.AddrPort, _ int, stdout io.Writer) (int, error) {
	conn, err := net.ListenPacket(nw, listenAddr(addr))
	if err != nil {
		return 0, fmt.Errorf("listen udp %s: %w", listenAddr(addr), err)
	}
	fmt.Fprintf(stdout, "serve: listening udp %s\n", conn.LocalAddr())
	<-ctx.Done()
	return 0, conn.Close()
}

// serveTCP accepts connections one at a time, counts those that send a
// line, and closes each one first (see tcpCommand).
func serveTCP(ctx context.Context, nw string, addr netip.AddrPort, n int, stdout io.Writer) (int, error) {
	ln, err := net.Listen(nw, listenAddr(addr))
	if err != nil {
		return 0, fmt.Errorf("listen tcp %s: %w", listenAddr(addr), err)
	}
	defer ln.Close()
	fmt.Fprintf(stdout, "serve: listening tcp %s\n", ln.Addr())
	stopOnDone := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopOnDone()

	var count int
	for n == 0 || count < n {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return count, nil
			}
			return count, fmt.Errorf("accept: %w", err)
		}
		if receiveLine(conn) {
			count++
		}
	}
	return count, nil
}

// receiveLine reads one line from conn and closes it.
func receiveLine(conn net.Conn) bool {
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return false
	}
	_, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil
}
