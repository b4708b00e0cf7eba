package coord

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// Authorisation by name lives here, in one place: the transports put the
// request's principal in its context (auth.NewContext) after checking what
// a route needs before any name is known (a key with some acquire scope,
// say); the coordinator's methods, which know the names a command touches
// (from the request, or by looking an id up), call the helpers below.
// Without a principal (authentication off) every check passes.
//
//   - acquire:<glob> on every limit an acquisition, decrement or v1
//     increment names (all or nothing, like the acquisition); a template
//     that makes resource:42 on first use needs acquire on resource:42
//     only;
//   - acquire on every limited tag or label of a run, and on its limits,
//     to create it, change its state or send its heartbeat;
//   - manage:<glob> on the limit a create, update, delete or reset names
//     (resolved from an id when the request gives one);
//   - a request waiting in line leaves it when its key is revoked;
//   - a lease is bound to the key that took it: another key's renew,
//     release or watch finds no such lease (ErrLeaseNotFound), as if it
//     did not exist; an admin key may act on any lease.

// revoked is closed when ctx's key is revoked; nil (never) without one.
// Only the slow path of a request, the wait in line, listens to it.
func revoked(ctx context.Context) <-chan struct{} {
	if p := auth.FromContext(ctx); p != nil {
		return p.Done()
	}
	return nil
}

// tagNames are the limit names of tags or labels.
func tagNames(kind sema.RunKind, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = kind.LimitPrefix() + k
	}
	return out
}

// allow checks ctx's principal for a on names.
func allow(ctx context.Context, a auth.Action, names ...string) error {
	return auth.Check(ctx, a, names...)
}

// owns reports whether ctx's principal may act on l: no principal, the
// key that took it, an admin, or a lease taken with authentication off.
func owns(ctx context.Context, l sema.Lease) bool {
	p := auth.FromContext(ctx)
	return p == nil || l.KeyID == "" || l.KeyID == p.KeyID || p.CanSome(auth.Admin)
}

// ownsLease is owns for a lease by id; it must be called with mu held. A
// lease that is not held is owned (its caller finds it missing).
func ownsLease(ctx context.Context, m *sema.Machine, now time.Time, id uuid.UUID) bool {
	if auth.FromContext(ctx) == nil {
		return true
	}
	l, _, err := m.Lease(now, id)
	return err != nil || owns(ctx, l)
}

// quotaRetry is the Retry-After of a refusal for a key's held leases or
// waiting requests: they end at their holders' pace, so a second is a
// guess, not a promise.
const quotaRetry = time.Second

// checkKeyQuota refuses a request of a key that holds KeyMaxLeases leases
// or has KeyMaxWaiting requests in line; it must be called with mu held.
// A request whose ticket names a waiter or lease of its own key passes: it
// comes back for what is already counted.
func (c *Coordinator) checkKeyQuota(req sema.Request) error {
	if req.KeyID == "" {
		return nil
	}
	if req.Ticket != "" {
		if key, ok := c.m.TicketKey(req.Ticket); ok && key == req.KeyID {
			// Back for its own place or lease: it adds nothing.
			return nil
		}
	}
	if n := c.cfg.KeyMaxLeases; n > 0 && !req.NoLease && c.m.KeyLeases(req.KeyID) >= n {
		return &auth.QuotaError{KeyID: req.KeyID, What: "held leases", RetryAfter: quotaRetry}
	}
	if n := c.cfg.KeyMaxWaiting; n > 0 && req.Wait && c.keyWaiting[req.KeyID] >= n {
		return &auth.QuotaError{KeyID: req.KeyID, What: "waiting requests", RetryAfter: quotaRetry}
	}
	return nil
}

// park puts a waiter in c.waiters and counts it for its key; it must be
// called with mu held.
func (c *Coordinator) park(waiter uint64, p *parked) {
	c.waiters[waiter] = p
	if p.key != "" {
		c.keyWaiting[p.key]++
	}
}

// unpark forgets a waiter that left the line (granted, failed, gave up);
// it must be called with mu held.
func (c *Coordinator) unpark(waiter uint64) {
	p, ok := c.waiters[waiter]
	if !ok {
		return
	}
	delete(c.waiters, waiter)
	if p.key == "" {
		return
	}
	if n := c.keyWaiting[p.key] - 1; n > 0 {
		c.keyWaiting[p.key] = n
	} else {
		delete(c.keyWaiting, p.key)
	}
}

// allowRunID is allowRun for an existing run (a change of its state, a
// heartbeat); a run that does not exist passes (its caller finds it
// missing).
func allowRunID(ctx context.Context, m *sema.Machine, now time.Time, id uuid.UUID) error {
	if auth.FromContext(ctx) == nil {
		return nil
	}
	r, err := m.Run(id)
	if err != nil {
		return nil
	}
	return allowRun(ctx, m, now, sema.RunSpec{Kind: r.Kind, Tags: r.Tags, Limits: r.Limits})
}

// allowRun checks acquire on the limited tags (or labels) of a run and on
// its limits; it must be called with mu held.
func allowRun(ctx context.Context, m *sema.Machine, now time.Time, s sema.RunSpec) error {
	p := auth.FromContext(ctx)
	if p == nil {
		return nil
	}
	for _, t := range s.Tags {
		name := s.Kind.LimitPrefix() + t
		if _, err := m.LimitByName(now, name, sema.Summary); err == nil {
			if err := p.Check(auth.Acquire, name); err != nil {
				return err
			}
		}
	}
	return p.Check(auth.Acquire, s.Limits...)
}
