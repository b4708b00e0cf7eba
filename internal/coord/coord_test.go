package coord_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	c    *coord.Coordinator
	st   *memstore.Store
	stop func() error
}

// setup starts a coordinator over a fresh memstore; it must run inside a
// synctest bubble so that its timers use the bubble's clock.
func setup(t *testing.T, st *memstore.Store) *bundle {
	t.Helper()
	return setupConfig(t, st, coord.DefaultConfig())
}

// setupConfig is setup with cfg.
func setupConfig(t *testing.T, st *memstore.Store, cfg coord.Config) *bundle {
	t.Helper()
	if st == nil {
		st = memstore.New()
	}
	c, err := coord.New(t.Context(), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return &bundle{c: c, st: st, stop: stop}
}

func mustLimit(t *testing.T, c *coord.Coordinator, name string, limit int) {
	t.Helper()
	if _, err := c.CreateLimit(t.Context(), sema.LimitSpec{Name: name, Limit: limit, Active: true}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

func acquire(t *testing.T, c *coord.Coordinator, name string, wait time.Duration) coord.Grant {
	t.Helper()
	g, err := c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{name}, Slots: 1, Wait: wait, LeaseDuration: time.Minute})
	if err != nil {
		t.Fatalf("acquire %s: %v", name, err)
	}
	return g
}

func TestAcquireRefusedWhenFull(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		acquire(t, b.c, "db", 0)
		_, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1})
		var le *sema.LockedError
		if !errors.As(err, &le) {
			t.Fatalf("second acquire: got %v, want *sema.LockedError", err)
		}
		if le.RetryAfter <= 0 {
			t.Errorf("RetryAfter = %v, want > 0", le.RetryAfter)
		}
	})
}

func TestWaitersServedInArrivalOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		first := acquire(t, b.c, "db", 0)
		const n = 5
		order := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g := acquire(t, b.c, "db", time.Hour)
				order <- i
				time.Sleep(time.Second) // hold it
				if _, err := b.c.Release(context.Background(), g.Lease.ID); err != nil {
					t.Errorf("release: %v", err)
				}
			}()
			synctest.Wait() // waiter i is in line before i+1 arrives
		}
		if _, err := b.c.Release(t.Context(), first.Lease.ID); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(order)
		want := 0
		for got := range order {
			if got != want {
				t.Fatalf("grant order: got waiter %d, want %d", got, want)
			}
			want++
		}
	})
}

func TestReleaseHandsOffWithoutDelay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		first := acquire(t, b.c, "db", 0)
		got := make(chan time.Time, 1)
		go func() {
			acquire(t, b.c, "db", time.Hour)
			got <- time.Now()
		}()
		synctest.Wait()
		time.Sleep(3 * time.Second)
		released := time.Now()
		if _, err := b.c.Release(t.Context(), first.Lease.ID); err != nil {
			t.Fatal(err)
		}
		if gap := (<-got).Sub(released); gap != 0 {
			t.Errorf("gap between release and grant = %v in the bubble's clock, want 0 (no polling)", gap)
		}
	})
}

func TestWaitTimesOut(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		acquire(t, b.c, "db", 0)
		start := time.Now()
		_, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: 7 * time.Second})
		if !errors.As(err, new(*sema.LockedError)) {
			t.Fatalf("got %v, want *sema.LockedError", err)
		}
		if waited := time.Since(start); waited != 7*time.Second {
			t.Errorf("waited %v, want 7s", waited)
		}
		v, err := b.c.ReadLimit(t.Context(), "db", sema.Full)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Waiters) != 0 {
			t.Errorf("waiters after time-out = %d, want 0", len(v.Waiters))
		}
	})
}

func TestCancelledWaiterLeavesLine(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		first := acquire(t, b.c, "db", 0)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := b.c.Acquire(ctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: time.Hour})
			errc <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled acquire: got %v, want context.Canceled", err)
		}
		if _, err := b.c.Release(t.Context(), first.Lease.ID); err != nil {
			t.Fatal(err)
		}
		v, _ := b.c.ReadLimit(t.Context(), "db", sema.Full)
		if v.ActiveSlots != 0 || len(v.Waiters) != 0 {
			t.Errorf("after cancel and release: active %d waiters %d, want 0 and 0", v.ActiveSlots, len(v.Waiters))
		}
	})
}

