package allot_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-dev/allot"
)

// within is the generous bound on "at once": a watch answers in
// milliseconds, a renewal of these 60 s leases would take 20 s.
const within = 3 * time.Second

// revoke revokes a lease through the API.
func (b *testBundle) revoke(t *testing.T, id, reason string) {
	t.Helper()
	b.api(t, http.MethodPost, "/v2/concurrency_limits/leases/"+id+"/revoke", map[string]any{"reason": reason}, nil)
}

// wantEnded checks that err is a lost lease that the watch reported in state.
func wantEnded(t *testing.T, err error, state, reason string) {
	t.Helper()
	var ended *allot.LeaseEndedError
	if !errors.Is(err, allot.ErrLeaseLost) || !errors.As(err, &ended) || ended.State != state || ended.Reason != reason {
		t.Errorf("error = %v, want ErrLeaseLost with a LeaseEndedError %s (%s)", err, state, reason)
	}
}

func TestLeaseDoneClosesAtOnceWhenRevoked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	l, err := b.c.Acquire(deadline(t), []string{"db"}, allot.LeaseDuration(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	start := time.Now()
	b.revoke(t, l.ID(), "maintenance")
	select {
	case <-l.Done():
	case <-time.After(within):
		t.Fatalf("Done still open %v after the revoke of a 60 s lease", within)
	}
	t.Logf("Done closed %v after the revoke", time.Since(start))
	wantEnded(t, l.Err(), "revoked", "maintenance")
}

func TestConcurrencyContextCancelledWhenRevoked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	var cause error
	err := b.c.Concurrency(deadline(t), []string{"db"}, func(ctx context.Context) error {
		b.revoke(t, allot.LeaseFrom(ctx).ID(), "")
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
		case <-time.After(within):
			t.Errorf("fn's context still live %v after the revoke of a 60 s lease", within)
		}
		return ctx.Err()
	}, allot.LeaseDuration(time.Minute))
	wantEnded(t, cause, "revoked", "revoked by an operator")
	if !errors.Is(err, allot.ErrLeaseLost) {
		t.Errorf("Concurrency = %v, want ErrLeaseLost", err)
	}
}

func TestRunTaskContextCancelledAtOnceByAReset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 1)
	var cause error
	err := b.c.RunTask(allot.WithTags(deadline(t), "database"), "reset", func(ctx context.Context) error {
		b.api(t, http.MethodPost, "/concurrency_limits/tag/database/reset", map[string]any{}, nil)
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
		case <-time.After(within):
			t.Errorf("fn's context still live %v after a reset of a run with a 60 s lease", within)
		}
		return ctx.Err()
	}, allot.RunLeaseDuration(time.Minute))
	wantEnded(t, cause, "revoked", "slot revoked by reset")
	if !errors.Is(err, allot.ErrLeaseLost) {
		t.Errorf("RunTask = %v, want ErrLeaseLost", err)
	}
	if strings.Contains(b.logs.String(), "could not end the run") {
		t.Errorf("logs = %q, want no failed attempt to end the run", b.logs.String())
	}
}

// watchProxy sits in front of a real server and answers the lease watch
// with fail, counting watches and renewals.
type watchProxy struct {
	next             http.Handler
	fail             func(w http.ResponseWriter)
	watches, renewed atomic.Int32
}

func (p *watchProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/watch"):
		p.watches.Add(1)
		p.fail(w)
		return
	case strings.HasSuffix(r.URL.Path, "/renew"):
		p.renewed.Add(1)
	}
	p.next.ServeHTTP(w, r)
}

// proxied is a client of b's server through p.
func (b *testBundle) proxied(t *testing.T, p *watchProxy) *allot.Client {
	u, err := url.Parse(b.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	p.next = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	c, err := allot.NewClient(allot.WithURL(srv.URL+"/api"), allot.WithRetry(1, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestLeaseHeldAgainstAServerWithoutAWatch shows that a Prefect server (404
// {"detail": "Not Found"} on the watch route) is watched once and then left
// to the renewals, and that a watch whose connection fails is tried again
// without the lease being declared lost.
func TestLeaseHeldAgainstAServerWithoutAWatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		fail        func(w http.ResponseWriter)
		wantWatches func(n int32) bool
	}{
		{"prefect 404", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
		}, func(n int32) bool { return n == 1 }},
		{"connection cut", func(w http.ResponseWriter) {
			panic(http.ErrAbortHandler)
		}, func(n int32) bool { return n >= 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
			p := &watchProxy{fail: tc.fail}
			c := b.proxied(t, p)
			l, err := c.Acquire(deadline(t), []string{"db"}, allot.LeaseDuration(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			// Renewals every third of a second carry the lease well past
			// its 1 s duration.
			eventually(t, "five renewals and the watches", func() bool {
				return p.renewed.Load() >= 5 && tc.wantWatches(p.watches.Load())
			})
			if err := l.Err(); err != nil {
				t.Errorf("lease Err = %v, want held", err)
			}
			if err := l.Release(t.Context()); err != nil {
				t.Errorf("release: %v", err)
			}
			if n := p.watches.Load(); !tc.wantWatches(n) {
				t.Errorf("%d watches", n)
			}
		})
	}
}
