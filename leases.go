package allot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// releaseTimeout bounds the release Concurrency does on its way out, which
// must happen even when the caller's context is already done.
const releaseTimeout = 30 * time.Second

// Identity says who holds a lease or waits for one.
type Identity struct {
	// Kind is "process", "task_run", "flow_run" or "deployment".
	Kind string `json:"type"`
	// ID identifies the holder among those of its kind.
	ID string `json:"id"`
	// Metadata is free-form labels of the holder.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// LimitRef is a limit a request named that exists.
type LimitRef struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Limit int    `json:"limit"`
}

// Lease is slots held on one or more limits. Acquire starts renewing it in
// the background; Release gives the slots back and stops the renewals.
//
// A lease whose limits do not exist (outside strict mode) holds nothing: it
// has no ID, its Limits are empty, and Release only ends it.
type Lease struct {
	c      *Client
	id     string
	limits []LimitRef
	fence  uint64
	dur    time.Duration
	strict bool
	onLost func(error)

	stop    context.CancelFunc // ends keepAlive; nil if it never ran
	exited  chan struct{}      // closed when keepAlive has returned
	unwatch context.CancelFunc // ends the watch; nil if it never ran
	watched chan struct{}      // closed when the watch has returned

	mu        sync.Mutex
	renewedAt time.Time // when the last successful renewal (or the acquisition) was sent
	expires   time.Time // renewedAt + dur: the lease may be gone after this
	released  bool
	err       error // why the lease ended; nil while held
	done      chan struct{}
}

// ID returns the lease's id, or "" for a lease that holds nothing.
func (l *Lease) ID() string { return l.id }

// Limits returns the limits the lease holds slots of: the named limits that
// exist (inactive ones included).
func (l *Lease) Limits() []LimitRef { return append([]LimitRef(nil), l.limits...) }

// FencingToken returns the lease's fencing token: a number that grows with
// every grant, across all limits and server restarts. A resource that
// remembers the highest token it has accepted can refuse a holder whose
// lease lapsed and whose slots went to someone else. It is 0 for a lease
// that holds nothing.
func (l *Lease) FencingToken() uint64 { return l.fence }

// ExpiresAt returns when the lease expires unless it is renewed again, by
// this machine's clock. It is an estimate on the safe side: the request
// that granted or last renewed the lease was sent before the server acted
// on it, so the server's own expiry is never earlier.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expires
}

// Done returns a channel that is closed when the lease ends: it was
// released, or lost. Err says which.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns nil while the lease is held; ErrReleased after Release; and
// an error that matches ErrLeaseLost, and says why, once the lease is lost.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Renew extends the lease now to the lease duration from now; the
// background renewals carry on from there. A lease the server no longer
// has is lost: Renew returns an error matching ErrLeaseLost.
func (l *Lease) Renew(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return err
	}
	if l.id == "" {
		return nil
	}
	err := l.renew(ctx)
	if errors.Is(err, ErrLeaseNotFound) {
		l.lose(err)
		return l.Err()
	}
	return err
}

// Release gives the slots back and stops the renewals. It is safe to call
// more than once and after the lease was lost; only the first call does
// anything. If the server cannot be reached the slots come back when the
// lease expires.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	gone := errors.Is(l.err, ErrLeaseNotFound)
	l.mu.Unlock()
	if l.stop != nil {
		l.stop()
		<-l.exited
	}
	var err error
	if l.id != "" && !gone {
		err = l.c.release(ctx, l.id)
	}
	if l.unwatch != nil {
		if err == nil {
			// The server answers the watch "released" the moment the
			// release is committed: let it, so that its connection is
			// kept for the next request rather than cut.
			t := time.NewTimer(watchLinger)
			select {
			case <-l.watched:
			case <-t.C:
			}
			t.Stop()
		}
		l.unwatch()
		<-l.watched
	}
	l.end(ErrReleased)
	return err
}

// watchLinger bounds how long Release waits for the watch to hear of the
// release before it cuts it.
const watchLinger = time.Second

// halt stops the renewals and the watch and waits until they returned.
func (l *Lease) halt() {
	if l.stop != nil {
		l.stop()
		<-l.exited
	}
	if l.unwatch != nil {
		l.unwatch()
		<-l.watched
	}
}

// end ends the lease with err, unless it already ended.
func (l *Lease) end(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false
	}
	l.err = err
	close(l.done)
	return true
}

