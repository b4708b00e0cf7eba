package allot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/allottest"
)

// testBundle is a real server and a client of it whose logs the test can
// read.
type testBundle struct {
	srv  *allottest.Server
	c    *allot.Client
	logs *syncBuffer
}

func setup(t *testing.T, opts ...allot.ClientOption) *testBundle {
	t.Helper()
	srv := allottest.NewServer(t)
	logs := &syncBuffer{}
	opts = append([]allot.ClientOption{allot.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)
	return &testBundle{srv: srv, c: srv.Client(t, opts...), logs: logs}
}

func (b *testBundle) limit(t *testing.T, spec allot.LimitSpec) *allot.Limit {
	t.Helper()
	l, err := b.c.CreateLimit(t.Context(), spec)
	if err != nil {
		t.Fatalf("create limit %q: %v", spec.Name, err)
	}
	return l
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConcurrencyNeverOverlaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	const workers = 5
	var (
		inside, most, ran atomic.Int32
		wg                sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			err := b.c.Concurrency(t.Context(), []string{"db"}, func(ctx context.Context) error {
				n := inside.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(20 * time.Millisecond) // hold the slot a while
				inside.Add(-1)
				ran.Add(1)
				return nil
			})
			if err != nil {
				t.Errorf("Concurrency: %v", err)
			}
		})
	}
	wg.Wait()
	if got := ran.Load(); got != workers {
		t.Errorf("ran %d functions, want %d", got, workers)
	}
	if got := most.Load(); got != 1 {
		t.Errorf("at most %d functions ran at once, want 1", got)
	}
	l, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if l.ActiveSlots != 0 || len(l.Holders) != 0 {
		t.Errorf("after all returned: active_slots %d, holders %v; want none", l.ActiveSlots, l.Holders)
	}
}

func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	first, err := b.c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	order := make(chan int, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			err := b.c.Concurrency(t.Context(), []string{"db"}, func(context.Context) error {
				order <- i
				return nil
			})
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
			}
		})
		eventually(t, fmt.Sprintf("waiter %d is in line", i), func() bool {
			l, err := b.c.GetLimit(t.Context(), "db")
			return err == nil && l.Waiting == i+1
		})
	}
	if err := first.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if diff := cmp.Diff([]int{0, 1, 2, 3}, got); diff != "" {
		t.Errorf("order of grants (-want +got):\n%s", diff)
	}
}

func TestTryAcquireWhenFull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 2})
	held, err := b.c.TryAcquire(t.Context(), []string{"db"}, allot.Occupy(2))
	if err != nil {
		t.Fatalf("TryAcquire on a free limit: %v", err)
	}
	start := time.Now()
	_, err = b.c.TryAcquire(t.Context(), []string{"db"})
	var le *allot.LockedError
	if !errors.Is(err, allot.ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("TryAcquire on a full limit = %v, want a *LockedError", err)
	}
	if le.RetryAfter <= 0 {
		t.Errorf("RetryAfter = %v, want > 0", le.RetryAfter)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("TryAcquire took %v; it should not wait", took)
	}
	if err := held.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	again, err := b.c.TryAcquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatalf("TryAcquire after release: %v", err)
	}
	_ = again.Release(t.Context())
}

func TestAcquireTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	held, err := b.c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())
	start := time.Now()
	_, err = b.c.Acquire(t.Context(), []string{"db"}, allot.Timeout(200*time.Millisecond))
	if !errors.Is(err, allot.ErrTimeout) || !errors.Is(err, allot.ErrLocked) {
		t.Fatalf("Acquire = %v, want ErrTimeout and ErrLocked", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("gave up after %v, want at least the 200ms timeout", took)
	}
	l, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if l.Waiting != 0 {
		t.Errorf("waiting = %d after the timeout, want 0", l.Waiting)
	}
}

func TestCancelledWaiterLeavesTheLine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	held, err := b.c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- b.c.Concurrency(ctx, []string{"db"}, func(context.Context) error {
			return errors.New("must not run")
		})
	}()
	eventually(t, "the waiter is in line", func() bool {
		l, err := b.c.GetLimit(t.Context(), "db")
		return err == nil && l.Waiting == 1
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Concurrency = %v, want context.Canceled", err)
	}
	eventually(t, "the waiter left the line", func() bool {
		l, err := b.c.GetLimit(t.Context(), "db")
		return err == nil && l.Waiting == 0
	})
	if err := held.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	l, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if l.ActiveSlots != 0 {
		t.Errorf("active_slots = %d, want 0: the cancelled waiter got nothing", l.ActiveSlots)
	}
}