func TestUnrenewedLeaseExpiresAndHandsOn(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		start := time.Now()
		_, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, LeaseDuration: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		g := acquire(t, b.c, "db", time.Hour)
		if waited := time.Since(start); waited != 2*time.Second {
			t.Errorf("next holder waited %v, want exactly the 2s lease duration", waited)
		}
		if g.Lease.Fence != 2 {
			t.Errorf("fencing token = %d, want 2", g.Lease.Fence)
		}
	})
}

func TestRenewKeepsLeaseAlive(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		g, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, LeaseDuration: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			time.Sleep(1500 * time.Millisecond)
			if _, err := b.c.Renew(t.Context(), g.Lease.ID, 0); err != nil {
				t.Fatalf("renew: %v", err)
			}
		}
		time.Sleep(2 * time.Second)
		if _, err := b.c.Renew(t.Context(), g.Lease.ID, 0); !errors.Is(err, sema.ErrLeaseNotFound) {
			t.Fatalf("renew after expiry: got %v, want ErrLeaseNotFound", err)
		}
	})
}

// blockingStore holds commits until released, to show that answers wait
// for durability.
type blockingStore struct {
	*memstore.Store
	gate chan struct{}
}

func (s *blockingStore) Commit(ctx context.Context, ch []sema.Change) error {
	<-s.gate
	return s.Store.Commit(ctx, ch)
}

func TestGrantWaitsForCommit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := &blockingStore{Store: memstore.New(), gate: make(chan struct{})}
		c, err := coord.New(t.Context(), st, coord.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		created := make(chan error, 1)
		go func() {
			_, err := c.CreateLimit(context.Background(), sema.LimitSpec{Name: "db", Limit: 1, Active: true})
			created <- err
		}()
		synctest.Wait()
		select {
		case err := <-created:
			t.Fatalf("create answered (%v) before its commit", err)
		default:
		}
		close(st.gate)
		if err := <-created; err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestCommitFailureStopsAnswers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		b.st.Fail(errors.New("disk on fire"))
		_, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1})
		if !errors.Is(err, coord.ErrUnavailable) {
			t.Fatalf("acquire during failing commits: got %v, want ErrUnavailable", err)
		}
		if err := b.c.Ready(); !errors.Is(err, coord.ErrUnavailable) {
			t.Errorf("Ready = %v, want ErrUnavailable", err)
		}
		if err := b.stop(); err == nil {
			t.Errorf("Run returned nil after a failed commit, want the error")
		}
	})
}

func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 2)
		g := acquire(t, b.c, "db", 0)
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		b2 := setup(t, b.st.Reopen())
		v, err := b2.c.ReadLimit(t.Context(), "db", sema.Full)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Holders) != 1 || v.Holders[0].LeaseID != g.Lease.ID || !v.Holders[0].Expires.Equal(g.Lease.Expires) {
			t.Fatalf("holders after restart = %+v, want the one lease %s expiring %v", v.Holders, g.Lease.ID, g.Lease.Expires)
		}
		g2 := acquire(t, b2.c, "db", 0)
		if g2.Lease.Fence <= g.Lease.Fence {
			t.Errorf("fencing token after restart = %d, want > %d", g2.Lease.Fence, g.Lease.Fence)
		}
	})
}

func TestWaitersGaugeCountsTheLine(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cfg := coord.DefaultConfig()
		cfg.Metrics = coord.NewMetrics(reg)
		c, err := coord.New(t.Context(), memstore.New(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		mustLimit(t, c, "db", 1)
		acquire(t, c, "db", 0)
		wctx, leave := context.WithCancel(context.Background())
		for range 3 {
			go func() { _, _ = c.Acquire(wctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: time.Hour}) }()
		}
		synctest.Wait()
		if got := testutil.ToFloat64(gauge(t, reg, "allot_waiters")); got != 3 {
			t.Errorf("allot_waiters = %v with 3 requests in line, want 3", got)
		}
		leave()
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name}, func() float64 { return mf.GetMetric()[0].GetGauge().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}
