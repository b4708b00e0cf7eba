package coord

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// AcquireRequest asks for slots.
type AcquireRequest struct {
	Names []string
	Slots int
	Mode  sema.Mode
	// LeaseDuration is the lease's time to live; zero means the default.
	LeaseDuration time.Duration
	Holder        sema.Holder
	// Wait is how long to wait in line; zero refuses at once when the
	// slots are not free.
	Wait time.Duration
	// NoLease grants without keeping a lease (rate-limit increments).
	NoLease bool
	// Anonymous marks a plain increment's lease, which a plain decrement
	// gives back.
	Anonymous bool
	// Ticket is the client-chosen idempotency key of the request, or "":
	// a request with the ticket of a live lease gets that lease, one with
	// the ticket of a waiter takes up its place in line (see
	// sema.Request.Ticket). A waiting request with a ticket whose caller
	// goes away keeps its place for Config.WaiterGrace.
	Ticket string
}

// Grant is a granted request.
type Grant struct {
	Lease  sema.Lease
	Limits []sema.LimitRef
	// Waited is how long the request stood in line.
	Waited time.Duration
}

// LeaseDuration checks a requested lease duration and applies the default.
func (c *Coordinator) LeaseDuration(d time.Duration) (time.Duration, error) {
	if d == 0 {
		return c.cfg.DefaultLeaseDuration, nil
	}
	if d < c.cfg.MinLeaseDuration || d > c.cfg.MaxLeaseDuration {
		return 0, &sema.InvalidError{Field: "lease_duration",
			Detail: "must be between " + c.cfg.MinLeaseDuration.String() + " and " + c.cfg.MaxLeaseDuration.String()}
	}
	return d, nil
}

// Acquire grants slots, waiting in line up to req.Wait. A request that
// cannot be granted in time fails with *sema.LockedError (its RetryAfter
// already jittered); one that can never be granted with *sema.NeverError.
// If ctx ends while the request waits, the request leaves the line and any
// lease granted meanwhile is released; with a ticket, it stays in line,
// detached, for the waiter grace instead, and a lease granted to it is kept
// as long for its caller to claim with the ticket.
func (c *Coordinator) Acquire(ctx context.Context, req AcquireRequest) (Grant, error) {
	if err := allow(ctx, auth.Acquire, req.Names...); err != nil {
		return Grant{}, err
	}
	d, err := c.LeaseDuration(req.LeaseDuration)
	if err != nil {
		return Grant{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Grant{}, err
	}
	sreq := sema.Request{Names: req.Names, Slots: req.Slots, Mode: req.Mode, LeaseID: id, LeaseDuration: d,
		Holder: req.Holder, NoLease: req.NoLease, Anonymous: req.Anonymous, Wait: req.Wait > 0, Ticket: req.Ticket,
		KeyID: auth.KeyID(ctx)}

	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return Grant{}, ErrUnavailable
	}
	if err := c.checkKeyQuota(sreq); err != nil {
		c.mu.Unlock()
		return Grant{}, err
	}
	start := c.now()
	if req.Wait > 0 {
		sreq.Deadline = start.Add(req.Wait)
	}
	out, err := c.m.Acquire(start, sreq)
	if le := (*sema.LockedError)(nil); errors.As(err, &le) {
		c.recordRefusal(start, sema.ActDenied, le, sreq)
	}
	// A pointer, so that each parked request keeps one word of buffer
	// rather than a whole result.
	var ch chan *waitResult
	switch {
	case err != nil:
	case out.Granted && out.Resumed:
		c.claim(out.Lease.ID)
		// A lease held unclaimed was brought forward to the end of the
		// grace (holdUnclaimed), here or before a restart: its caller has
		// it back for its full duration, answered once that is durable.
		if out.Lease.Expires.Before(start.Add(out.Lease.Duration)) {
			if l, rerr := c.m.Renew(start, out.Lease.ID, 0); rerr == nil {
				out.Lease = l
			}
		}
	case !out.Granted:
		ch = make(chan *waitResult, 1)
		if p := c.waiters[out.WaiterID]; p != nil {
			// Back with its ticket: this request takes up the place.
			if p.ch != nil {
				p.ch <- &waitResult{err: ErrSuperseded}
			} else {
				p.grace.Stop()
			}
			p.ch = ch
		} else {
			c.park(out.WaiterID, &parked{ch: ch, ticket: sreq.Ticket, noLease: sreq.NoLease, key: sreq.KeyID})
		}
	}
	b := c.collect()
	if err == nil && out.Resumed && b == nil {
		// The lease (or the waiter) may be so recent that its batch is not
		// committed yet: answer once everything decided so far is.
		b = c.syncPoint()
	}
	c.mu.Unlock()
	if err != nil {
		if errors.As(err, new(*sema.LockedError)) {
			c.met.refusals.Inc()
		}
		return Grant{}, lockedErr(err)
	}
	if out.Granted {
		if b != nil {
			if err := wait(b); err != nil {
				return Grant{}, err
			}
		}
		return Grant{Lease: out.Lease, Limits: out.Limits}, nil
	}

	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	var r *waitResult
	select {
	case r = <-ch:
	case <-timer.C:
		return c.giveUp(ctx, out.WaiterID, ch, sreq, start, true)
	case <-ctx.Done():
		return c.giveUp(ctx, out.WaiterID, ch, sreq, start, false)
	case <-revoked(ctx):
		// The key was revoked while it waited: it leaves the line as if
		// its caller had gone.
		rctx, cancel := context.WithCancelCause(ctx)
		cancel(auth.ErrRevoked)
		return c.giveUp(rctx, out.WaiterID, ch, sreq, start, false)
	}
	return c.granted(ctx, r, sreq, start)
}

