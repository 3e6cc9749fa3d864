package main

import (
	"fmt"
	"io"
	"net"
	"time"
)

// maxUDPPayload is the largest IPv4 UDP payload.
const maxUDPPayload = 65507

// udpCommand sends -n datagrams from one unconnected socket. It uses
// sendto rather than a connected socket because a connected one turns
// the ICMP errors from a closed port into ECONNREFUSED on later sends.
func udpCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("udp")
	n := fs.Int("n", 1, "number of datagrams")
	var src sourceFlag
	fs.Var(&src, "src", "source IP or IP:PORT")
	interval := fs.Duration("interval", 0, "pause between datagrams")
	size := fs.Int("size", 32, "payload bytes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkCount("udp", *n); err != nil {
		return err
	}
	if *size < 0 || *size > maxUDPPayload {
		return fmt.Errorf("%w: udp: -size %d: want 0 to %d", errUsage, *size, maxUDPPayload)
	}
	if *interval < 0 {
		return fmt.Errorf("%w: udp: -interval %v: want a duration of 0 or more", errUsage, *interval)
	}
	dst, err := destination(fs)
	if err != nil {
		return err
	}
	local, err := src.localFor(dst)
	if err != nil {
		return err
	}

	conn, err := net.ListenUDP(network("udp", dst.Addr()), net.UDPAddrFromAddrPort(local))
	if err != nil {
		return fmt.Errorf("udp: bind %s: %w", local, err)
	}
	defer conn.Close()

	payload := pattern(*size)
	sent, firstErr := sendEach(*n, *interval, func() error {
		_, err := conn.WriteToUDPAddrPort(payload, dst)
		return err
	})
	fmt.Fprintf(stdout, "udp: sent %d of %d datagrams from %s to %s\n", sent, *n, conn.LocalAddr(), dst)
	if firstErr != nil {
		return fmt.Errorf("udp: %d of %d datagrams not sent, first error: %w", *n-sent, *n, firstErr)
	}
	return nil
}

// sendEach calls send n times, interval apart, and returns how many
// calls succeeded and the first error.
func sendEach(n int, interval time.Duration, send func() error) (int, error) {
	var ok int
	var firstErr error
	for i := range n {
		if err := send(); err != nil {
			if firstErr == nil {
				firstErr = err
			}
		} else {
			ok++
		}
		if interval > 0 && i < n-1 {
			time.Sleep(interval)
		}
	}
	return ok, firstErr
}

// pattern returns size recognisable payload bytes.
func pattern(size int) []byte {
	const text = "skbstat traffic "
	b := make([]byte, size)
	for i := range b {
		b[i] = text[i%len(text)]
	}
	return b
}