// lose ends the lease as lost, cancelling Concurrency's function, and
// stops the renewals and the watch.
func (l *Lease) lose(cause error) {
	err := fmt.Errorf("%w: %w", ErrLeaseLost, cause)
	if !l.end(err) {
		return
	}
	if l.stop != nil {
		l.stop()
		l.unwatch()
	}
	l.c.log.Warn("allot: lease lost; its slots may be held by others now", "lease_id", l.id, "err", cause)
	if l.onLost != nil {
		l.onLost(err)
	}
}

// renew sends one renewal (with the Client's retries), giving up when the
// lease would have expired anyway.
func (l *Lease) renew(ctx context.Context) error {
	ctx, cancel := context.WithDeadline(ctx, l.ExpiresAt())
	defer cancel()
	sent := time.Now()
	err := l.c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/leases/" + l.id + "/renew",
		body:   jsonBody(renewBody{LeaseDuration: l.dur.Seconds()}),
		accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.id, err)
	}
	l.mu.Lock()
	if sent.After(l.renewedAt) {
		l.renewedAt, l.expires = sent, sent.Add(l.dur)
	}
	l.mu.Unlock()
	return nil
}

type renewBody struct {
	LeaseDuration float64 `json:"lease_duration"`
}

// keepAlive renews the lease every third of its duration until ctx is
// done. A failed renewal is tried again a third later, so two can fail
// before the lease expires. The lease is lost when the server no longer has
// it (410), when it expires unrenewed, or in strict mode when a renewal
// fails.
func (l *Lease) keepAlive(ctx context.Context) {
	interval := l.dur / 3
	failures := 0
	var lastErr error
	for {
		l.mu.Lock()
		base, expires := l.renewedAt, l.expires
		l.mu.Unlock()
		next := base.Add(time.Duration(failures+1) * interval)
		if expires.Sub(next) < interval/2 {
			// Too late for another try: the lease is lost at its expiry,
			// unless Renew succeeds meanwhile.
			if !sleep(ctx, time.Until(expires)) {
				return
			}
			if l.ExpiresAt().After(time.Now()) {
				failures = 0
				continue
			}
			l.lose(fmt.Errorf("not renewed before it expired: %w", lastErr))
			return
		}
		if !sleep(ctx, time.Until(next)) {
			return
		}
		err := l.renew(ctx)
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLeaseNotFound) || l.strict:
			l.lose(err)
			return
		default:
			failures++
			lastErr = err
			l.c.log.Warn("allot: lease renewal failed; will try again", "lease_id", l.id,
				"expires", l.ExpiresAt(), "err", err)
		}
	}
}

// start begins the background renewals and the watch: one long poll the
// server answers the moment the lease ends, so that a revoked or expired
// lease is lost at once rather than at the next renewal.
func (l *Lease) start() {
	ctx, cancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithCancel(context.Background())
	l.stop, l.unwatch = cancel, wcancel
	l.exited, l.watched = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.exited)
		l.keepAlive(ctx)
	}()
	go func() {
		defer close(l.watched)
		ended := l.c.watchLease(wctx, l.id)
		if ended == nil {
			return
		}
		l.mu.Lock()
		ours := l.released && ended.State == leaseReleased
		l.mu.Unlock()
		if !ours {
			l.lose(ended)
		}
	}()
}

// release is POST /decrement-with-lease.
func (c *Client) release(ctx context.Context, id string) error {
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/decrement-with-lease",
		body:   jsonBody(map[string]string{"lease_id": id}),
		accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("release lease %s: %w", id, err)
	}
	return nil
}

// modeRateLimit is the mode of an increment that takes rate-limit slots (a
// test checks it against the server's).
const modeRateLimit = "rate_limit"

// acquireBody is the body of increment and increment-with-lease.
type acquireBody struct {
	Names          []string  `json:"names"`
	Slots          int       `json:"slots"`
	Mode           string    `json:"mode,omitempty"`
	LeaseDuration  float64   `json:"lease_duration,omitempty"`
	Holder         *Identity `json:"holder,omitempty"`
	TimeoutSeconds float64   `json:"timeout_seconds,omitempty"`
	// Ticket is the idempotency key of the acquisition: a retry after a
	// lost answer gets the lease granted, a reconnection its place in
	// line.
	Ticket string `json:"ticket,omitempty"`
}

