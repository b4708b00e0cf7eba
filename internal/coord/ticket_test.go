package coord_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
)

type result struct {
	g   coord.Grant
	err error
}

// wait starts a waiting acquisition of one slot of name with ticket, and
// returns where its answer arrives once it is in line.
func waitFor(ctx context.Context, c *coord.Coordinator, name, ticket string) <-chan result {
	out := make(chan result, 1)
	go func() {
		g, err := c.Acquire(ctx, coord.AcquireRequest{Names: []string{name}, Slots: 1, Wait: time.Hour,
			LeaseDuration: time.Hour, Ticket: ticket})
		out <- result{g, err}
	}()
	synctest.Wait()
	return out
}

// drop starts a waiter with ticket whose caller then goes away.
func drop(t *testing.T, c *coord.Coordinator, name, ticket string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	res := waitFor(ctx, c, name, ticket)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("dropped waiter %s: got %v, want context.Canceled", ticket, r.err)
	}
}

func lineOf(t *testing.T, c *coord.Coordinator, name string) (holders []string, waiting int) {
	t.Helper()
	v, err := c.ReadLimit(t.Context(), name, sema.Full)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range v.Holders {
		holders = append(holders, h.LeaseID.String())
	}
	return holders, len(v.Waiters)
}

func TestTicketRetryGetsTheSameLease(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 2)
		req := coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Ticket: "job-1"}
		g1, err := b.c.Acquire(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		g2, err := b.c.Acquire(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if g2.Lease.ID != g1.Lease.ID || g2.Lease.Fence != g1.Lease.Fence {
			t.Errorf("retry got lease %s (fence %d), want %s (fence %d)", g2.Lease.ID, g2.Lease.Fence, g1.Lease.ID, g1.Lease.Fence)
		}
		if h, _ := lineOf(t, b.c, "db"); len(h) != 1 {
			t.Errorf("holders = %v, want one", h)
		}
		req.Slots = 2
		if _, err := b.c.Acquire(t.Context(), req); !errors.Is(err, sema.ErrTicketConflict) {
			t.Errorf("same ticket, other slots: %v, want ErrTicketConflict", err)
		}
	})
}

func TestTicketWaiterKeepsPlaceWhileAway(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		holder := acquire(t, b.c, "db", 0)
		drop(t, b.c, "db", "a")
		second := waitFor(t.Context(), b.c, "db", "b")
		if _, n := lineOf(t, b.c, "db"); n != 2 {
			t.Fatalf("waiting = %d, want 2 (a kept in line while away)", n)
		}
		time.Sleep(5 * time.Second) // within the grace
		first := waitFor(t.Context(), b.c, "db", "a")
		if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		r := <-first
		if r.err != nil {
			t.Fatalf("a: %v", r.err)
		}
		select {
		case r := <-second:
			t.Fatalf("b granted ahead of a: %+v", r)
		default:
		}
		if _, err := b.c.Release(t.Context(), r.g.Lease.ID); err != nil {
			t.Fatal(err)
		}
		if r := <-second; r.err != nil {
			t.Fatalf("b: %v", r.err)
		}
	})
}

func TestTicketWaiterLeavesAfterGrace(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		holder := acquire(t, b.c, "db", 0)
		drop(t, b.c, "db", "a")
		second := waitFor(t.Context(), b.c, "db", "b")
		time.Sleep(coord.DefaultConfig().WaiterGrace + time.Second)
		if _, n := lineOf(t, b.c, "db"); n != 1 {
			t.Fatalf("waiting after the grace = %d, want 1", n)
		}
		if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		if r := <-second; r.err != nil {
			t.Fatalf("b: %v", r.err)
		}
	})
}

func TestTicketUnclaimedGrantReleasedAfterGrace(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		events, stop := b.c.Subscribe(64)
		defer stop()
		holder := acquire(t, b.c, "db", 0)
		drop(t, b.c, "db", "a")
		second := waitFor(t.Context(), b.c, "db", "b")
		if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		h, n := lineOf(t, b.c, "db")
		if len(h) != 1 || h[0] == holder.Lease.ID.String() || n != 1 {
			t.Fatalf("after release: holders %v waiting %d, want a's lease held for it and b waiting", h, n)
		}
		time.Sleep(coord.DefaultConfig().WaiterGrace + time.Second)
		r := <-second
		if r.err != nil {
			t.Fatalf("b: %v", r.err)
		}
		unclaimed := 0
		for len(events) > 0 {
			if e := <-events; e.Kind == sema.Released && e.Reason == sema.ReasonUnclaimed {
				unclaimed++
				if e.Lease.ID.String() != h[0] {
					t.Errorf("unclaimed release of %s, want a's lease %s", e.Lease.ID, h[0])
				}
			}
		}
		if unclaimed != 1 {
			t.Errorf("unclaimed releases = %d, want 1", unclaimed)
		}
	})
}

