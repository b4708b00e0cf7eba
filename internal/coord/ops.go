package coord

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// resolve finds a limit by id or by name. As Prefect does, a reference that
// parses as a UUID is an id.
func resolve(m *sema.Machine, now time.Time, ref string, d sema.Detail) (sema.LimitView, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return m.LimitByID(now, id, d)
	}
	return m.LimitByName(now, ref, d)
}

// CreateLimit creates a limit.
func (c *Coordinator) CreateLimit(ctx context.Context, s sema.LimitSpec) (sema.LimitView, error) {
	var v sema.LimitView
	err := c.do(func(m *sema.Machine, now time.Time) error {
		id, err := uuid.NewRandom()
		if err != nil {
			return err
		}
		if _, err := m.CreateLimit(now, id, s); err != nil {
			return err
		}
		v, err = m.LimitByID(now, id, sema.Full)
		return err
	})
	return v, err
}

// ReadLimit reads a limit by id or name.
func (c *Coordinator) ReadLimit(ctx context.Context, ref string, d sema.Detail) (sema.LimitView, error) {
	var v sema.LimitView
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { v, err = resolve(m, now, ref, d) }); rerr != nil {
		return v, rerr
	}
	return v, err
}

// ListLimits lists limits whose names start with prefix, by name.
func (c *Coordinator) ListLimits(ctx context.Context, prefix string, offset, n int, d sema.Detail) ([]sema.LimitView, error) {
	var out []sema.LimitView
	err := c.read(func(m *sema.Machine, now time.Time) { out = m.Limits(now, prefix, offset, n, d) })
	return out, err
}

// UpdateLimit changes a limit found by id or name.
func (c *Coordinator) UpdateLimit(ctx context.Context, ref string, p sema.LimitPatch) (sema.LimitView, error) {
	var v sema.LimitView
	err := c.do(func(m *sema.Machine, now time.Time) error {
		cur, err := resolve(m, now, ref, sema.Summary)
		if err != nil {
			return err
		}
		if _, err := m.UpdateLimit(now, cur.ID, p); err != nil {
			return err
		}
		v, err = m.LimitByID(now, cur.ID, sema.Full)
		return err
	})
	return v, err
}

// DeleteLimit deletes a limit found by id or name.
func (c *Coordinator) DeleteLimit(ctx context.Context, ref string) (sema.LimitView, error) {
	var v sema.LimitView
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		v, err = resolve(m, now, ref, sema.Summary)
		if err != nil {
			return err
		}
		return m.DeleteLimit(now, v.ID)
	})
	return v, err
}

// DeleteMatching deletes the limits that d selects and returns how many
// it matched.
func (c *Coordinator) DeleteMatching(ctx context.Context, d sema.DeleteMatch) (int, error) {
	var n int
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		n, err = m.DeleteMatching(now, d)
		return err
	})
	return n, err
}

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
	d, err := c.LeaseDuration(req.LeaseDuration)
	if err != nil {
		return Grant{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Grant{}, err
	}
	sreq := sema.Request{Names: req.Names, Slots: req.Slots, Mode: req.Mode, LeaseID: id, LeaseDuration: d,
		Holder: req.Holder, NoLease: req.NoLease, Anonymous: req.Anonymous, Wait: req.Wait > 0, Ticket: req.Ticket}

	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return Grant{}, ErrUnavailable
	}
	start := c.now()
	if req.Wait > 0 && req.Ticket != "" {
		sreq.Deadline = start.Add(req.Wait)
	}
	out, err := c.m.Acquire(start, sreq)
	// A pointer, so that each parked request keeps one word of buffer
	// rather than a whole result.
	var ch chan *waitResult
	switch {
	case err != nil:
	case out.Granted && out.Resumed:
		c.claim(out.Lease.ID)
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
			c.waiters[out.WaiterID] = &parked{ch: ch, ticket: sreq.Ticket, noLease: sreq.NoLease}
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
	}
	return c.granted(ctx, r, sreq, start)
}

func (c *Coordinator) granted(ctx context.Context, r *waitResult, sreq sema.Request, start time.Time) (Grant, error) {
	if r.err != nil {
		return Grant{}, r.err
	}
	if err := wait(r.b); err != nil {
		return Grant{}, err
	}
	r.grant.Waited = c.now().Sub(start)
	c.met.waitSeconds.Observe(r.grant.Waited.Seconds())
	if ctx.Err() != nil {
		// Nobody is there to use it: released, or, with a ticket, kept for
		// the grace in case its caller comes back for it.
		if sreq.Ticket != "" && !sreq.NoLease && c.cfg.WaiterGrace > 0 {
			c.mu.Lock()
			if c.failed == nil {
				c.holdUnclaimed(r.grant.Lease.ID)
			}
			c.mu.Unlock()
		} else {
			_, _ = c.Release(context.WithoutCancel(ctx), r.grant.Lease.ID)
		}
		return Grant{}, ctx.Err()
	}
	return r.grant, nil
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
	if !timedOut && sreq.Ticket != "" && c.cfg.WaiterGrace > 0 && c.failed == nil {
		c.detach(c.now(), waiter, c.waiters[waiter], sreq.Deadline)
		c.mu.Unlock()
		return Grant{}, ctx.Err()
	}
	if c.m.CancelWaiter(c.now(), waiter) {
		delete(c.waiters, waiter)
		var err error
		var out sema.Outcome
		if ctx.Err() == nil && c.failed == nil {
			sreq.Wait = false
			out, err = c.m.Acquire(c.now(), sreq)
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
		held = m.Release(now, id)
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
	var l sema.Lease
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		l, err = m.Renew(now, id, d)
		return err
	})
	return l, err
}

// Decrement gives back slots taken without a lease of the caller's (see
// sema.Machine.Decrement).
func (c *Coordinator) Decrement(ctx context.Context, names []string, slots int, occupancy float64) ([]sema.LimitRef, error) {
	var out []sema.LimitRef
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		out, err = m.Decrement(now, names, slots, occupancy)
		return err
	})
	return out, err
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
		waiter, lease := m.CancelTicket(now, ticket)
		if p := c.waiters[waiter]; waiter != 0 && p != nil {
			delete(c.waiters, waiter)
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
