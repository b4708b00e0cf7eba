package coord_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
)

// watch starts WatchLease in a goroutine and returns where its answer
// arrives.
func watch(c *coord.Coordinator, id uuid.UUID, timeout time.Duration) <-chan coord.LeaseStatus {
	out := make(chan coord.LeaseStatus, 1)
	go func() {
		st, err := c.WatchLease(context.Background(), id, timeout)
		if err != nil {
			st.Reason = "error: " + err.Error()
		}
		out <- st
	}()
	return out
}

func TestWatchLease(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 3)

		// Held when the time runs out, with its expiry.
		g := acquire(t, b.c, "db", 0)
		start := time.Now()
		st, err := b.c.WatchLease(t.Context(), g.Lease.ID, 5*time.Second)
		if err != nil || st.State != coord.LeaseHeld || !st.Expires.Equal(g.Lease.Expires) || time.Since(start) != 5*time.Second {
			t.Errorf("watch of a held lease = %+v, %v after %v; want held with its expiry after 5s", st, err, time.Since(start))
		}

		// Revoked: the watcher hears it at once, with the reason.
		got := watch(b.c, g.Lease.ID, time.Hour)
		synctest.Wait()
		start = time.Now()
		if _, err := b.c.RevokeLease(t.Context(), g.Lease.ID, "revoked by an operator"); err != nil {
			t.Fatal(err)
		}
		want := coord.LeaseStatus{ID: g.Lease.ID, State: coord.LeaseRevoked, Reason: "revoked by an operator"}
		if diff := cmp.Diff(want, <-got); diff != "" || time.Since(start) != 0 {
			t.Errorf("watch of a revoked lease (-want +got):\n%s", diff)
		}
		// A watch that starts after the end still hears how it ended.
		if st, _ := b.c.WatchLease(t.Context(), g.Lease.ID, time.Hour); st.State != coord.LeaseRevoked {
			t.Errorf("late watch of a revoked lease: %v, want revoked", st.State)
		}
		if _, err := b.c.RevokeLease(t.Context(), g.Lease.ID, ""); !errors.Is(err, sema.ErrLeaseNotFound) {
			t.Errorf("revoke of a revoked lease: %v, want ErrLeaseNotFound", err)
		}

		// Released and expired.
		rel := acquire(t, b.c, "db", 0)
		got = watch(b.c, rel.Lease.ID, time.Hour)
		synctest.Wait()
		if _, err := b.c.Release(t.Context(), rel.Lease.ID); err != nil {
			t.Fatal(err)
		}
		if st := <-got; st.State != coord.LeaseReleased {
			t.Errorf("watch of a released lease: %+v", st)
		}
		exp, err := b.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, LeaseDuration: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		if st := <-watch(b.c, exp.Lease.ID, time.Hour); st.State != coord.LeaseExpired || time.Since(start) != 2*time.Second {
			t.Errorf("watch of an expiring lease: %+v after %v, want expired after 2s", st, time.Since(start))
		}

		// Unknown: at once.
		if st, err := b.c.WatchLease(t.Context(), uuid.New(), time.Hour); err != nil || st.State != coord.LeaseNotFound {
			t.Errorf("watch of an unknown lease: %+v %v", st, err)
		}

		// The caller leaving ends the watch.
		held := acquire(t, b.c, "db", 0)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, err := b.c.WatchLease(ctx, held.Lease.ID, time.Hour); errc <- err }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("watch after its caller left: %v", err)
		}
	})
}

// TestWatchLeaseHearsAResetAndItsRun shows that a reset of a tag limit ends
// the watch of its run's lease as revoked, and a run that ends its lease's
// watch as released.
func TestWatchLeaseHearsAResetAndItsRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 2)
		r := runTask(t, b.c, uuid.Nil, "db")
		got := watch(b.c, r.LeaseID, time.Hour)
		synctest.Wait()
		if _, err := b.c.ResetTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{Key: "db"}, nil); err != nil {
			t.Fatal(err)
		}
		if st := <-got; st.State != coord.LeaseRevoked || st.Reason != "slot revoked by reset" {
			t.Errorf("watch of a reset run's lease: %+v, want revoked by the reset", st)
		}
		done := runTask(t, b.c, uuid.Nil, "db")
		got = watch(b.c, done.LeaseID, time.Hour)
		synctest.Wait()
		setState(t, b.c, done.ID, sema.Completed)
		if st := <-got; st.State != coord.LeaseReleased {
			t.Errorf("watch of a completed run's lease: %+v, want released", st)
		}
	})
}

