package coord

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// LeaseState says whether a watched lease is still held, and if not, how
// it ended.
type LeaseState uint8

// The states WatchLease answers with.
const (
	// LeaseHeld: the lease is held (the watch's time ran out).
	LeaseHeld LeaseState = iota + 1
	// LeaseReleased: its holder released it (or its run ended).
	LeaseReleased
	// LeaseExpired: it was not renewed in time.
	LeaseExpired
	// LeaseRevoked: an operator took it away (a revoke or a reset).
	LeaseRevoked
	// LeaseNotFound: it is not held, and how it ended is not remembered
	// (it ended long ago, before a restart, or never existed).
	LeaseNotFound
)

// String returns the state as the API spells it.
func (s LeaseState) String() string {
	switch s {
	case LeaseHeld:
		return "held"
	case LeaseReleased:
		return "released"
	case LeaseExpired:
		return "expired"
	case LeaseRevoked:
		return "revoked"
	}
	return "not_found"
}

// LeaseStatus is a watched lease's state: Expires for a held lease, Reason
// for one that ended.
type LeaseStatus struct {
	ID      uuid.UUID
	State   LeaseState
	Reason  string
	Expires time.Time
}

// endedMemory is how many ended leases the coordinator remembers, so that a
// watch that starts (or reconnects) just after its lease ended still learns
// how it ended.
const endedMemory = 4096

// leaseWatcher is a WatchLease request: ch receives how its lease ended,
// and b is the batch that carries the end.
type leaseWatcher struct {
	ch chan LeaseStatus
	b  *batch
}

// leaseEnded wakes the watchers of e's lease and remembers how it ended.
// It must be called with mu held, from dispatch.
func (c *Coordinator) leaseEnded(e sema.Event) {
	st := LeaseStatus{ID: e.Lease.ID, Reason: e.Reason}
	switch e.Kind {
	case sema.Released:
		st.State = LeaseReleased
	case sema.Expired:
		st.State = LeaseExpired
	default:
		st.State = LeaseRevoked
	}
	if _, ok := c.ended[st.ID]; !ok {
		// A ring: the oldest remembered end makes room.
		if c.endedOrder == nil {
			c.endedOrder = make([]uuid.UUID, endedMemory)
		}
		delete(c.ended, c.endedOrder[c.endedNext])
		c.endedOrder[c.endedNext] = st.ID
		c.endedNext = (c.endedNext + 1) % endedMemory
	}
	c.ended[st.ID] = st
	for _, w := range c.leaseWatch[st.ID] {
		w.b = c.open
		select {
		case w.ch <- st:
		default:
		}
	}
}

// WatchLease waits up to timeout for a lease to end and returns how it
// ended, once that is durable; or, when the time is up, the lease as held
// with its expiry. A lease that is not held answers at once: how it ended
// if the coordinator remembers, else LeaseNotFound. It returns ctx's error
// if ctx ends first.
func (c *Coordinator) WatchLease(ctx context.Context, id uuid.UUID, timeout time.Duration) (LeaseStatus, error) {
	w := &leaseWatcher{ch: make(chan LeaseStatus, 1)}
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return LeaseStatus{}, ErrUnavailable
	}
	st, held := c.leaseStatus(id)
	if !held || timeout <= 0 {
		c.mu.Unlock()
		return st, nil
	}
	c.leaseWatch[id] = append(c.leaseWatch[id], w)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		ws := slices.DeleteFunc(c.leaseWatch[id], func(x *leaseWatcher) bool { return x == w })
		if len(ws) == 0 {
			delete(c.leaseWatch, id)
		} else {
			c.leaseWatch[id] = ws
		}
		c.mu.Unlock()
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return LeaseStatus{}, ctx.Err()
	case <-timer.C:
	case st = <-w.ch:
	}
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return LeaseStatus{}, ErrUnavailable
	}
	if st.State == LeaseHeld {
		// The time ran out: the lease as it is now (it may have ended
		// just then, and its watcher been told).
		select {
		case st = <-w.ch:
		default:
			st, _ = c.leaseStatus(id)
		}
	}
	b := w.b
	c.mu.Unlock()
	if b != nil {
		// The end is answered once the batch that carries it is durable.
		if err := wait(b); err != nil {
			return LeaseStatus{}, err
		}
	}
	return st, nil
}

// leaseStatus is a lease's state now; it must be called with mu held.
func (c *Coordinator) leaseStatus(id uuid.UUID) (LeaseStatus, bool) {
	// A lease past its expiry that the reaper has not expired yet is
	// still held: its watcher hears the expiry in a moment.
	if exp, ok := c.m.Holds(id); ok {
		return LeaseStatus{ID: id, State: LeaseHeld, Expires: exp}, true
	}
	if st, ok := c.ended[id]; ok {
		return st, false
	}
	return LeaseStatus{ID: id, State: LeaseNotFound}, false
}

// RevokeLease takes one lease away (an operator's revoke): its slots go to
// the next waiters and a run that held it is Crashed with reason. It fails
// with sema.ErrLeaseNotFound for a lease that is not held.
func (c *Coordinator) RevokeLease(ctx context.Context, id uuid.UUID, reason string) (sema.Lease, error) {
	var l sema.Lease
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		l, err = m.RevokeLease(now, id, reason)
		return err
	})
	return l, err
}