func (c *Coordinator) granted(ctx context.Context, r *waitResult, sreq sema.Request, start time.Time) (Grant, error) {
	if r.err != nil {
		return Grant{}, r.err
	}
	werr := wait(r.b)
	retried := c.handedOff(r.grant.Lease.ID, sreq)
	if werr != nil {
		return Grant{}, werr
	}
	r.grant.Waited = c.now().Sub(start)
	c.met.waitSeconds.Observe(r.grant.Waited.Seconds())
	if ctx.Err() != nil && retried {
		// A retry with the ticket was answered this lease: it is that
		// caller's now, neither released nor held as unclaimed.
		return Grant{}, ctx.Err()
	}
	if ctx.Err() != nil {
		// Nobody is there to use it: released, or, with a ticket, kept for
		// the grace in case its caller comes back for it.
		if sreq.Ticket != "" && !sreq.NoLease && c.cfg.WaiterGrace > 0 {
			c.mu.Lock()
			if c.failed == nil {
				c.holdUnclaimed(r.grant.Lease.ID)
				c.collect()
			}
			c.mu.Unlock()
		} else {
			_, _ = c.Release(context.WithoutCancel(ctx), r.grant.Lease.ID)
		}
		return Grant{}, ctx.Err()
	}
	return r.grant, nil
}

