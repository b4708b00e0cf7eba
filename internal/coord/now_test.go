package coord_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/store/memstore"
)

// TestConfigNowDecides runs a coordinator on a clock an hour off this
// process's, as a replica over PostgreSQL runs on the database's: the
// expiries it grants are by that clock, and a lease still expires exactly
// its duration after it was granted (the reaper waits by the same clock).
func TestConfigNowDecides(t *testing.T) {
	t.Parallel()
	for _, offset := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(offset.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				cfg := coord.DefaultConfig()
				cfg.Now = func() time.Time { return time.Now().Add(offset) }
				c, err := coord.New(t.Context(), memstore.New(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				defer func() { cancel(); <-done }()

				mustLimit(t, c, "db", 1)
				start := time.Now()
				g, err := c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, LeaseDuration: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if want := start.Add(offset + 2*time.Second); !g.Lease.Expires.Equal(want) {
					t.Errorf("Expires = %v, want %v (the coordinator's clock plus the duration)", g.Lease.Expires, want)
				}
				next, err := c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: 3 * time.Hour, LeaseDuration: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				if waited := time.Since(start); waited != 2*time.Second {
					t.Errorf("next holder waited %v, want exactly the 2s lease duration", waited)
				}
				if next.Lease.Fence != 2 {
					t.Errorf("fencing token = %d, want 2", next.Lease.Fence)
				}
			})
		})
	}
}