// grant is the answer of increment-with-lease.
type grant struct {
	LeaseID       string     `json:"lease_id"`
	Limits        []LimitRef `json:"limits"`
	FencingToken  uint64     `json:"fencing_token"`
	WaitedSeconds float64    `json:"waited_seconds"`
}

// Acquire takes Occupy slots (default 1) of every named limit, all at once
// or none, and returns the lease that holds them. If they are not free it
// waits in line, first in first out, until they are granted, Timeout
// passes (an error matching ErrTimeout) or ctx is done. The server answers
// the moment the slots are granted; nothing polls.
//
// The lease is renewed in the background at a third of its LeaseDuration
// until Release, and watched: Done closes if it is lost, within about a
// second of the server revoking or expiring it. Always call Release: until then
// the lease is renewed, by a goroutine of its own, for ever. If none of the named limits
// exist, Acquire logs a warning and returns a lease that holds nothing, or
// with Strict fails with ErrLimitNotFound. No names at all is a lease that
// holds nothing, without a request.
func (c *Client) Acquire(ctx context.Context, names []string, opts ...Option) (*Lease, error) {
	s, err := newSettings(opts)
	if err != nil {
		return nil, fmt.Errorf("acquire %q: %w", names, err)
	}
	return c.acquire(ctx, names, s, false, nil)
}

// TryAcquire is Acquire without waiting: if the slots are not free now it
// fails at once with a *LockedError (matching ErrLocked) that says when to
// try again. Timeout and MaxRetries do not apply. If its answer is lost to
// a connection error (after the client's retries), it cancels its ticket,
// so that a lease the server may have granted it is released at once.
func (c *Client) TryAcquire(ctx context.Context, names []string, opts ...Option) (*Lease, error) {
	s, err := newSettings(opts)
	if err != nil {
		return nil, fmt.Errorf("acquire %q: %w", names, err)
	}
	return c.acquire(ctx, names, s, true, nil)
}

func (c *Client) acquire(ctx context.Context, names []string, s settings, try bool, onLost func(error)) (*Lease, error) {
	op := fmt.Sprintf("acquire %q", names)
	l := &Lease{c: c, dur: s.leaseDuration, strict: s.strict, onLost: onLost, done: make(chan struct{})}
	if len(names) == 0 {
		return l, nil
	}
	holder := c.holder
	if s.holder != nil {
		holder = *s.holder
	}
	var (
		g    grant
		sent time.Time
	)
	ticket := newTicket()
	err := c.waitInLine(ctx, op, s, try, ticket, func(ctx context.Context, hold func() time.Duration) error {
		sent = time.Now()
		return c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/increment-with-lease",
			body: func() (any, time.Duration) {
				h := hold()
				return acquireBody{Names: names, Slots: s.slots, LeaseDuration: s.leaseDuration.Seconds(),
					Holder: &holder, TimeoutSeconds: h.Seconds(), Ticket: ticket}, h
			},
			accept: []int{http.StatusOK}}, &g)
	})
	if err != nil {
		return nil, err
	}
	if len(g.Limits) == 0 {
		// Nothing is held; give the empty lease back rather than leave it
		// to expire.
		if g.LeaseID != "" {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			if err := c.release(rctx, g.LeaseID); err != nil {
				c.log.Debug("allot: release of an empty lease failed", "lease_id", g.LeaseID, "err", err)
			}
			cancel()
		}
		if err := c.missing(op, names, s.strict); err != nil {
			return nil, err
		}
		return l, nil
	}
	l.id, l.limits, l.fence = g.LeaseID, g.Limits, g.FencingToken
	l.renewedAt = sent.Add(time.Duration(g.WaitedSeconds * float64(time.Second)))
	l.expires = l.renewedAt.Add(l.dur)
	l.start()
	return l, nil
}

// missing handles an acquisition none of whose limits exist, as Prefect
// does: an error in strict mode, a warning otherwise.
func (c *Client) missing(op string, names []string, strict bool) error {
	if strict {
		return fmt.Errorf("%s: concurrency limits %q must be created before acquiring slots: %w", op, names, ErrLimitNotFound)
	}
	c.log.Warn(fmt.Sprintf("allot: concurrency limits %q do not exist - skipping acquisition", names), "names", names)
	return nil
}