func TestTicketGrantClaimedAfterReconnect(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		holder := acquire(t, b.c, "db", 0)
		drop(t, b.c, "db", "a")
		if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		held, _ := lineOf(t, b.c, "db")
		time.Sleep(3 * time.Second)
		r := <-waitFor(t.Context(), b.c, "db", "a")
		if r.err != nil || r.g.Lease.ID.String() != held[0] {
			t.Fatalf("a back: lease %v, %v; want the lease held for it, %s", r.g.Lease.ID, r.err, held[0])
		}
		time.Sleep(2 * coord.DefaultConfig().WaiterGrace)
		if h, _ := lineOf(t, b.c, "db"); len(h) != 1 || h[0] != held[0] {
			t.Errorf("after the grace: holders %v, want a's claimed lease still held", h)
		}
	})
}

func TestTicketWaiterWithoutTicketLeavesAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		acquire(t, b.c, "db", 0)
		ctx, cancel := context.WithCancel(t.Context())
		res := waitFor(ctx, b.c, "db", "")
		cancel()
		<-res
		if _, n := lineOf(t, b.c, "db"); n != 0 {
			t.Errorf("waiting = %d, want 0", n)
		}
	})
}

func TestRestartRestoresWaitersInOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		holder := acquire(t, b.c, "db", 0)
		for _, tk := range []string{"a", "b", "c"} {
			drop(t, b.c, "db", tk) // each caller is cut off by the restart
		}
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		b2 := setup(t, b.st.Reopen())
		if _, n := lineOf(t, b2.c, "db"); n != 3 {
			t.Fatalf("waiting after restart = %d, want 3", n)
		}
		// They come back in another order, and keep their places.
		res := map[string]<-chan result{}
		for _, tk := range []string{"c", "a", "b"} {
			res[tk] = waitFor(t.Context(), b2.c, "db", tk)
		}
		if _, err := b2.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		for _, tk := range []string{"a", "b", "c"} {
			r := <-res[tk]
			if r.err != nil {
				t.Fatalf("%s: %v", tk, r.err)
			}
			synctest.Wait()
			for other, ch := range res {
				if other > tk && len(ch) > 0 {
					t.Fatalf("%s granted while %s holds the slot", other, tk)
				}
			}
			if _, err := b2.c.Release(t.Context(), r.g.Lease.ID); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// heldStore holds commits while hold is set, to line up requests that
// are decided but not yet durable.
type heldStore struct {
	*memstore.Store
	mu   sync.Mutex
	gate chan struct{} // nil: commits pass
}

func (s *heldStore) hold() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *heldStore) let() {
	s.mu.Lock()
	if s.gate != nil {
		close(s.gate)
	}
	s.gate = nil
	s.mu.Unlock()
}

func (s *heldStore) Commit(ctx context.Context, ch []sema.Change) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	return s.Store.Commit(ctx, ch)
}

// A waiter with a ticket is granted, its caller goes away before the grant
// is durable, and the caller's retry with the ticket is answered the lease:
// that lease is the retry's, never released as unclaimed after the grace.
func TestTicketGrantAnsweredToRetryIsNotReleasedAsUnclaimed(t *testing.T) {
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
		holder := acquire(t, c, "db", 0)

		wctx, wcancel := context.WithCancel(t.Context())
		first := waitFor(wctx, c, "db", "a")
		st.hold()
		go func() { _, _ = c.Release(context.Background(), holder.Lease.ID) }()
		synctest.Wait() // a is granted; the grant is not durable yet
		wcancel()       // a's caller goes away
		synctest.Wait()
		retry := waitFor(t.Context(), c, "db", "a") // and comes back with its ticket
		st.let()
		if r := <-first; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("first request: %+v, want context.Canceled", r)
		}
		r := <-retry
		if r.err != nil {
			t.Fatalf("retry: %v", r.err)
		}
		time.Sleep(2 * coord.DefaultConfig().WaiterGrace)
		if h, _ := lineOf(t, c, "db"); len(h) != 1 || h[0] != r.g.Lease.ID.String() {
			t.Errorf("after the grace: holders %v, want the lease answered to the retry, %s", h, r.g.Lease.ID)
		}
	})
}

// A waiting request with a ticket whose API key is revoked leaves the line
// at once, as one without a ticket does: nobody can come back for its
// place with a revoked key, so it is not kept for the grace.
func TestTicketWaiterOfRevokedKeyLeavesAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "db", 1)
		ring, err := auth.NewKeyring(t.Context(), b.c, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		tok, key, err := ring.Create(t.Context(), auth.NewKey{Name: "worker", Scopes: []string{"acquire:*"}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := ring.Authenticate("Bearer " + tok.String())
		if err != nil {
			t.Fatal(err)
		}
		holder := acquire(t, b.c, "db", 0)
		res := waitFor(auth.NewContext(t.Context(), p), b.c, "db", "a")
		if _, n := lineOf(t, b.c, "db"); n != 1 {
			t.Fatalf("waiting = %d, want 1", n)
		}
		if _, _, err := ring.Revoke(t.Context(), key.ID); err != nil {
			t.Fatal(err)
		}
		if r := <-res; r.err == nil {
			t.Fatalf("waiter of a revoked key: granted %+v, want an error", r.g)
		}
		if _, n := lineOf(t, b.c, "db"); n != 0 {
			t.Errorf("waiting after the key was revoked = %d, want 0", n)
		}
		if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if h, _ := lineOf(t, b.c, "db"); len(h) != 0 {
			t.Errorf("holders after the release = %v, want none (nothing granted to the revoked key's waiter)", h)
		}
	})
}

