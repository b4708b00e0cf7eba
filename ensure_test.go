package allot_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
)

// proxy is a reverse proxy in front of a real server that records the
// requests it passes ("METHOD /path") and, if put is set, answers the
// ensure route (PUT of a limit) itself, as a server without it does.
type proxy struct {
	mu       sync.Mutex
	requests []string
}

func (p *proxy) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.requests
	p.requests = nil
	return r
}

// newProxy starts a proxy in front of b's server and returns a client of
// it.
func newProxy(t *testing.T, b *testBundle, put http.HandlerFunc) (*allot.Client, *proxy) {
	t.Helper()
	target, err := url.Parse(b.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0) // a request the client gave up
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.requests = append(p.requests, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		if put != nil && r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/api/v2/concurrency_limits/") {
			put(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ps.Close)
	return b.srv.Client(t, allot.WithURL(ps.URL+target.Path)), p
}

// TestEnsureLimitIsOneRequest: EnsureLimit creates, resizes and leaves a
// limit as it is with one request each, the server's ensure.
func TestEnsureLimitIsOneRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, p := newProxy(t, b, nil)
	put := []string{"PUT /api/v2/concurrency_limits/one"}
	var id string
	for _, n := range []int{3, 5, 5} {
		l, err := c.EnsureLimit(t.Context(), "one", n)
		if err != nil {
			t.Fatalf("EnsureLimit(one, %d): %v", n, err)
		}
		if id == "" {
			id = l.ID
		}
		if l.Name != "one" || l.Limit != n || l.ID != id {
			t.Errorf("EnsureLimit(one, %d) = %q %q limit %d, want %q one limit %d", n, l.ID, l.Name, l.Limit, id, n)
		}
		if diff := cmp.Diff(put, p.take()); diff != "" {
			t.Errorf("EnsureLimit(one, %d) requests (-want +got):\n%s", n, diff)
		}
	}
}

// TestEnsureLimitWithoutTheRoute: against a server without the ensure
// route (Prefect's 404, a 405), EnsureLimit falls back to create, read and
// update, and concurrent callers still converge on one limit.
func TestEnsureLimitWithoutTheRoute(t *testing.T) {
	t.Parallel()
	for name, put := range map[string]http.HandlerFunc{
		"Prefect's 404": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
		},
		"405": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", "GET, HEAD, PATCH, DELETE")
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			c, p := newProxy(t, b, put)
			const callers = 8
			ids := make([]string, callers)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					l, err := c.EnsureLimit(t.Context(), "shared", 3)
					if err != nil {
						t.Errorf("caller %d: %v", i, err)
						return
					}
					if l.Limit != 3 {
						t.Errorf("caller %d: limit %d, want 3", i, l.Limit)
					}
					ids[i] = l.ID
				})
			}
			wg.Wait()
			for i, id := range ids {
				if id != ids[0] {
					t.Errorf("caller %d got limit %q, caller 0 %q: want one limit", i, id, ids[0])
				}
			}
			l, err := c.EnsureLimit(t.Context(), "shared", 5)
			if err != nil {
				t.Fatal(err)
			}
			if l.Limit != 5 || l.ID != ids[0] {
				t.Errorf("EnsureLimit to 5 = %q limit %d, want %q limit 5", l.ID, l.Limit, ids[0])
			}
			if got := p.take(); !slices.Contains(got, "PATCH /api/v2/concurrency_limits/shared") {
				t.Errorf("requests %q: want the fallback's PATCH", got)
			}
		})
	}
}