func TestRateLimitAdmitsAtTheDecayRate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "api", Limit: 1, SlotDecayPerSecond: 20})
	const calls = 10
	start := time.Now()
	for i := range calls {
		if err := b.c.RateLimit(t.Context(), []string{"api"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// The first is admitted at once, each other after 1/20 s.
	if took, least := time.Since(start), 450*time.Millisecond; took < least {
		t.Errorf("%d calls took %v, want at least %v", calls, took, least)
	}
}

func TestRateLimitNeedsDecay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	err := b.c.RateLimit(t.Context(), []string{"db"})
	var ae *allot.APIError
	if !errors.Is(err, allot.ErrInvalid) || !errors.As(err, &ae) || ae.Code != allot.CodeNoDecay {
		t.Errorf("RateLimit on a limit without decay = %v, want ErrInvalid with code %s", err, allot.CodeNoDecay)
	}
}

func TestSlotsExceedingTheLimitFailAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	_, err := b.c.Acquire(t.Context(), []string{"db"}, allot.Occupy(2))
	var ae *allot.APIError
	if !errors.Is(err, allot.ErrInvalid) || !errors.As(err, &ae) || ae.Code != allot.CodeSlotsExceedLimit {
		t.Errorf("Acquire = %v, want ErrInvalid with code %s", err, allot.CodeSlotsExceedLimit)
	}
}

func TestEnsureLimitConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const callers = 8
	ids := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			l, err := b.c.EnsureLimit(t.Context(), "shared", 3)
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
	l, err := b.c.EnsureLimit(t.Context(), "shared", 5)
	if err != nil {
		t.Fatal(err)
	}
	if l.Limit != 5 || l.ID != ids[0] {
		t.Errorf("EnsureLimit to 5 = %q limit %d, want %q limit 5", l.ID, l.Limit, ids[0])
	}
	all, err := b.c.ListLimits(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Errorf("limits = %d, want 1", len(all))
	}
}

func TestMissingLimits(t *testing.T) {
	t.Parallel()
	type call func(c *allot.Client, ctx context.Context, opts ...allot.Option) (ran bool, err error)
	calls := map[string]call{
		"Acquire": func(c *allot.Client, ctx context.Context, opts ...allot.Option) (bool, error) {
			l, err := c.Acquire(ctx, []string{"nope"}, opts...)
			if err != nil {
				return false, err
			}
			if l.ID() != "" || len(l.Limits()) != 0 || l.FencingToken() != 0 {
				return true, fmt.Errorf("lease %q holds %v, want nothing", l.ID(), l.Limits())
			}
			return true, l.Release(ctx)
		},
		"Concurrency": func(c *allot.Client, ctx context.Context, opts ...allot.Option) (bool, error) {
			ran := false
			err := c.Concurrency(ctx, []string{"nope"}, func(context.Context) error { ran = true; return nil }, opts...)
			return ran, err
		},
		"RateLimit": func(c *allot.Client, ctx context.Context, opts ...allot.Option) (bool, error) {
			err := c.RateLimit(ctx, []string{"nope"}, opts...)
			return err == nil, err
		},
	}
	for name, call := range calls {
		for _, strict := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s strict=%v", name, strict), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				var opts []allot.Option
				if strict {
					opts = append(opts, allot.Strict())
				}
				ran, err := call(b.c, t.Context(), opts...)
				if strict {
					if !errors.Is(err, allot.ErrLimitNotFound) || !strings.Contains(err.Error(), "must be created before acquiring slots") {
						t.Errorf("error = %v, want ErrLimitNotFound saying the limits must be created", err)
					}
					if ran {
						t.Error("the work ran without its limits")
					}
					return
				}
				if err != nil || !ran {
					t.Errorf("ran %v, error %v; want the work to run without slots", ran, err)
				}
				if logs := b.logs.String(); !strings.Contains(logs, "do not exist - skipping acquisition") {
					t.Errorf("logs = %q, want a warning", logs)
				}
			})
		}
	}
}

func TestConcurrencyPanicReleasesTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		_ = b.c.Concurrency(t.Context(), []string{"db"}, func(context.Context) error { panic("boom") })
	}()
	l, err := b.c.TryAcquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatalf("TryAcquire after the panic: %v; want the slot free", err)
	}
	_ = l.Release(t.Context())
}