// grantDetached grants a lease to the waiter with ticket "a" of b, whose
// caller has gone away, and returns its id.
func grantDetached(t *testing.T, b *bundle) string {
	t.Helper()
	mustLimit(t, b.c, "db", 1)
	holder := acquire(t, b.c, "db", 0)
	drop(t, b.c, "db", "a")
	if _, err := b.c.Release(t.Context(), holder.Lease.ID); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	held, _ := lineOf(t, b.c, "db")
	if len(held) != 1 || held[0] == holder.Lease.ID.String() {
		t.Fatalf("holders %v, want a's lease", held)
	}
	return held[0]
}

// A lease granted while its caller was away ends soon after the grace even
// if the coordinator restarts meanwhile (no timer survives a restart), not
// after its hour-long duration.
func TestTicketUnclaimedGrantEndsAfterGraceAcrossRestart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		grantDetached(t, b)
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		b2 := setup(t, b.st.Reopen())
		if h, _ := lineOf(t, b2.c, "db"); len(h) != 1 {
			t.Fatalf("after restart: holders %v, want a's lease", h)
		}
		time.Sleep(coord.DefaultConfig().WaiterGrace + 2*time.Second)
		synctest.Wait()
		if h, _ := lineOf(t, b2.c, "db"); len(h) != 0 {
			t.Errorf("after the grace: holders %v, want none", h)
		}
	})
}

// A lease granted while its caller was away and claimed by the caller's
// return (after a restart, too) is held for its full duration.
func TestTicketClaimedGrantHasFullDuration(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, nil)
			held := grantDetached(t, b)
			c := b.c
			if restart {
				if err := b.stop(); err != nil {
					t.Fatal(err)
				}
				c = setup(t, b.st.Reopen()).c
			}
			time.Sleep(3 * time.Second)
			now := time.Now()
			r := <-waitFor(t.Context(), c, "db", "a")
			if r.err != nil || r.g.Lease.ID.String() != held {
				t.Fatalf("a back: lease %v, %v; want %s", r.g.Lease.ID, r.err, held)
			}
			if want := now.Add(time.Hour); !r.g.Lease.Expires.Equal(want) {
				t.Errorf("claimed lease expires %v, want %v (its full hour)", r.g.Lease.Expires, want)
			}
			time.Sleep(2 * coord.DefaultConfig().WaiterGrace)
			if h, _ := lineOf(t, c, "db"); len(h) != 1 || h[0] != held {
				t.Errorf("after the grace (restart %v): holders %v, want a's claimed lease", restart, h)
			}
		})
	}
}

// Waiters put back in line by a restart count for their key's quota of
// waiting requests, and each can still come back for its own place.
func TestRestoredWaitersCountForKeyQuota(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := coord.DefaultConfig()
		cfg.KeyMaxWaiting = 2
		b := setupConfig(t, nil, cfg)
		mustLimit(t, b.c, "db", 1)
		ring, err := auth.NewKeyring(t.Context(), b.c, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := ring.Create(t.Context(), auth.NewKey{Name: "worker", Scopes: []string{"acquire:*"}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := ring.Authenticate("Bearer " + tok.String())
		if err != nil {
			t.Fatal(err)
		}
		acquire(t, b.c, "db", 0)
		kctx := auth.NewContext(t.Context(), p)
		for _, tk := range []string{"a", "b"} {
			ctx, cancel := context.WithCancel(kctx)
			res := waitFor(ctx, b.c, "db", tk)
			cancel()
			<-res
		}
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		b2 := setupConfig(t, b.st.Reopen(), cfg)
		ring2, err := auth.NewKeyring(t.Context(), b2.c, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := ring2.Authenticate("Bearer " + tok.String())
		if err != nil {
			t.Fatal(err)
		}
		kctx = auth.NewContext(t.Context(), p2)
		var qe *auth.QuotaError
		if r := <-waitFor(kctx, b2.c, "db", "c"); !errors.As(r.err, &qe) {
			t.Errorf("a third waiter of the key after restart: %v, want a QuotaError", r.err)
		}
		ctx, cancel := context.WithCancel(kctx)
		defer cancel()
		back := waitFor(ctx, b2.c, "db", "a")
		if _, n := lineOf(t, b2.c, "db"); n != 2 || len(back) != 0 {
			t.Errorf("a back for its place: waiting %d (want 2), answered early: %v", n, len(back) != 0)
		}
	})
}