// waitInLine calls send until it is granted (nil), fails with anything but
// a 423, or time runs out. send passes hold, called per attempt, to the
// server as timeout_seconds: the time the request may stand in line.
// A server that answers 423 at once (one that does not let requests wait)
// is asked again after its Retry-After. A server that cannot be reached
// (a restart, a dropped connection: see transient) is asked again, with
// jittered backoff, until it answers or time runs out; send carries the
// same ticket every time, so the request takes up its place in line again.
// When it gives up (ctx done, time out), it cancels the ticket, so that its
// place is not kept for a caller that is gone. A try (no waiting) whose
// answer was lost to a connection error after its retries cancels it too:
// the server may have granted it a lease that nobody will use.
func (c *Client) waitInLine(ctx context.Context, op string, s settings, try bool, ticket string,
	send func(ctx context.Context, hold func() time.Duration) error) (err error) {
	defer func() {
		if err != nil && ticket != "" && (ctx.Err() != nil || errors.Is(err, ErrTimeout) ||
			errors.Is(err, context.DeadlineExceeded) || transient(err)) {
			c.cancelTicket(ctx, ticket)
		}
	}()
	var deadline time.Time
	if s.hasTimeout {
		deadline = time.Now().Add(s.timeout)
	}
	hold := func() time.Duration {
		if try {
			return 0
		}
		h := c.longPoll
		if !deadline.IsZero() {
			h = min(h, time.Until(deadline))
		}
		if d, ok := ctx.Deadline(); ok {
			h = min(h, time.Until(d))
		}
		return max(h, 0)
	}
	reconnects := 0
	for retries := 0; ; retries++ {
		start := time.Now()
		asked := hold()
		err := send(ctx, hold)
		if err != nil && !try && transient(err) {
			now := time.Now()
			switch d, ok := ctx.Deadline(); {
			case ctx.Err() != nil:
				return fmt.Errorf("%s: %w", op, context.Cause(ctx))
			case ok && !now.Before(d):
				return fmt.Errorf("%s: %w: %w", op, context.DeadlineExceeded, err)
			case !deadline.IsZero() && !now.Before(deadline):
				return fmt.Errorf("%s: %w after %s: %w", op, ErrTimeout, s.timeout, err)
			}
			reconnects++
			pause := c.reconnectPause(reconnects, deadline)
			c.log.Warn("allot: server unreachable while waiting in line; reconnecting to keep the place",
				"op", op, "reconnect", reconnects, "pause", pause, "err", err)
			if !sleep(ctx, pause) {
				return fmt.Errorf("%s: %w", op, context.Cause(ctx))
			}
			retries--
			continue
		}
		reconnects = 0
		var le *LockedError
		if !errors.As(err, &le) {
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		}
		now := time.Now()
		switch d, ok := ctx.Deadline(); {
		case try:
			return fmt.Errorf("%s: %w", op, err)
		case ctx.Err() != nil:
			return fmt.Errorf("%s: %w", op, context.Cause(ctx))
		case ok && !now.Before(d):
			return fmt.Errorf("%s: %w: %w", op, context.DeadlineExceeded, err)
		case !deadline.IsZero() && !now.Before(deadline):
			return fmt.Errorf("%s: %w after %s: %w", op, ErrTimeout, s.timeout, err)
		case s.maxRetries >= 0 && retries >= s.maxRetries:
			return fmt.Errorf("%s: gave up after %d retries: %w", op, retries, err)
		}
		if now.Sub(start) < asked/2 || asked == 0 {
			// Not kept in line: wait as the server says.
			pause := max(le.RetryAfter, 10*time.Millisecond)
			if !deadline.IsZero() {
				pause = min(pause, time.Until(deadline))
			}
			if !sleep(ctx, pause) {
				return fmt.Errorf("%s: %w", op, context.Cause(ctx))
			}
		}
	}
}

// cancelTicket tells the server, in one try, that the acquisition with
// ticket was given up: its place in line is let go at once and a lease
// granted to it meanwhile is released. If the server cannot be reached,
// its waiter grace does the same a few seconds later.
func (c *Client) cancelTicket(ctx context.Context, ticket string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTicketTimeout)
	defer cancel()
	_, err := c.attempt(ctx, request{method: http.MethodDelete, path: limitsPrefix + "/tickets/" + url.PathEscape(ticket),
		accept: []int{http.StatusNoContent, http.StatusOK}}, rand.Text())
	if err != nil {
		c.log.Debug("allot: cancel of a given-up acquisition failed; the server lets its place go after its grace",
			"ticket", ticket, "err", err)
	}
}