func TestLeaseShowsItsHolder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 3})
	before := time.Now()
	l, err := b.c.Acquire(t.Context(), []string{"db"}, allot.Occupy(2), allot.LeaseDuration(time.Minute),
		allot.Holder("task_run", "run-7", map[string]string{"team": "data"}))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	got, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Holders) != 1 {
		t.Fatalf("holders = %v, want 1", got.Holders)
	}
	h := got.Holders[0]
	want := allot.Holding{LeaseID: l.ID(), Holder: &allot.Identity{Kind: "task_run", ID: "run-7", Metadata: map[string]string{"team": "data"}},
		Slots: 2, FencingToken: l.FencingToken(), Since: h.Since, Expires: h.Expires}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("holder (-want +got):\n%s", diff)
	}
	if exp := l.ExpiresAt(); exp.After(h.Expires) || exp.Before(before.Add(time.Minute)) {
		t.Errorf("ExpiresAt = %v, want between %v and the server's %v", exp, before.Add(time.Minute), h.Expires)
	}
	if got.ActiveSlots != 2 {
		t.Errorf("active_slots = %d, want 2", got.ActiveSlots)
	}
}

func TestDefaultHolderIsTheProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	l, err := b.c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	got, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Holders) != 1 || got.Holders[0].Holder == nil || got.Holders[0].Holder.Kind != "process" ||
		!strings.Contains(got.Holders[0].Holder.ID, ":") {
		t.Errorf("holders = %+v, want one of kind process with id host:pid", got.Holders)
	}
}

// blockRenewals is a transport that fails every renewal while blocked.
type blockRenewals struct {
	blocked atomic.Bool
	next    http.RoundTripper
}

func (b *blockRenewals) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.blocked.Load() && strings.HasSuffix(r.URL.Path, "/renew") {
		return nil, errors.New("renewal blocked by the test")
	}
	return b.next.RoundTrip(r)
}

func TestLeaseLostWhenRenewalsFail(t *testing.T) {
	t.Parallel()
	tr := &blockRenewals{next: http.DefaultTransport.(*http.Transport).Clone()}
	b := setup(t, allot.WithHTTPClient(&http.Client{Transport: tr}), allot.WithRetry(0, 0))
	t.Cleanup(tr.next.(*http.Transport).CloseIdleConnections)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	tr.blocked.Store(true)
	next := make(chan *allot.Lease, 1)
	start := time.Now()
	err := b.c.Concurrency(t.Context(), []string{"db"}, func(ctx context.Context) error {
		go func() {
			l, err := b.c.Acquire(t.Context(), []string{"db"}, allot.Timeout(10*time.Second))
			if err != nil {
				t.Errorf("the next in line: %v", err)
			}
			next <- l
		}()
		<-ctx.Done()
		return ctx.Err()
	}, allot.LeaseDuration(time.Second))
	if !errors.Is(err, allot.ErrLeaseLost) {
		t.Errorf("Concurrency = %v, want ErrLeaseLost", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("lost after %v, before the lease's 1s", took)
	}
	tr.blocked.Store(false)
	if l := <-next; l != nil {
		_ = l.Release(t.Context())
	}
	if logs := b.logs.String(); !strings.Contains(logs, "lease lost") {
		t.Errorf("logs = %q, want the loss logged", logs)
	}
}

func TestLimitLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	created := b.limit(t, allot.LimitSpec{Name: "db", Limit: 2, Disabled: true})
	if created.Name != "db" || created.Limit != 2 || created.Active || created.ID == "" {
		t.Errorf("created %+v, want db, limit 2, inactive", created)
	}
	if _, err := b.c.CreateLimit(ctx, allot.LimitSpec{Name: "db", Limit: 1}); !errors.Is(err, allot.ErrConflict) {
		t.Errorf("create a taken name = %v, want ErrConflict", err)
	}
	if _, err := b.c.CreateLimit(ctx, allot.LimitSpec{Name: "bad/name", Limit: 1}); !errors.Is(err, allot.ErrInvalid) {
		t.Errorf("create a bad name = %v, want ErrInvalid", err)
	}
	if err := b.c.UpdateLimit(ctx, "db", allot.LimitUpdate{Limit: new(4), Active: new(true)}); err != nil {
		t.Fatalf("update: %v", err)
	}
	byID, err := b.c.GetLimit(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if byID.Limit != 4 || !byID.Active {
		t.Errorf("after update: limit %d active %v, want 4 true", byID.Limit, byID.Active)
	}
	b.limit(t, allot.LimitSpec{Name: "api", Limit: 1, SlotDecayPerSecond: 0.5})
	list, err := b.c.ListLimits(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range list {
		names = append(names, l.Name)
	}
	if diff := cmp.Diff([]string{"api", "db"}, names); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	if err := b.c.DeleteLimit(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.GetLimit(ctx, "db"); !errors.Is(err, allot.ErrLimitNotFound) || !errors.Is(err, allot.ErrNotFound) {
		t.Errorf("get a deleted limit = %v, want ErrLimitNotFound", err)
	}
	if err := b.c.DeleteLimit(ctx, "db"); !errors.Is(err, allot.ErrNotFound) {
		t.Errorf("delete a deleted limit = %v, want ErrNotFound", err)
	}
	if err := b.c.UpdateLimit(ctx, "db", allot.LimitUpdate{Limit: new(1)}); !errors.Is(err, allot.ErrNotFound) {
		t.Errorf("update a deleted limit = %v, want ErrNotFound", err)
	}
}

func TestAllLimitsReadsEveryPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 205
	for i := range n {
		b.limit(t, allot.LimitSpec{Name: fmt.Sprintf("l%03d", i), Limit: 1})
	}
	var got []string
	for l, err := range b.c.AllLimits(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l.Name)
	}
	if len(got) != n || got[0] != "l000" || got[n-1] != fmt.Sprintf("l%03d", n-1) {
		t.Errorf("AllLimits gave %d limits (%v … %v), want %d in order", len(got), got[:1], got[len(got)-1:], n)
	}
}

func TestTemplateCreatesLimitsOnFirstUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "resource:*", Limit: 1})
	l, err := b.c.Acquire(t.Context(), []string{"resource:42"}, allot.Strict())
	if err != nil {
		t.Fatalf("acquire a name a template matches: %v", err)
	}
	defer l.Release(context.Background())
	if _, err := b.c.TryAcquire(t.Context(), []string{"resource:42"}); !errors.Is(err, allot.ErrLocked) {
		t.Errorf("second acquire = %v, want ErrLocked: the created limit has the template's 1 slot", err)
	}
}

