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
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
)

const (
	testLeaseID = "0197a000-0000-7000-8000-000000000001"
	renewPath   = "/v2/concurrency_limits/leases/" + testLeaseID + "/renew"
	releasePath = "/v2/concurrency_limits/decrement-with-lease"
	acquirePath = "/v2/concurrency_limits/increment-with-lease"
)

// leaseFake is a fake that grants testLeaseID and answers renewals with
// renew(n) for the n-th renewal (from 1); 410 answers as the server does.
func leaseFake(t *testing.T, renew func(n int) int) *fakeServer {
	f := newFake(t)
	f.handle("POST "+acquirePath, grantLease(testLeaseID))
	var n atomic.Int32
	f.handle("POST /v2/concurrency_limits/leases/{id}/renew", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		switch status := renew(int(n.Add(1))); status {
		case http.StatusGone:
			writeProblem(w, status, "lease_not_found", "Lease not found - it may have expired or been revoked")
		case http.StatusNoContent:
			w.WriteHeader(status)
		default:
			writeProblem(w, status, "unavailable", "Service Unavailable")
		}
	})
	f.handle("POST "+releasePath, noContent)
	return f
}

func always(status int) func(int) int { return func(int) int { return status } }

// offsets returns when each call happened, from start.
func offsets(calls []fakeCall, start time.Time) []time.Duration {
	var out []time.Duration
	for _, c := range calls {
		out = append(out, c.at.Sub(start))
	}
	return out
}

func TestLeaseRenewsAtAThirdOfItsDuration(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := leaseFake(t, always(http.StatusNoContent))
		c := f.client()
		start := time.Now()
		l, err := c.Acquire(t.Context(), []string{"db"}, allot.LeaseDuration(30*time.Second))
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		if got, want := l.ExpiresAt(), start.Add(30*time.Second); !got.Equal(want) {
			t.Errorf("ExpiresAt after acquire = %v, want %v", got, want)
		}
		time.Sleep(65 * time.Second)
		if got, want := l.ExpiresAt(), start.Add(90*time.Second); !got.Equal(want) {
			t.Errorf("ExpiresAt after renewals = %v, want %v", got, want)
		}
		if err := l.Release(t.Context()); err != nil {
			t.Fatalf("release: %v", err)
		}
		time.Sleep(time.Minute) // no renewal after Release

		want := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second, 50 * time.Second, 60 * time.Second}
		renewals := f.callsTo(renewPath)
		if diff := cmp.Diff(want, offsets(renewals, start)); diff != "" {
			t.Errorf("renewal times (-want +got):\n%s", diff)
		}
		for _, r := range renewals {
			if got := r.body["lease_duration"]; got != 30.0 {
				t.Errorf("renewal lease_duration = %v, want 30", got)
			}
		}
		releases := f.callsTo(releasePath)
		if len(releases) != 1 || releases[0].body["lease_id"] != testLeaseID {
			t.Errorf("releases = %v, want one of lease %s", releases, testLeaseID)
		}
		select {
		case <-l.Done():
		default:
			t.Error("Done is open after Release")
		}
		if !errors.Is(l.Err(), allot.ErrReleased) {
			t.Errorf("Err after Release = %v, want ErrReleased", l.Err())
		}
	})
}

func TestAcquireSendsTheRequest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := leaseFake(t, always(http.StatusNoContent))
		c := f.client()
		l, err := c.Acquire(t.Context(), []string{"db", "api"}, allot.Occupy(2), allot.LeaseDuration(time.Minute),
			allot.Holder("task_run", "run-1", map[string]string{"team": "data"}))
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		defer l.Release(context.Background())
		calls := f.callsTo(acquirePath)
		if len(calls) != 1 {
			t.Fatalf("acquire requests = %d, want 1", len(calls))
		}
		want := map[string]any{"names": []any{"db", "api"}, "slots": 2.0, "lease_duration": 60.0, "timeout_seconds": 3600.0,
			"holder": map[string]any{"type": "task_run", "id": "run-1", "metadata": map[string]any{"team": "data"}}}
		ticket, _ := calls[0].body["ticket"].(string)
		if len(ticket) < 16 {
			t.Errorf("ticket = %q, want a random one", ticket)
		}
		delete(calls[0].body, "ticket")
		if diff := cmp.Diff(want, calls[0].body); diff != "" {
			t.Errorf("acquire body (-want +got):\n%s", diff)
		}
		h := calls[0].header
		if got := h.Get("Authorization"); got != "Bearer k3y" {
			t.Errorf("Authorization = %q, want %q", got, "Bearer k3y")
		}
		if h.Get("X-Request-Id") == "" {
			t.Error("no X-Request-Id")
		}
		if got := h.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		if got, want := l.FencingToken(), uint64(7); got != want {
			t.Errorf("FencingToken = %d, want %d", got, want)
		}
		if got, want := l.ID(), testLeaseID; got != want {
			t.Errorf("ID = %q, want %q", got, want)
		}
		if got := len(l.Limits()); got != 2 {
			t.Errorf("Limits = %v, want 2", l.Limits())
		}
	})
}

func TestLeaseLostWhenRenewalIsRefused(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := leaseFake(t, always(http.StatusGone))
		c := f.client()
		start := time.Now()
		var cancelledAt time.Time
		var cause error
		err := c.Concurrency(t.Context(), []string{"db"}, func(ctx context.Context) error {
			<-ctx.Done()
			cancelledAt, cause = time.Now(), context.Cause(ctx)
			return ctx.Err()
		}, allot.LeaseDuration(30*time.Second))

		if !errors.Is(err, allot.ErrLeaseLost) || !errors.Is(err, allot.ErrLeaseNotFound) {
			t.Errorf("Concurrency = %v, want ErrLeaseLost and ErrLeaseNotFound", err)
		}
		if !errors.Is(cause, allot.ErrLeaseLost) {
			t.Errorf("fn's context cause = %v, want ErrLeaseLost", cause)
		}
		if got, want := cancelledAt.Sub(start), 10*time.Second; got != want {
			t.Errorf("fn cancelled after %v, want %v", got, want)
		}
		if got := f.callsTo(releasePath); len(got) != 0 {
			t.Errorf("released a lease the server no longer has: %v", got)
		}
	})
}

func TestLeaseRenewalFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		renew    func(n int) int
		strict   bool
		lostAt   time.Duration // 0: not lost
		renewals []time.Duration
		why      string
	}{
		{
			name:     "lost at expiry after two failed renewals",
			renew:    always(http.StatusServiceUnavailable),
			lostAt:   30 * time.Second,
			renewals: []time.Duration{10 * time.Second, 20 * time.Second},
			why:      "not renewed before it expired",
		},
		{
			name:     "strict loses the lease at the first failed renewal",
			renew:    always(http.StatusServiceUnavailable),
			strict:   true,
			lostAt:   10 * time.Second,
			renewals: []time.Duration{10 * time.Second},
			why:      "503",
		},
		{
			name: "a failed renewal followed by a good one keeps the lease",
			renew: func(n int) int {
				if n == 1 {
					return http.StatusServiceUnavailable
				}
				return http.StatusNoContent
			},
			renewals: []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := leaseFake(t, tc.renew)
				c := f.client(allot.WithRetry(0, 0))
				opts := []allot.Option{allot.LeaseDuration(30 * time.Second)}
				if tc.strict {
					opts = append(opts, allot.Strict())
				}
				start := time.Now()
				l, err := c.Acquire(t.Context(), []string{"db"}, opts...)
				if err != nil {
					t.Fatalf("acquire: %v", err)
				}
				timer := time.NewTimer(45 * time.Second)
				var lostAt time.Duration
				select {
				case <-l.Done():
					lostAt = time.Since(start)
				case <-timer.C:
				}
				if lostAt != tc.lostAt {
					t.Errorf("lost after %v, want %v (0: not lost)", lostAt, tc.lostAt)
				}
				if tc.lostAt != 0 {
					err := l.Err()
					if !errors.Is(err, allot.ErrLeaseLost) || !strings.Contains(err.Error(), tc.why) {
						t.Errorf("Err = %v, want ErrLeaseLost saying %q", err, tc.why)
					}
				}
				if err := l.Release(t.Context()); err != nil {
					t.Errorf("release: %v", err)
				}
				if diff := cmp.Diff(tc.renewals, offsets(f.callsTo(renewPath), start)); diff != "" {
					t.Errorf("renewal times (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestConcurrencyReleasesOnPanic(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := leaseFake(t, always(http.StatusNoContent))
		c := f.client()
		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_ = c.Concurrency(t.Context(), []string{"db"}, func(ctx context.Context) error {
				panic("boom")
			})
		}()
		if recovered != "boom" {
			t.Errorf("recovered %v, want the panic to pass through", recovered)
		}
		if got := len(f.callsTo(releasePath)); got != 1 {
			t.Errorf("releases = %d, want 1", got)
		}
	})
}

func TestConcurrencyCancelledBeforeFnStillReleases(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := leaseFake(t, always(http.StatusNoContent))
		c := f.client()
		ctx, cancel := context.WithCancel(t.Context())
		err := c.Concurrency(ctx, []string{"db"}, func(ctx context.Context) error {
			if allot.LeaseFrom(ctx) == nil {
				t.Error("LeaseFrom(fn's ctx) = nil")
			}
			cancel()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Concurrency = %v, want fn's context.Canceled", err)
		}
		if errors.Is(err, allot.ErrLeaseLost) {
			t.Errorf("Concurrency = %v, want no ErrLeaseLost", err)
		}
		if got := len(f.callsTo(releasePath)); got != 1 {
			t.Errorf("releases = %d, want 1 despite the cancelled context", got)
		}
	})
}

func TestLeaseByID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.limit(t, allot.LimitSpec{Name: "by-id", Limit: 1})
	l, err := b.c.Acquire(ctx, []string{"by-id"}, allot.LeaseDuration(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	l.Detach()
	if err := l.Err(); err != nil {
		t.Fatalf("Err after Detach: got %v, want nil (still held)", err)
	}
	if err := b.c.RenewLease(ctx, l.ID(), 2*time.Minute); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	got, err := b.c.GetLimit(ctx, "by-id")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Holders) != 1 || got.Holders[0].LeaseID != l.ID() {
		t.Fatalf("holders after Detach and RenewLease: got %+v, want the lease %s", got.Holders, l.ID())
	}
	if left := time.Until(got.Holders[0].Expires); left < time.Minute+30*time.Second {
		t.Errorf("expiry after RenewLease(2m): got %s from now, want about 2m", left)
	}
	if err := b.c.ReleaseLease(ctx, l.ID()); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if got, err = b.c.GetLimit(ctx, "by-id"); err != nil || len(got.Holders) != 0 {
		t.Fatalf("holders after ReleaseLease: got %+v (%v), want none", got.Holders, err)
	}
	if err := b.c.RenewLease(ctx, l.ID(), 0); !errors.Is(err, allot.ErrLeaseNotFound) {
		t.Errorf("RenewLease of a released lease: got %v, want ErrLeaseNotFound", err)
	}
	if err := b.c.ReleaseLease(ctx, l.ID()); err != nil {
		t.Errorf("ReleaseLease twice: got %v, want nil", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release after ReleaseLease: got %v, want nil", err)
	}
}

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