// TestWatchLeaseAnswersAfterCommit shows that the end of a lease is answered
// only once it is durable.
func TestWatchLeaseAnswersAfterCommit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := &blockingStore{Store: memstore.New(), gate: make(chan struct{}, 2)}
		st.gate <- struct{}{} // the limit
		st.gate <- struct{}{} // the grant
		c, err := coord.New(t.Context(), st, coord.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		mustLimit(t, c, "db", 1)
		g := acquire(t, c, "db", 0)
		got := watch(c, g.Lease.ID, time.Hour)
		synctest.Wait()
		go func() { _, _ = c.RevokeLease(context.Background(), g.Lease.ID, "") }()
		synctest.Wait()
		select {
		case s := <-got:
			t.Fatalf("WatchLease answered %v before the revoke was committed", s.State)
		default:
		}
		st.gate <- struct{}{}
		if s := <-got; s.State != coord.LeaseRevoked {
			t.Errorf("WatchLease: %v, want revoked", s.State)
		}
		cancel()
		close(st.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// A plain increment holds its slots in an anonymous lease in mode
// concurrency (a plain decrement gives it back) and in no lease in mode
// rate_limit.
func TestIncrementPlain(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 2)
		decay := 1.0
		if _, _, err := b.c.EnsureLimit(t.Context(), sema.LimitEnsure{Name: "api", Limit: 2, SlotDecayPerSecond: &decay}); err != nil {
			t.Fatal(err)
		}
		refs, err := b.c.Increment(t.Context(), coord.IncrementRequest{Names: []string{"db"}, Slots: 2, LeaseDuration: time.Minute})
		if err != nil || len(refs) != 1 || refs[0].Name != "db" {
			t.Fatalf("Increment db = %v, %v; want the limit db", refs, err)
		}
		v, err := b.c.ReadLimit(t.Context(), "db", sema.Full)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Holders) != 1 || v.ActiveSlots != 2 {
			t.Fatalf("db after a plain increment: %d holders, %d active slots; want one lease of 2", len(v.Holders), v.ActiveSlots)
		}
		if _, err := b.c.Decrement(t.Context(), []string{"db"}, 2, 0); err != nil {
			t.Fatal(err)
		}
		if v, _ := b.c.ReadLimit(t.Context(), "db", sema.Full); len(v.Holders) != 0 || v.ActiveSlots != 0 {
			t.Errorf("db after a plain decrement: %d holders, %d active slots; want none", len(v.Holders), v.ActiveSlots)
		}

		if _, err := b.c.Increment(t.Context(), coord.IncrementRequest{Names: []string{"api"}, Slots: 1, Mode: sema.ModeRateLimit}); err != nil {
			t.Fatal(err)
		}
		v, err = b.c.ReadLimit(t.Context(), "api", sema.Full)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Holders) != 0 || v.ActiveSlots != 1 {
			t.Errorf("api after a rate-limit increment: %d holders, %d active slots; want no lease, 1 slot", len(v.Holders), v.ActiveSlots)
		}
	})
}

// A watch that starts after a lease's end was decided, but before that end
// is committed, waits for the commit too: a holder is never told of an end
// that a crash could undo.
func TestWatchLeaseStartedAfterEndAnswersAfterCommit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := &heldStore{Store: memstore.New()}
		c, err := coord.New(t.Context(), st, coord.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() { st.let(); cancel(); <-done }()
		mustLimit(t, c, "db", 1)
		g := acquire(t, c, "db", 0)
		st.hold()
		go func() { _, _ = c.RevokeLease(context.Background(), g.Lease.ID, "") }()
		synctest.Wait()
		got := watch(c, g.Lease.ID, time.Hour)
		synctest.Wait()
		select {
		case s := <-got:
			t.Fatalf("WatchLease answered %v before the revoke was committed", s.State)
		default:
		}
		st.let()
		if s := <-got; s.State != coord.LeaseRevoked {
			t.Errorf("WatchLease: %v, want revoked", s.State)
		}
	})
}
