package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawConn is one keep-alive HTTP/1.1 connection that speaks just enough of
// the protocol for the workloads' hot path (POST a JSON body, read status
// and body). A load generator must cost less than what it measures: Go's
// http.Client spends about as much CPU per request as the server it
// loads, which on a 2-core machine shared by both would measure the client.
// Everything else (set-up, checks, clean-up) goes through net/http.
type rawConn struct {
	addr string // host:port to dial
	host string // Host header
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	body []byte // the last response body; reused
	auth string // an API key to send as a bearer token, or ""

	watched <-chan struct{} // Done of the context whose end interrupts conn
	unwatch func() bool     // stops that; nil when nothing is watched
}

func newRawConn(base string) (*rawConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("raw client speaks http only, not %q", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &rawConn{addr: addr, host: u.Host}, nil
}

func (r *rawConn) close() {
	if r.unwatch != nil {
		r.unwatch()
	}
	r.unwatch, r.watched = nil, nil
	if r.conn != nil {
		_ = r.conn.Close()
		r.conn = nil
	}
}

// post sends body to path and returns the status and the response body,
// which stays valid until the next call. It gives up after timeout (the
// dial included), and at once when ctx is done. It dials when it has no
// connection, and drops the connection on any error.
//
// A request costs no timer or context of its own: the connection's
// deadline bounds it, and one context.AfterFunc per connection interrupts
// it when ctx ends.
func (r *rawConn) post(ctx context.Context, timeout time.Duration, path string, body []byte) (int, []byte, error) {
	if r.conn != nil && r.watched != ctx.Done() {
		r.close() // watched for another context: start afresh
	}
	if r.conn == nil {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", r.addr)
		if err != nil {
			return 0, nil, err
		}
		r.conn = c
		r.br = bufio.NewReaderSize(c, 4096)
		r.bw = bufio.NewWriterSize(c, 4096)
		r.watch(ctx)
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = r.conn.SetDeadline(deadline)
	// Checked after the deadline is set: a cancellation from now on
	// interrupts the exchange, an earlier one is seen here.
	if err := ctx.Err(); err != nil {
		r.close()
		return 0, nil, err
	}
	code, err := r.exchange(path, body)
	if err != nil {
		r.close()
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, err
	}
	return code, r.body, nil
}

// watch makes ctx's end interrupt whatever the new connection is doing. A
// connection is watched for one context all its life, so that a watcher
// that fired cannot cut short a later request.
func (r *rawConn) watch(ctx context.Context) {
	r.watched = ctx.Done()
	if r.watched == nil {
		return // ctx never ends
	}
	conn := r.conn
	r.unwatch = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
}

func (r *rawConn) exchange(path string, body []byte) (int, error) {
	w := r.bw
	w.WriteString("POST ")
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(r.host)
	if r.auth != "" {
		w.WriteString("\r\nAuthorization: Bearer ")
		w.WriteString(r.auth)
	}
	w.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return r.readResponse()
}

// readResponse reads a status line, headers, and a body framed by
// Content-Length or chunked encoding.
func (r *rawConn) readResponse() (int, error) {
	line, err := r.line()
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, closing := -1, false, false
	for {
		h, err := r.line()
		if err != nil {
			return 0, err
		}
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, fmt.Errorf("bad header %q", h)
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return 0, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(v, []byte("close"))
		}
	}
	r.body = r.body[:0]
	switch {
	case chunked:
		for {
			l, err := r.line()
			if err != nil {
				return 0, err
			}
			if i := bytes.IndexByte(l, ';'); i >= 0 {
				l = l[:i]
			}
			n, err := strconv.ParseInt(string(bytes.TrimSpace(l)), 16, 32)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("bad chunk size %q", l)
			}
			if n == 0 {
				if _, err := r.line(); err != nil { // the empty trailer
					return 0, err
				}
				break
			}
			if err := r.readBody(int(n)); err != nil {
				return 0, err
			}
			if _, err := r.line(); err != nil {
				return 0, err
			}
		}
	case length >= 0:
		if err := r.readBody(length); err != nil {
			return 0, err
		}
	case code == 204 || code == 304:
	default:
		return 0, errors.New("response without length")
	}
	if closing {
		r.close()
	}
	return code, nil
}

func (r *rawConn) readBody(n int) error {
	start := len(r.body)
	r.body = append(r.body, make([]byte, n)...)
	_, err := io.ReadFull(r.br, r.body[start:])
	return err
}

func (r *rawConn) line() ([]byte, error) {
	l, err := r.br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}
