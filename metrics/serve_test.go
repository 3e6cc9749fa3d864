package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// TestServe asks the server as an HTTP client would, and with requests it
// must refuse.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fail := false
	s := Serve(ln, func(w io.Writer) error {
		if fail {
			return errors.New("counters gone")
		}
		_, err := io.WriteString(w, "skbstat_lost_stacks_total 0\n")
		return err
	}, io.Discard)
	defer s.Close()
	for _, c := range []struct {
		request, status, body string
		fail                  bool
	}{
		{"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", "HTTP/1.1 200 OK", "skbstat_lost_stacks_total 0\n", false},
		{"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", "skbstat_lost_stacks_total 0\n", false},
		{"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "skbstat serves /metrics only\n", false},
		{"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", "GET only\n", false},
		{"GET /metrics SPDY/3\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported", "HTTP/1.x only\n", false},
		{"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad request headers\n", false},
		{"GET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 500 Internal Server Error", "counters gone\n", true},
	} {
		fail = c.fail
		status, header, body := ask(t, ln.Addr().String(), c.request)
		if status != c.status || body != c.body {
			t.Errorf("%q: %q, body %q; want %q, body %q", c.request, status, body, c.status, c.body)
		}
		if want := fmt.Sprintf("Content-Length: %d", len(body)); !strings.Contains(header, want) || !strings.Contains(header, "Connection: close") {
			t.Errorf("%q: header %q: want %s and Connection: close", c.request, header, want)
		}
		if c.status == "HTTP/1.1 200 OK" && !strings.Contains(header, "Content-Type: "+ContentType) {
			t.Errorf("%q: header %q: want Content-Type %s", c.request, header, ContentType)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still listening after Close")
	}
}

// ask sends request and returns the status line, the header and the body.
func ask(t *testing.T, addr, request string) (status, header, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, request)
	all, err := io.ReadAll(bufio.NewReader(conn))
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(all), "\r\n\r\n")
	status, header, _ = strings.Cut(head, "\r\n")
	return status, header, body
}