// TestTemplateIdleSeconds: a template's idle time is set on create and
// update through LimitSpec and LimitUpdate, read back on the template and
// on the limits it creates (FromTemplate), and refused on a plain limit.
func TestTemplateIdleSeconds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	idle := func(name string) (*float64, bool) {
		t.Helper()
		l, err := b.c.GetLimit(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return l.IdleSeconds, l.FromTemplate
	}
	created := b.limit(t, allot.LimitSpec{Name: "res:*", Limit: 1, IdleSeconds: new(120.0)})
	if created.IdleSeconds == nil || *created.IdleSeconds != 120 || created.FromTemplate {
		t.Errorf("CreateLimit of a template with IdleSeconds 120 = idle %v, from template %v; want 120, false", created.IdleSeconds, created.FromTemplate)
	}
	l, err := b.c.Acquire(ctx, []string{"res:1"}, allot.Strict())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	if got, from := idle("res:1"); got == nil || *got != 120 || !from {
		t.Errorf("the limit the template created: idle %v, from template %v; want 120, true", got, from)
	}
	if err := b.c.UpdateLimit(ctx, "res:*", allot.LimitUpdate{IdleSeconds: new(0.0)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := idle("res:*"); got == nil || *got != 0 {
		t.Errorf("the template after LimitUpdate{IdleSeconds: 0}: idle %v, want 0", got)
	}
	if got, _ := idle("res:1"); got == nil || *got != 120 {
		t.Errorf("the limit the template created, after the template's update: idle %v, want its own 120", got)
	}
	b.limit(t, allot.LimitSpec{Name: "other:*", Limit: 1})
	if got, _ := idle("other:*"); got == nil || *got != 3600 {
		t.Errorf("a template created without IdleSeconds: idle %v, want the server's default 3600", got)
	}
	if got, from := idle(b.limit(t, allot.LimitSpec{Name: "plain", Limit: 1}).Name); got != nil || from {
		t.Errorf("a plain limit: idle %v, from template %v; want nil, false", got, from)
	}
	_, err = b.c.CreateLimit(ctx, allot.LimitSpec{Name: "plain2", Limit: 1, IdleSeconds: new(5.0)})
	var ae *allot.APIError
	if !errors.Is(err, allot.ErrInvalid) || !errors.As(err, &ae) || ae.Field != "idle_seconds" {
		t.Errorf("CreateLimit of a plain limit with IdleSeconds = %v, want ErrInvalid on field idle_seconds", err)
	}
	err = b.c.UpdateLimit(ctx, "plain", allot.LimitUpdate{IdleSeconds: new(5.0)})
	if !errors.Is(err, allot.ErrInvalid) || !errors.As(err, &ae) || ae.Field != "idle_seconds" {
		t.Errorf("UpdateLimit of a plain limit with IdleSeconds = %v, want ErrInvalid on field idle_seconds", err)
	}
}
