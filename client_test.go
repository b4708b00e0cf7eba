package allot_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
)

func TestNewClientReadsTheEnvironment(t *testing.T) {
	t.Setenv(allot.EnvURL, "https://allot.example.com/api/")
	t.Setenv(allot.EnvAPIKey, "from-env")
	for _, tc := range []struct {
		name string
		opts []allot.ClientOption
		want string
	}{
		{"environment", nil, "https://allot.example.com/api"},
		{"option wins", []allot.ClientOption{allot.WithURL("http://127.0.0.1:9/api")}, "http://127.0.0.1:9/api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := allot.NewClient(tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.URL(); got != tc.want {
				t.Errorf("URL = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewClientRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"127.0.0.1:4200/api", "ftp://host/api", "http:///api", "http://host/api?x=1", "://"} {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			if _, err := allot.NewClient(allot.WithURL(u)); !errors.Is(err, allot.ErrInvalid) {
				t.Errorf("NewClient(%q) = %v, want ErrInvalid", u, err)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	errConn := errors.New("connection reset by fake")
	for _, tc := range []struct {
		name    string
		answers []int // status per attempt; 0 is a connection error
		calls   int
		wantErr error // nil: success
	}{
		{"5xx then success", []int{503, 500, 201}, 3, nil},
		{"connection errors then success", []int{0, 0, 201}, 3, nil},
		{"4xx is not retried", []int{422, 201}, 1, allot.ErrInvalid},
		{"409 is not retried", []int{409, 201}, 1, allot.ErrConflict},
		{"gives up after the retries", []int{503, 503, 503, 503}, 3, allot.ErrUnavailable},
		{"gives up on connection errors", []int{0, 0, 0, 0}, 3, errConn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t)
				var n atomic.Int32
				f.err = func(*http.Request) error {
					if tc.answers[n.Load()] == 0 {
						n.Add(1)
						return errConn
					}
					return nil
				}
				f.handle("POST /v2/concurrency_limits/", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
					switch status := tc.answers[n.Add(1)-1]; status {
					case 201:
						writeJSON(w, status, map[string]any{"name": "db", "limit": 1})
					default:
						writeProblem(w, status, "x", "fake answer "+strconv.Itoa(status))
					}
				})
				c := f.client(allot.WithRetry(2, 100*time.Millisecond))
				start := time.Now()
				l, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1})
				switch {
				case tc.wantErr == nil && (err != nil || l.Name != "db"):
					t.Errorf("CreateLimit = %v, %v; want the limit", l, err)
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Errorf("CreateLimit error = %v, want %v", err, tc.wantErr)
				}
				calls := f.callsTo("/v2/concurrency_limits/")
				if len(calls) != tc.calls {
					t.Fatalf("attempts = %d, want %d", len(calls), tc.calls)
				}
				for i, c := range calls {
					if got, want := c.header.Get("X-Request-Id"), calls[0].header.Get("X-Request-Id"); got != want || got == "" {
						t.Errorf("attempt %d X-Request-Id = %q, want %q as the first", i, got, want)
					}
				}
				// Backoff: 50-100 ms before the second attempt, 100-200 ms before the third.
				at := offsets(calls, start)
				for i := 1; i < len(at); i++ {
					base := 100 * time.Millisecond << (i - 1)
					if gap := at[i] - at[i-1]; gap < base/2 || gap > base {
						t.Errorf("pause before attempt %d = %v, want %v to %v", i+1, gap, base/2, base)
					}
				}
			})
		})
	}
}

