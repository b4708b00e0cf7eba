package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// The lease that state-building acquires ask for: an hour, so that none
// expires while a workload measures the server holding it.
const longLeaseSeconds = 3600

// forEach calls f(w, i) for every i in [0, n), from workers goroutines at a
// time; w, in [0, workers), names the goroutine making the call. With
// stopOnError the first failure stops the calls not yet started. It returns
// the failures, and stops early when ctx is done.
func forEach(ctx context.Context, workers, n int, stopOnError bool, f func(w, i int) error) tally {
	workers = max(min(workers, n), 1)
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	errs := make([]tally, workers)
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil && !(stopOnError && failed.Load()) {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(w, i); err != nil {
					errs[w].add(err)
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	var t tally
	for _, e := range errs {
		t.merge(e)
	}
	return t
}

// heldGrant is the part of a grant that holdEach checks.
type heldGrant struct {
	LeaseID string `json:"lease_id"`
	Limits  []struct {
		Name string `json:"name"`
	} `json:"limits"`
}

// holdEach acquires one slot of the limit called names(i) for every i in
// [0, n), workers requests at a time, each under a lease of
// longLeaseSeconds and refused at once rather than queued if the slot is
// taken. It returns the ids of the leases granted, in no order. It stops at
// the first failure, and counts a grant that holds anything but the one
// limit asked for as one: a name that matches no limit or template is
// granted a lease on nothing.
func holdEach(ctx context.Context, c *client, workers, n int, names func(i int) string) ([]string, error) {
	ids := make([]string, n)
	bodies := make([][]byte, workers)
	holders := make([][]byte, workers)
	for w := range workers {
		holders[w] = quote(fmt.Sprintf("bench-w%d", w))
	}
	errs := forEach(ctx, workers, n, true, func(w, i int) error {
		name := names(i)
		bodies[w] = appendLeaseBody(bodies[w][:0], quote(name), holders[w], longLeaseSeconds, 0)
		var g heldGrant
		if err := c.acquireWithin(ctx, bodies[w], 0, &g); err != nil {
			return fmt.Errorf("hold %s: %w", name, err)
		}
		if g.LeaseID == "" {
			return fmt.Errorf("hold %s: answer without lease_id", name)
		}
		ids[i] = g.LeaseID
		if len(g.Limits) != 1 || g.Limits[0].Name != name {
			return fmt.Errorf("hold %s: granted a lease on %d limits, want 1 (%+v)", name, len(g.Limits), g.Limits)
		}
		return nil
	})
	held := ids[:0]
	for _, id := range ids {
		if id != "" {
			held = append(held, id)
		}
	}
	if errs.first != nil {
		return held, errs.first
	}
	if err := ctx.Err(); err != nil {
		return held, err
	}
	return held, nil
}

// releaseEach releases every lease of ids, workers at a time, and returns
// the failures. It carries on when ctx is cancelled: the leases are ours to
// give back.
func releaseEach(ctx context.Context, c *client, workers int, ids []string) tally {
	ctx = context.WithoutCancel(ctx)
	return forEach(ctx, workers, len(ids), false, func(_, i int) error {
		return c.release(ctx, ids[i])
	})
}

// deleteEach deletes every limit of names, workers at a time, and returns
// the failures. It carries on when ctx is cancelled: the limits are ours to
// delete.
func deleteEach(ctx context.Context, c *client, workers int, names []string) tally {
	ctx = context.WithoutCancel(ctx)
	return forEach(ctx, workers, len(names), false, func(_, i int) error {
		return c.deleteLimit(ctx, names[i])
	})
}