// cancelTicketTimeout bounds the cancellation of a given-up acquisition.
const cancelTicketTimeout = 2 * time.Second

// leaseKey is the context key of the lease Concurrency holds.
type leaseKey struct{}

// LeaseFrom returns the lease held for the function Concurrency runs with
// ctx, or nil.
func LeaseFrom(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseKey{}).(*Lease)
	return l
}

// Concurrency runs fn while holding Occupy slots (default 1) of every named
// limit. It acquires them as Acquire does (waiting in line), renews the
// lease in the background while fn runs, and releases it when fn returns
// or panics. LeaseFrom(ctx) inside fn returns the lease, for its fencing
// token.
//
// If the lease is lost while fn runs (the server no longer has it, or it
// could not be renewed in time), fn's context is cancelled with a cause
// matching ErrLeaseLost, and Concurrency returns an error that matches
// ErrLeaseLost, joined with fn's own error unless that is just the
// cancellation. Otherwise it returns fn's error, or the release's.
func (c *Client) Concurrency(ctx context.Context, names []string, fn func(ctx context.Context) error, opts ...Option) (err error) {
	s, err := newSettings(opts)
	if err != nil {
		return fmt.Errorf("concurrency %q: %w", names, err)
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l, err := c.acquire(ctx, names, s, false, cancel)
	if err != nil {
		return err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		lost := l.Err() // before Release replaces nil with ErrReleased
		rerr := l.Release(rctx)
		err = outcome(names, err, lost, rerr)
	}()
	return fn(context.WithValue(fctx, leaseKey{}, l))
}

// outcome is Concurrency's error from fn's, the lease's and the release's.
func outcome(names []string, fnErr, lost, relErr error) error {
	if lost == nil && relErr == nil {
		return fnErr
	}
	var errs []error
	if lost != nil {
		errs = append(errs, fmt.Errorf("concurrency %q: %w", names, lost))
		if errors.Is(fnErr, context.Canceled) || errors.Is(fnErr, ErrLeaseLost) {
			fnErr = nil
		}
	}
	if fnErr != nil {
		errs = append(errs, fnErr)
	}
	if relErr != nil && lost == nil {
		errs = append(errs, fmt.Errorf("concurrency %q: %w", names, relErr))
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// RateLimit takes Occupy slots (default 1) of every named rate limit (a
// limit with slot_decay_per_second), all at once, as Prefect's rate_limit
// does: the slots are never given back but decay, so calls are admitted at
// the limits' rate. It waits in line until admitted, Timeout passes or ctx
// is done. A limit without decay fails at once (ErrInvalid, code
// "no_decay"). Missing limits are handled as by Acquire.
func (c *Client) RateLimit(ctx context.Context, names []string, opts ...Option) error {
	s, err := newSettings(opts)
	op := fmt.Sprintf("rate limit %q", names)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(names) == 0 {
		return nil
	}
	var refs []LimitRef
	ticket := newTicket()
	err = c.waitInLine(ctx, op, s, false, ticket, func(ctx context.Context, hold func() time.Duration) error {
		return c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/increment",
			body: func() (any, time.Duration) {
				h := hold()
				return acquireBody{Names: names, Slots: s.slots, Mode: modeRateLimit, TimeoutSeconds: h.Seconds(), Ticket: ticket}, h
			},
			accept: []int{http.StatusOK}}, &refs)
	})
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return c.missing(op, names, s.strict)
	}
	return nil
}

// The calls below act on a lease known only by its id, for programs
// that hand a lease from one process to another (the allot acquire, renew
// and release commands): a Lease of this process can stop renewing itself
// (Detach), and another process can renew or release it by id.

// Detach stops the background renewals of the lease without releasing it:
// the slots stay held until the lease expires, unless RenewLease extends it
// or ReleaseLease gives it back. It returns once the renewals have stopped.
// Release still works afterwards. It does nothing to a lease that has ended.
func (l *Lease) Detach() {
	l.halt()
}

