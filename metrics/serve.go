package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// ContentType is the text exposition format's.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Server answers HTTP scrapes of /metrics. It speaks just enough HTTP/1.1
// for Prometheus and curl (one request per connection, then close): net/http
// would add 4 MB to a binary that must fit a router's flash.
type Server struct {
	ln    net.Listener
	write func(io.Writer) error
	warn  io.Writer
	wg    sync.WaitGroup
}

// Serve answers scrapes on ln with what write writes, until Close. Errors
// of write go to warn, and the scrape gets status 500.
func Serve(ln net.Listener, write func(io.Writer) error, warn io.Writer) *Server {
	s := &Server{ln: ln, write: write, warn: warn}
	s.wg.Go(s.accept)
	return s
}

// Close stops listening and waits for the scrapes being answered.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	for {
		conn, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			fmt.Fprintf(s.warn, "skbstat: --listen %s: %v\n", s.ln.Addr(), err)
			time.Sleep(100 * time.Millisecond) // out of file descriptors, say: don't spin
			continue
		}
		s.wg.Go(func() { s.answer(conn) })
	}
}

// Limits on a request, which has no business being large.
const (
	requestTimeout = 10 * time.Second
	maxHeaderBytes = 16 << 10
)

// answer reads one request from conn, answers it and closes conn.
func (s *Server) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))
	status, body := s.respond(textproto.NewReader(bufio.NewReader(io.LimitReader(conn, maxHeaderBytes))))
	fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", status, contentType(status), len(body))
	conn.Write(body)
}

// respond reads a request's line and headers and returns the status and
// body of the answer.
func (s *Server) respond(r *textproto.Reader) (status string, body []byte) {
	line, err := r.ReadLine()
	if err != nil {
		return "400 Bad Request", []byte("bad request\n")
	}
	if _, err := r.ReadMIMEHeader(); err != nil {
		return "400 Bad Request", []byte("bad request headers\n")
	}
	method, rest, _ := strings.Cut(line, " ")
	target, proto, _ := strings.Cut(rest, " ")
	path, _, _ := strings.Cut(target, "?")
	switch {
	case !strings.HasPrefix(proto, "HTTP/1."):
		return "505 HTTP Version Not Supported", []byte("HTTP/1.x only\n")
	case path != "/metrics":
		return "404 Not Found", []byte("skbstat serves /metrics only\n")
	case method != "GET":
		return "405 Method Not Allowed", []byte("GET only\n")
	}
	var b bytes.Buffer
	if err := s.write(&b); err != nil {
		fmt.Fprintf(s.warn, "skbstat: --listen: %v\n", err)
		return "500 Internal Server Error", []byte(err.Error() + "\n")
	}
	return "200 OK", b.Bytes()
}

func contentType(status string) string {
	if strings.HasPrefix(status, "200") {
		return ContentType
	}
	return "text/plain; charset=utf-8"
}
