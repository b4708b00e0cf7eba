package allot_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/allottest"
)

// deadURL returns an API URL on 127.0.0.1 where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/api"
}

func TestNewClientTakesSeveralURLs(t *testing.T) {
	t.Setenv(allot.EnvURL, "http://a.example:4200/api/, http://b.example:4200/api")
	c, err := allot.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.URL(), "http://a.example:4200/api"; got != want {
		t.Errorf("URL = %q, want the first, %q", got, want)
	}
	if _, err := allot.NewClient(allot.WithURLs("http://a.example/api", "b.example/api")); !errors.Is(err, allot.ErrInvalid) {
		t.Errorf("NewClient with a bad second URL = %v, want ErrInvalid", err)
	}
}

// TestClientMovesOnFromADeadURL gives the client a URL where nothing
// listens before a real server's: requests succeed, and the client stays
// with the URL that answered.
func TestClientMovesOnFromADeadURL(t *testing.T) {
	t.Parallel()
	srv := allottest.NewServer(t)
	dead := deadURL(t)
	c := srv.Client(t, allot.WithURLs(dead, srv.URL()), allot.WithRetry(4, 10*time.Millisecond), allot.WithLogger(discardLogger()))
	if _, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatalf("CreateLimit with a dead first URL: %v", err)
	}
	if got := c.URL(); got != srv.URL() {
		t.Errorf("URL after the dead one failed = %q, want %q", got, srv.URL())
	}
	lease, err := c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestClientGoesToTheLeader puts a "follower" in front of a real server:
// it forwards every request and names the server as the leader in
// Allot-Leader, as a replica does. A client given both URLs, the
// follower's first, sends its next requests to the leader directly.
func TestClientGoesToTheLeader(t *testing.T) {
	t.Parallel()
	srv := allottest.NewServer(t)
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	var forwarded atomic.Int32
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(&url.URL{Scheme: "http", Host: target.Host}) },
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set("Allot-Leader", target.Host)
			return nil
		},
	}
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(follower.Close)
	c := srv.Client(t, allot.WithURLs(follower.URL+"/api", srv.URL()), allot.WithLogger(discardLogger()))
	if _, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatal(err)
	}
	if got := forwarded.Load(); got != 1 {
		t.Fatalf("the follower forwarded %d requests, want the first", got)
	}
	for range 3 {
		if _, err := c.GetLimit(t.Context(), "db"); err != nil {
			t.Fatal(err)
		}
	}
	if got := forwarded.Load(); got != 1 {
		t.Errorf("the follower forwarded %d requests, want only the first: the others go to the leader it named", got)
	}
	if got := c.URL(); got != srv.URL() {
		t.Errorf("URL = %q, want the leader's %q", got, srv.URL())
	}
}

// TestClientPassesDeadURLsAtOnce gives the client two URLs where nothing
// listens before a real server's, and no retries: a refused connection
// never carried the request, so the next URL gets it in the same attempt.
func TestClientPassesDeadURLsAtOnce(t *testing.T) {
	t.Parallel()
	srv := allottest.NewServer(t)
	c := srv.Client(t, allot.WithURLs(deadURL(t), deadURL(t), srv.URL()), allot.WithRetry(0, 0), allot.WithLogger(discardLogger()))
	if _, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatalf("CreateLimit without retries, two dead URLs first: %v", err)
	}
}