func TestErrorsMatchTheirSentinels(t *testing.T) {
	t.Parallel()
	all := []error{allot.ErrNotFound, allot.ErrLimitNotFound, allot.ErrLeaseNotFound, allot.ErrLocked,
		allot.ErrConflict, allot.ErrInvalid, allot.ErrUnavailable}
	for _, tc := range []struct {
		status int
		code   string
		want   []error
	}{
		{404, "limit_not_found", []error{allot.ErrNotFound, allot.ErrLimitNotFound}},
		{404, "not_found", []error{allot.ErrNotFound}},
		{410, "lease_not_found", []error{allot.ErrLeaseNotFound}},
		{423, "locked", []error{allot.ErrLocked}},
		{409, "name_taken", []error{allot.ErrConflict}},
		{422, "slots_exceed_limit", []error{allot.ErrInvalid}},
		{400, "invalid_json", []error{allot.ErrInvalid}},
		{503, "unavailable", []error{allot.ErrUnavailable}},
		{415, "unsupported_media_type", nil},
	} {
		t.Run(strconv.Itoa(tc.status)+" "+tc.code, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t)
				f.handle("GET /v2/concurrency_limits/{name}", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
					if tc.status == 423 {
						w.Header().Set("Retry-After", "2.5")
					}
					w.Header().Set("Content-Type", "application/problem+json")
					w.WriteHeader(tc.status)
					_, _ = w.Write([]byte(`{"status":` + strconv.Itoa(tc.status) + `,"code":"` + tc.code + `","detail":"d","field":"f"}`))
				})
				c := f.client(allot.WithRetry(0, 0))
				_, err := c.GetLimit(t.Context(), "db")
				for _, s := range all {
					want := false
					for _, w := range tc.want {
						want = want || w == s
					}
					if got := errors.Is(err, s); got != want {
						t.Errorf("errors.Is(%v, %q) = %v, want %v", err, s, got, want)
					}
				}
				var ae *allot.APIError
				if !errors.As(err, &ae) {
					t.Fatalf("errors.As(%v, *APIError) = false", err)
				}
				wantAE := allot.APIError{Status: tc.status, Code: tc.code, Detail: "d", Field: "f",
					RequestID: f.callsTo("/v2/concurrency_limits/db")[0].header.Get("X-Request-Id")}
				if diff := cmp.Diff(wantAE, *ae); diff != "" {
					t.Errorf("APIError (-want +got):\n%s", diff)
				}
				var le *allot.LockedError
				if got := errors.As(err, &le); got != (tc.status == 423) {
					t.Errorf("errors.As(*LockedError) = %v, want %v", got, tc.status == 423)
				}
				if le != nil && le.RetryAfter != 2500*time.Millisecond {
					t.Errorf("RetryAfter = %v, want 2.5s", le.RetryAfter)
				}
			})
		})
	}
}

func TestPathsAreEscaped(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		var got string
		f.handle("GET /v2/concurrency_limits/{name}", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			got = r.PathValue("name")
			writeJSON(w, http.StatusOK, map[string]any{"name": got})
		})
		c := f.client()
		const name = "resource:a b?c#d*"
		if _, err := c.GetLimit(t.Context(), name); err != nil {
			t.Fatal(err)
		}
		if got != name {
			t.Errorf("server saw name %q, want %q", got, name)
		}
	})
}

// lockedFake answers increment-with-lease as answer says: a status and, for
// a request with timeout_seconds, whether to keep it that long first.
func lockedFake(t *testing.T, answer func(n int) (status int, wait bool)) *fakeServer {
	f := newFake(t)
	var n atomic.Int32
	grant := grantLease(testLeaseID)
	f.handle("POST "+acquirePath, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		status, wait := answer(int(n.Add(1)))
		if secs, ok := body["timeout_seconds"].(float64); ok && wait {
			time.Sleep(time.Duration(secs * float64(time.Second)))
		}
		if status == http.StatusOK {
			grant(w, r, body)
			return
		}
		w.Header().Set("Retry-After", "2.5000")
		writeProblem(w, status, "locked", "Locked")
	})
	f.handle("POST /v2/concurrency_limits/leases/{id}/renew", noContent)
	f.handle("POST "+releasePath, noContent)
	return f
}

// asked returns the timeout_seconds of each acquire request (-1: none).
func asked(f *fakeServer) []float64 {
	var out []float64
	for _, c := range f.callsTo(acquirePath) {
		s, ok := c.body["timeout_seconds"].(float64)
		if !ok {
			s = -1
		}
		out = append(out, s)
	}
	return out
}

