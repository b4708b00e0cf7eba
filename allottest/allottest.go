// Package allottest runs an allot server inside a test, so that code using
// the allot SDK can be tested against the real thing: the same coordinator,
// HTTP API and embedded store as `allot server`, on 127.0.0.1 with a port
// of its own and a store in the test's temporary directory. Each Server is
// independent of every other; it stops, and its goroutines end, when the
// test that started it ends.
package allottest

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/server"
)

// Server is an allot server running for one test.
type Server struct {
	url string
}

// NewServer starts a server for the test t and stops it when t ends. The
// store syncs to disk as `--sync normal` does: durable across a crash of
// the process, which a test does not need more of.
func NewServer(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := server.Config{
		Addr:        "127.0.0.1:0",
		DataDir:     t.TempDir(),
		Synchronous: "NORMAL",
		Coord:       coord.DefaultConfig(),
		Listening:   func(a net.Addr) { addr <- a },
	}
	go func() { done <- server.Run(ctx, cfg) }()
	var s *Server
	select {
	case a := <-addr:
		s = &Server{url: "http://" + a.String() + "/api"}
	case err := <-done:
		cancel()
		t.Fatalf("allottest: start server: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("allottest: server stopped with an error: %v", err)
		}
	})
	return s
}

// URL returns the server's API URL, http://127.0.0.1:PORT/api, for
// allot.WithURL or ALLOT_API_URL.
func (s *Server) URL() string { return s.url }

// Client returns a Client of the server, whatever ALLOT_API_URL and
// ALLOT_API_KEY say; opts are applied after that. Its idle connections are
// closed when t ends.
func (s *Server) Client(t testing.TB, opts ...allot.ClientOption) *allot.Client {
	t.Helper()
	c, err := allot.NewClient(append([]allot.ClientOption{allot.WithURL(s.url), allot.WithAPIKey("")}, opts...)...)
	if err != nil {
		t.Fatalf("allottest: new client: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}
