package coord

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
)

// A grace timer that fired while its waiter's caller came back, and acts
// only after the caller went away again, does not cut the new grace short.
// (That timing cannot be arranged from outside: the stale timer's call is
// made by hand.)
func TestStaleGraceTimerKeepsWaiter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, err := New(t.Context(), memstore.New(), DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() { stop(); <-done }()
		if _, err := c.CreateLimit(t.Context(), sema.LimitSpec{Name: "db", Limit: 1, Active: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Acquire(t.Context(), AcquireRequest{Names: []string{"db"}, Slots: 1, LeaseDuration: time.Minute}); err != nil {
			t.Fatal(err)
		}
		// away starts a waiting request with ticket "a" and cuts it off.
		away := func() {
			rctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error, 1)
			go func() {
				_, err := c.Acquire(rctx, AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: time.Hour,
					LeaseDuration: time.Minute, Ticket: "a"})
				errc <- err
			}()
			synctest.Wait()
			cancel()
			<-errc
		}
		away()
		c.mu.Lock()
		var id uint64
		var p *parked
		for wid, wp := range c.waiters {
			id, p = wid, wp
		}
		first := p.detached
		c.mu.Unlock()
		away() // back, and away again: a new grace
		c.graceUp(id, p, first)
		waiting := func() int {
			v, err := c.ReadLimit(t.Context(), "db", sema.Full)
			if err != nil {
				t.Fatal(err)
			}
			return len(v.Waiters)
		}
		if n := waiting(); n != 1 {
			t.Fatalf("after the stale timer: waiting %d, want 1 (its new grace is not up)", n)
		}
		time.Sleep(DefaultConfig().WaiterGrace + time.Second)
		synctest.Wait()
		if n := waiting(); n != 0 {
			t.Errorf("after the new grace: waiting %d, want 0", n)
		}
	})
}