// RenewLease extends the lease id to d from now; d zero keeps the
// duration it was granted with. A lease the server no longer has (it
// expired or was released) is an error matching ErrLeaseNotFound.
func (c *Client) RenewLease(ctx context.Context, id string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("renew lease %s: %w: lease duration %s must not be negative", id, ErrInvalid, d)
	}
	var body any = struct{}{}
	if d > 0 {
		body = renewBody{LeaseDuration: d.Seconds()}
	}
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/leases/" + url.PathEscape(id) + "/renew",
		body: jsonBody(body), accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", id, err)
	}
	return nil
}

// ReleaseLease gives back the slots of the lease id. As in Prefect, a
// lease the server does not have (expired, or released before) is not an
// error.
func (c *Client) ReleaseLease(ctx context.Context, id string) error {
	return c.release(ctx, id)
}

// RevokeLease takes a lease away from its holder, as an operator (an allot
// extension): its slots go to the next waiters at once, its holder's watch
// hears it within about a second (an SDK Lease is lost, allot run stops its
// command), and a run that held it is Crashed with reason (empty: "revoked
// by an operator"). A lease that is not held is an error matching
// ErrLeaseNotFound.
func (c *Client) RevokeLease(ctx context.Context, id, reason string) error {
	body := map[string]string{}
	if reason != "" {
		body["reason"] = reason
	}
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/leases/" + url.PathEscape(id) + "/revoke",
		body: jsonBody(body), accept: []int{http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("revoke lease %s: %w", id, err)
	}
	return nil
}

// watchPoll is how long one lease watch may stay open before it is sent
// again (the server allows 300 s).
const watchPoll = 60 * time.Second

// LeaseEndedError says how the server ended a lease that its holder did
// not release: an operator revoked it (or reset its limit), it expired, it
// was released by someone else, or its run ended. The error of a lost lease
// (Lease.Err, and the cause of the contexts of Concurrency, RunTask and
// RunFlow) matches ErrLeaseLost and, when the lease watch told of the loss,
// wraps one of these (errors.As).
type LeaseEndedError struct {
	LeaseID string
	// State is "revoked", "expired", "released" or "not_found" (the server
	// no longer has the lease and no longer remembers how it ended).
	State string
	// Reason is the server's reason: the operator's, "slot revoked by
	// reset", "lease expired: no heartbeat for 60s", …
	Reason string
}

func (e *LeaseEndedError) Error() string {
	s := "lease " + e.LeaseID
	switch e.State {
	case leaseRevoked:
		s += " was revoked"
	case leaseExpired:
		s += " expired"
	case leaseReleased:
		s += " was released by someone else"
	default:
		s += " is no longer held by the server"
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// The states of a lease the watch answers, as the server names them (a
// test checks them against the server's).
const (
	leaseHeld     = "held"
	leaseReleased = "released"
	leaseExpired  = "expired"
	leaseRevoked  = "revoked"
	leaseNotFound = "not_found"
)

// leaseStatus is the answer of the lease watch.
type leaseStatus struct {
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// watchLease keeps one long poll open on the server's watch of lease id
// until ctx is done, and returns a *LeaseEndedError the moment the server
// says the lease ended. It returns nil when ctx is done first, or when the
// server has no watch (a Prefect server, or an older allot, answers 404):
// then the renewals alone find a loss. A failed watch is sent again after a
// backoff; it never decides by itself that the lease is lost.
func (c *Client) watchLease(ctx context.Context, id string) *LeaseEndedError {
	hold := min(c.longPoll, watchPoll)
	path := limitsPrefix + "/leases/" + url.PathEscape(id) + "/watch?timeout_seconds=" +
		strconv.FormatFloat(hold.Seconds(), 'f', -1, 64)
	for failures := 0; ; {
		var st leaseStatus
		err := c.do(ctx, request{method: http.MethodGet, path: path,
			body:   func() (any, time.Duration) { return nil, hold },
			accept: []int{http.StatusOK}}, &st)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && st.State == leaseHeld:
			failures = 0
		case err == nil:
			return &LeaseEndedError{LeaseID: id, State: st.State, Reason: st.Reason}
		case errors.Is(err, ErrNotFound):
			c.log.Debug("allot: the server has no lease watch; renewals alone will find a lost lease", "lease_id", id)
			return nil
		default:
			failures++
			c.log.Debug("allot: lease watch failed; will try again", "lease_id", id, "err", err)
			if !sleep(ctx, max(c.pause(failures), 200*time.Millisecond)) {
				return nil
			}
		}
	}
}
