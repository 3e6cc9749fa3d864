package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// tcpMessage is what a connected client sends; serve reads one line.
const tcpMessage = "skbstat traffic\n"

// tcpCommand makes -n connection attempts, one after the other. To a
// closed port each SYN is answered by a RST (counted as refused). To an
// open port it connects, sends one line and waits for the server to
// close first, so that the client never sits in TIME_WAIT and a fixed
// -src port can be reused by the next attempt.
func tcpCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("tcp")
	n := fs.Int("n", 1, "number of connection attempts")
	var src sourceFlag
	fs.Var(&src, "src", "source IP or IP:PORT")
	timeout := fs.Duration("timeout", 5*time.Second, "limit per attempt")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkCount("tcp", *n); err != nil {
		return err
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: tcp: -timeout %v: want a positive duration", errUsage, *timeout)
	}
	dst, err := destination(fs)
	if err != nil {
		return err
	}
	local, err := src.localFor(dst)
	if err != nil {
		return err
	}

	dialer := net.Dialer{Timeout: *timeout}
	if src.addr.IsValid() {
		dialer.LocalAddr = net.TCPAddrFromAddrPort(local)
	}
	var connected, refused int
	_, firstErr := sendEach(*n, 0, func() error {
		err := attempt(&dialer, dst.String(), network("tcp", dst.Addr()), *timeout)
		switch {
		case err == nil:
			connected++
		case errors.Is(err, syscall.ECONNREFUSED):
			refused++
			return nil
		}
		return err
	})
	failed := *n - connected - refused
	fmt.Fprintf(stdout, "tcp: %d attempts to %s: %d connected, %d refused, %d failed\n", *n, dst, connected, refused, failed)
	if firstErr != nil {
		return fmt.Errorf("tcp: %d of %d attempts failed, first error: %w", failed, *n, firstErr)
	}
	return nil
}

// attempt connects once; on success it sends tcpMessage and reads until
// the server closes.
func attempt(dialer *net.Dialer, dst, nw string, timeout time.Duration) error {
	conn, err := dialer.Dial(nw, dst)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, tcpMessage); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		return fmt.Errorf("wait for %s to close: %w", dst, err)
	}
	return nil
}