func TestWaitingInLine(t *testing.T) {
	t.Parallel()
	lockedThenOK := func(k int) func(int) (int, bool) {
		return func(n int) (int, bool) {
			if n <= k {
				return http.StatusLocked, false
			}
			return http.StatusOK, false
		}
	}
	for _, tc := range []struct {
		name      string
		answer    func(n int) (int, bool)
		try       bool
		opts      []allot.Option
		ctxLimit  time.Duration
		client    []allot.ClientOption
		wantErr   []error
		wantIn    string
		wantAsked []float64
		wantTime  time.Duration
	}{
		{
			name:      "long polls until the timeout",
			answer:    func(int) (int, bool) { return http.StatusLocked, true },
			client:    []allot.ClientOption{allot.WithLongPoll(10 * time.Second)},
			opts:      []allot.Option{allot.Timeout(25 * time.Second)},
			wantErr:   []error{allot.ErrTimeout, allot.ErrLocked},
			wantIn:    "timed out waiting for slots after 25s",
			wantAsked: []float64{10, 10, 5},
			wantTime:  25 * time.Second,
		},
		{
			name:      "the context's deadline bounds the wait",
			answer:    func(int) (int, bool) { return http.StatusLocked, true },
			ctxLimit:  30 * time.Second,
			wantErr:   []error{context.DeadlineExceeded},
			wantAsked: []float64{30},
			wantTime:  30 * time.Second,
		},
		{
			name:      "a server that does not keep requests is asked again after Retry-After",
			answer:    lockedThenOK(2),
			wantAsked: []float64{3600, 3600, 3600},
			wantTime:  5 * time.Second,
		},
		{
			name:      "MaxRetries bounds the tries",
			answer:    lockedThenOK(10),
			opts:      []allot.Option{allot.MaxRetries(2)},
			wantErr:   []error{allot.ErrLocked},
			wantIn:    "gave up after 2 retries",
			wantAsked: []float64{3600, 3600, 3600},
			wantTime:  5 * time.Second,
		},
		{
			name:      "TryAcquire does not wait",
			answer:    lockedThenOK(10),
			try:       true,
			wantErr:   []error{allot.ErrLocked},
			wantAsked: []float64{-1},
		},
		{
			name:      "Timeout zero does not wait",
			answer:    lockedThenOK(10),
			opts:      []allot.Option{allot.Timeout(0)},
			wantErr:   []error{allot.ErrTimeout, allot.ErrLocked},
			wantAsked: []float64{-1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := lockedFake(t, tc.answer)
				c := f.client(tc.client...)
				ctx := t.Context()
				if tc.ctxLimit > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.ctxLimit)
					defer cancel()
				}
				start := time.Now()
				var (
					l   *allot.Lease
					err error
				)
				if tc.try {
					l, err = c.TryAcquire(ctx, []string{"db"}, tc.opts...)
				} else {
					l, err = c.Acquire(ctx, []string{"db"}, tc.opts...)
				}
				if l != nil {
					defer l.Release(context.Background())
				}
				if tc.wantErr == nil && err != nil {
					t.Errorf("acquire: %v", err)
				}
				for _, want := range tc.wantErr {
					if !errors.Is(err, want) {
						t.Errorf("acquire = %v, want %v", err, want)
					}
				}
				if tc.wantIn != "" && (err == nil || !strings.Contains(err.Error(), tc.wantIn)) {
					t.Errorf("acquire = %v, want it to say %q", err, tc.wantIn)
				}
				var le *allot.LockedError
				if errors.As(err, &le) && le.RetryAfter != 2500*time.Millisecond {
					t.Errorf("RetryAfter = %v, want 2.5s", le.RetryAfter)
				}
				if diff := cmp.Diff(tc.wantAsked, asked(f)); diff != "" {
					t.Errorf("timeout_seconds asked (-want +got):\n%s", diff)
				}
				if got := time.Since(start); got != tc.wantTime {
					t.Errorf("took %v, want %v", got, tc.wantTime)
				}
			})
		})
	}
}