// handedOff forgets the hand-off of a lease granted to a request with
// sreq's ticket, and reports whether a retry with the ticket was answered
// the lease meanwhile.
func (c *Coordinator) handedOff(id uuid.UUID, sreq sema.Request) bool {
	if sreq.Ticket == "" || sreq.NoLease {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	retried := c.handoff[id]
	delete(c.handoff, id)
	return retried
}

// giveUp takes a waiter out of line after its time ran out or its caller
// left. If it was granted meanwhile, the grant stands (or is released if
// the caller left). A timed-out request gets one last non-waiting try,
// which also computes its Retry-After as Prefect would. A request with a
// ticket whose caller left stays in line, detached, for the waiter grace.
func (c *Coordinator) giveUp(ctx context.Context, waiter uint64, ch chan *waitResult, sreq sema.Request, start time.Time, timedOut bool) (Grant, error) {
	c.mu.Lock()
	if p := c.waiters[waiter]; p == nil || p.ch != ch {
		// Granted, failed or taken over just before we looked: the
		// answer is in ch.
		c.mu.Unlock()
		return c.granted(ctx, <-ch, sreq, start)
	}
	// A revoked key's request leaves at once: nobody can come back for its
	// place with that key.
	if !timedOut && sreq.Ticket != "" && c.cfg.WaiterGrace > 0 && c.failed == nil &&
		!errors.Is(context.Cause(ctx), auth.ErrRevoked) {
		c.detach(c.now(), waiter, c.waiters[waiter], sreq.Deadline)
		c.mu.Unlock()
		return Grant{}, ctx.Err()
	}
	if c.m.CancelWaiter(c.now(), waiter) {
		c.unpark(waiter)
		var err error
		var out sema.Outcome
		if ctx.Err() == nil && c.failed == nil {
			sreq.Wait = false
			now := c.now()
			out, err = c.m.Acquire(now, sreq)
			if err == nil && out.Granted && !out.Resumed && sreq.Ticket != "" && !sreq.NoLease {
				c.handoff[out.Lease.ID] = false
			}
			if le := (*sema.LockedError)(nil); errors.As(err, &le) {
				c.met.timeouts.Inc()
				c.recordRefusal(now, sema.ActTimedOut, le, sreq)
			}
		} else {
			err = ctx.Err()
			if err == nil {
				err = ErrUnavailable
			}
		}
		b := c.collect()
		c.mu.Unlock()
		if err != nil {
			if errors.As(err, new(*sema.LockedError)) {
				c.met.refusals.Inc()
			}
			return Grant{}, lockedErr(err)
		}
		return c.granted(ctx, &waitResult{grant: Grant{Lease: out.Lease, Limits: out.Limits}, b: b}, sreq, start)
	}
	c.mu.Unlock()
	// Granted or failed just before we looked: the answer is in ch.
	return c.granted(ctx, <-ch, sreq, start)
}

// IncrementRequest is a plain increment: slots taken without a lease id
// returned to the caller (Prefect's POST /v2/concurrency_limits/increment).
type IncrementRequest struct {
	Names []string
	Slots int
	Mode  sema.Mode
	// LeaseDuration is the anonymous lease's time to live in mode
	// concurrency; zero means the default.
	LeaseDuration time.Duration
	// Wait and Ticket are as in AcquireRequest.
	Wait   time.Duration
	Ticket string
}

// Increment takes slots as a plain increment does (see
// sema.PlainIncrement): in mode concurrency in an anonymous lease that a
// plain Decrement gives back, in mode rate_limit in no lease. It waits and
// fails as Acquire does, and returns the limits.
func (c *Coordinator) Increment(ctx context.Context, req IncrementRequest) ([]sema.LimitRef, error) {
	areq := AcquireRequest{Names: req.Names, Slots: req.Slots, Mode: req.Mode,
		LeaseDuration: req.LeaseDuration, Wait: req.Wait, Ticket: req.Ticket}
	areq.NoLease, areq.Anonymous = sema.PlainIncrement(req.Mode)
	g, err := c.Acquire(ctx, areq)
	if err != nil {
		return nil, err
	}
	return g.Limits, nil
}

// Release releases a lease. It reports whether the lease was held.
func (c *Coordinator) Release(ctx context.Context, id uuid.UUID) (bool, error) {
	var held bool
	err := c.do(func(m *sema.Machine, now time.Time) error {
		held = ownsLease(ctx, m, now, id) && m.Release(now, id)
		return nil
	})
	return held, err
}

// Renew extends a lease to now + d (d zero: the lease's own duration).
func (c *Coordinator) Renew(ctx context.Context, id uuid.UUID, d time.Duration) (sema.Lease, error) {
	if d != 0 {
		var err error
		if d, err = c.LeaseDuration(d); err != nil {
			return sema.Lease{}, err
		}
	}
	return doValue(c, func(m *sema.Machine, now time.Time) (sema.Lease, error) {
		if !ownsLease(ctx, m, now, id) {
			return sema.Lease{}, sema.ErrLeaseNotFound
		}
		return m.Renew(now, id, d)
	})
}

// Decrement gives back slots taken without a lease of the caller's (see
// sema.Machine.Decrement).
func (c *Coordinator) Decrement(ctx context.Context, names []string, slots int, occupancy float64) ([]sema.LimitRef, error) {
	if err := allow(ctx, auth.Acquire, names...); err != nil {
		return nil, err
	}
	return doValue(c, func(m *sema.Machine, now time.Time) ([]sema.LimitRef, error) {
		return m.Decrement(now, names, slots, occupancy)
	})
}

// Lease reads a live lease.
func (c *Coordinator) Lease(ctx context.Context, id uuid.UUID) (sema.Lease, []sema.LimitRef, error) {
	var l sema.Lease
	var refs []sema.LimitRef
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { l, refs, err = m.Lease(now, id) }); rerr != nil {
		return l, nil, rerr
	}
	return l, refs, err
}

// CancelTicket ends what a ticket names, for a caller that gave up (see
// sema.Machine.CancelTicket): its waiter leaves the line at once, rather
// than after the waiter grace, and a lease granted to it is released. A
// request still attached to the waiter is answered context.Canceled.
func (c *Coordinator) CancelTicket(ctx context.Context, ticket string) error {
	if why := sema.ValidateTicket(ticket); why != "" {
		return &sema.InvalidError{Field: "ticket", Detail: why}
	}
	return c.do(func(m *sema.Machine, now time.Time) error {
		if p := auth.FromContext(ctx); p != nil && !p.CanSome(auth.Admin) {
			if key, ok := m.TicketKey(ticket); ok && key != "" && key != p.KeyID {
				return nil // another key's ticket: as if it named nothing
			}
		}
		waiter, lease := m.CancelTicket(now, ticket)
		if p := c.waiters[waiter]; waiter != 0 && p != nil {
			c.unpark(waiter)
			if p.ch != nil {
				p.ch <- &waitResult{err: context.Canceled}
			} else {
				p.grace.Stop()
			}
		}
		if lease != uuid.Nil {
			c.claim(lease)
		}
		return nil
	})
}

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
	if held && !ownsLease(ctx, c.m, c.now(), id) {
		st, held = LeaseStatus{ID: id, State: LeaseNotFound}, false
	}
	if !held || timeout <= 0 {
		var b *batch
		if !held && st.State != LeaseNotFound {
			// Its end may not be durable yet: answered once it is.
			b = c.syncPoint()
		}
		c.mu.Unlock()
		if b != nil {
			if err := wait(b); err != nil {
				return LeaseStatus{}, err
			}
		}
		return st, nil
	}
	defer watch(c, c.leaseWatch, id, w)()
	c.mu.Unlock()
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
	return doValue(c, func(m *sema.Machine, now time.Time) (sema.Lease, error) {
		return m.RevokeLease(now, id, reason)
	})
}
