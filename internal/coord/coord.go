// Package coord is the coordinator between allot's transports and its state
// machine. It serialises commands into one sema.Machine, makes their effects
// durable through a store.Store before it answers (group commit: one writer
// commits everything that accumulated while the previous commit ran), parks
// waiting requests until sema grants them, and expires leases from a
// deadline timer rather than a scan. It also carries task runs and flow runs
// (whose Running state is a lease on their tags' limits) and Prefect's v1
// tag-limit operations, and wakes requests that wait for a run to change.
//
// Invariants: a grant, renewal or release is acknowledged only after the
// batch that carries it is committed, and batches are committed in the
// order sema recorded them, so what is on disk is always a state sema passed
// through. If a commit fails the coordinator stops answering (ErrUnavailable)
// and Run returns the error: memory is then ahead of disk, and the only safe
// recovery is a restart that reloads the store.
//
// Files, named as in sema, httpapi and the SDK: coord.go is the engine
// (Config, New, Run, the commit loop, the expiry timer, parked waiters,
// event dispatch, do and read); limits.go the limit operations (create,
// read, list, update, ensure, delete); leases.go acquire, the plain
// increment, release, renew, decrement, lease reads, ticket cancel, lease
// watches and revoke; taglimits.go Prefect's v1 tag limits and allot's
// label limits; runs.go task and flow runs and their watches; metrics.go the
// Prometheus metrics. Every rule about slots is sema's: these call it.
package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
)

// ErrUnavailable is returned when the coordinator cannot answer: it is
// stopped, or its store failed.
var ErrUnavailable = errors.New("coordinator unavailable")

// ErrSuperseded is the answer to a waiting request whose place in line
// another request with the same ticket took up (a client that reconnected
// while its first request still seemed connected).
var ErrSuperseded = errors.New("another request with this ticket took over this place in line")

// Config holds a Coordinator's settings.
type Config struct {
	Sema sema.Config
	// DefaultLeaseDuration is used when a request names none (Prefect: 300 s).
	DefaultLeaseDuration time.Duration
	// MinLeaseDuration and MaxLeaseDuration bound requested lease durations.
	MinLeaseDuration time.Duration
	MaxLeaseDuration time.Duration
	// SoftFlushInterval is how often Retry-After statistics are written.
	SoftFlushInterval time.Duration
	// V1LeaseDuration is the time to live of the leases that Prefect's v1
	// tag routes take (increment, and reset's slot_override). Their
	// clients cannot renew, so it is long (Prefect: 100 years); a holder
	// that never decrements loses its slot after it.
	V1LeaseDuration time.Duration
	// RunLeaseDuration is a run's lease duration when it names none
	// (Prefect's task engine: 60 s).
	RunLeaseDuration time.Duration
	// RunRetention is how long a run is kept after it reaches a final
	// state.
	RunRetention time.Duration
	// WaiterGrace is how long a waiting request with a ticket keeps its
	// place in line after its caller went away (its connection dropped),
	// so that the caller can come back with the ticket and take it up
	// again; and how long a lease granted meanwhile is kept for it before
	// it is released as unclaimed. A server restart gives the waiters it
	// restores the same grace. Negative: none (a waiter leaves the line
	// with its caller).
	WaiterGrace time.Duration
	// KeyMaxLeases and KeyMaxWaiting are each API key's quotas of held
	// leases and of requests waiting in line, checked when a request
	// arrives; zero: no quota. Requests without a key have none.
	KeyMaxLeases  int
	KeyMaxWaiting int
	// AuditRetention is how long audit records are kept (default 30
	// days).
	AuditRetention time.Duration
	Logger         *slog.Logger
	Metrics        *Metrics
	// Now is the clock the coordinator decides by; nil means time.Now. A
	// replica over PostgreSQL passes the database's clock (postgres.Term's
	// Now), so that the expiries it stores mean the same to its successor.
	Now func() time.Time
	// ActivityLimits is the number of limits whose recent history (an
	// hour by minute, the last 50 events) is kept: those last active or
	// viewed. About 8 KiB each (default 512).
	ActivityLimits int
}

// DefaultConfig returns the defaults: leases of 300 s by default, from 1 s
// to a day; v1 tag leases of an hour; run leases of 60 s; runs kept an hour
// after they end.
func DefaultConfig() Config {
	return Config{
		Sema:                 sema.DefaultConfig(),
		DefaultLeaseDuration: 300 * time.Second,
		MinLeaseDuration:     time.Second,
		MaxLeaseDuration:     24 * time.Hour,
		SoftFlushInterval:    time.Second,
		V1LeaseDuration:      time.Hour,
		RunLeaseDuration:     60 * time.Second,
		RunRetention:         time.Hour,
		WaiterGrace:          10 * time.Second,
		AuditRetention:       30 * 24 * time.Hour,
	}
}

// batch is a group of changes committed together; done closes when it is
// durable (or failed, with err set).
type batch struct {
	done chan struct{}
	err  error
}

type waitResult struct {
	grant Grant
	err   error
	b     *batch
}

// parked is a request in line: attached to the channel its caller waits
// on, or detached (ch nil) while its caller is away, until grace fires.
type parked struct {
	ch     chan *waitResult
	ticket string
	// noLease: a grant makes no lease to keep for the caller.
	noLease bool
	grace   *time.Timer
	// detached counts the times the waiter was detached: a grace timer
	// acts only if no later detach (or return) superseded it.
	detached uint64
	// key is the API key of the request, or "".
	key string
}

// Coordinator serves commands against one state machine and one store.
type Coordinator struct {
	cfg   Config
	log   *slog.Logger
	met   *Metrics
	st    store.Store
	now   func() time.Time
	kick  chan struct{} // a batch is waiting to be committed
	rearm chan struct{} // the next deadline moved earlier

	mu      sync.Mutex
	m       *sema.Machine
	pending []sema.Change
	spare   []sema.Change // a committed batch's slice, emptied, for the next
	open    *batch        // collects the changes in pending
	// inflight is the last batch handed to the store.
	inflight *batch
	waiters  map[uint64]*parked
	// unclaimed are the leases granted to detached waiters, each released
	// by its timer unless its caller comes back for it first.
	unclaimed map[uuid.UUID]*time.Timer
	// shorten are the leases just held unclaimed whose expiry collect
	// brings forward to the end of the grace.
	shorten []uuid.UUID
	// handoff are the leases granted to an attached waiter with a ticket
	// whose request has not yet answered: true once a retry with the
	// ticket was answered the lease (claim), so that the first request,
	// if its caller went away meanwhile, leaves the lease to the retry.
	handoff  map[uuid.UUID]bool
	deadline time.Time // what the reaper sleeps until; zero: nothing
	failed   error
	subs     map[chan sema.Event]struct{}
	notes    map[*notifier]struct{}      // Notify's subscribers
	runWatch map[uuid.UUID][]*runWatcher // WaitRun requests, by run
	// keyWaiting is the number of waiters of each API key.
	keyWaiting map[string]int
	// WatchLease requests by lease, and the leases that ended lately:
	// endedOrder is a ring of endedMemory ids, endedNext its oldest.
	leaseWatch map[uuid.UUID][]*leaseWatcher
	ended      map[uuid.UUID]LeaseStatus
	endedOrder []uuid.UUID
	endedNext  int
	act        *sema.Activity // recent history of limits, for the web UI
}

// New loads st into a new Coordinator. Call Run to start committing and
// expiring.
func New(ctx context.Context, st store.Store, cfg Config) (*Coordinator, error) {
	d := DefaultConfig()
	if cfg.DefaultLeaseDuration <= 0 {
		cfg.DefaultLeaseDuration = d.DefaultLeaseDuration
	}
	if cfg.MinLeaseDuration <= 0 {
		cfg.MinLeaseDuration = d.MinLeaseDuration
	}
	if cfg.MaxLeaseDuration <= 0 {
		cfg.MaxLeaseDuration = d.MaxLeaseDuration
	}
	if cfg.SoftFlushInterval <= 0 {
		cfg.SoftFlushInterval = d.SoftFlushInterval
	}
	if cfg.V1LeaseDuration <= 0 {
		cfg.V1LeaseDuration = d.V1LeaseDuration
	}
	if cfg.RunLeaseDuration <= 0 {
		cfg.RunLeaseDuration = d.RunLeaseDuration
	}
	if cfg.RunRetention <= 0 {
		cfg.RunRetention = d.RunRetention
	}
	if cfg.AuditRetention <= 0 {
		cfg.AuditRetention = d.AuditRetention
	}
	if cfg.WaiterGrace == 0 {
		cfg.WaiterGrace = d.WaiterGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.ActivityLimits <= 0 {
		cfg.ActivityLimits = 512
	}
	state, err := st.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	m := sema.New(cfg.Sema)
	m.Restore(state.Limits, state.Leases, state.Fence)
	m.RestoreKeys(state.Keys)
	m.RestoreAudit(state.Audit)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Coordinator{
		cfg:       cfg,
		log:       cfg.Logger,
		met:       cfg.Metrics,
		st:        st,
		now:       cfg.Now,
		kick:      make(chan struct{}, 1),
		rearm:     make(chan struct{}, 1),
		m:         m,
		open:      &batch{done: make(chan struct{})},
		waiters:   make(map[uint64]*parked),
		unclaimed: make(map[uuid.UUID]*time.Timer),
		handoff:   make(map[uuid.UUID]bool),
		subs:      make(map[chan sema.Event]struct{}),
		notes:     make(map[*notifier]struct{}),
		runWatch:  make(map[uuid.UUID][]*runWatcher),

		keyWaiting: make(map[string]int),

		leaseWatch: make(map[uuid.UUID][]*leaseWatcher),
		ended:      make(map[uuid.UUID]LeaseStatus),
		act:        sema.NewActivity(cfg.ActivityLimits),
	}
	cfg.Metrics.attach(c)
	// Runs that were waiting stand in line again, then the waiters with a
	// ticket, each in its order; what that grants (or what expired runs
	// it finds) is committed with the first batch. A restored waiter is
	// detached: its caller has a grace to come back for its place, or for
	// the lease it was granted.
	c.mu.Lock()
	now := c.now()
	m.RestoreRuns(now, state.Runs)
	restored := m.RestoreWaiters(now, state.Waiters)
	for _, r := range restored {
		switch {
		case r.Err != nil:
			c.log.Warn("waiter not restored", "ticket", r.Waiter.Ticket, "err", r.Err)
		case r.Outcome.Granted:
			if !r.Waiter.NoLease {
				c.holdUnclaimed(r.Outcome.Lease.ID)
			}
		default:
			p := &parked{ticket: r.Waiter.Ticket, noLease: r.Waiter.NoLease, key: r.Waiter.KeyID}
			c.park(r.Outcome.WaiterID, p) // counted for its key's quota
			c.detach(now, r.Outcome.WaiterID, p, r.Waiter.Deadline)
		}
	}
	c.collect()
	c.mu.Unlock()
	leases, _ := m.Counts()
	c.log.Info("state loaded", "limits", m.LimitCount(), "leases", leases, "runs", m.RunCount(),
		"waiters", len(restored), "fence", state.Fence)
	return c, nil
}

// Run commits batches, expires leases and writes statistics until ctx is
// done; then it commits what is pending and returns nil. It returns the
// error of a failed commit at once.
func (c *Coordinator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); c.reap(ctx) }()
	go func() { defer wg.Done(); c.flushSoft(ctx) }()
	err := c.commitLoop(ctx)
	cancel()
	wg.Wait()
	if err == nil {
		// Stop answering, then commit what the last commands recorded.
		c.mu.Lock()
		c.m.FlushSoft()
		c.collect()
		if c.failed == nil {
			c.failed = ErrUnavailable
		}
		c.mu.Unlock()
		err = c.commitOnce()
	}
	return err
}

func (c *Coordinator) commitLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		c.gather()
		if err := c.commitOnce(); err != nil {
			return err
		}
	}
}

// gather lets the requests that are ready to run add their changes to the
// open batch before it is committed: it yields the processor for as long
// as each yield let more changes in, a few times at most. Under load that
// makes batches, and the fsync each costs, carry more; when nothing else is
// runnable a yield returns at once, so an idle server commits as fast as
// before.
func (c *Coordinator) gather() {
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	for range 4 {
		runtime.Gosched()
		c.mu.Lock()
		m := len(c.pending)
		c.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}

// commitOnce commits the open batch, if it has changes.
func (c *Coordinator) commitOnce() error {
	c.mu.Lock()
	changes, b := c.pending, c.open
	if len(changes) == 0 {
		c.mu.Unlock()
		return nil
	}
	c.pending, c.spare = c.spare, nil
	c.open = &batch{done: make(chan struct{})}
	c.inflight = b // stays once committed: waiting on it then returns at once
	c.mu.Unlock()

	start := time.Now()
	// The store's own context: a commit is never abandoned half way
	// because a caller went away.
	err := c.st.Commit(context.WithoutCancel(context.Background()), changes)
	c.met.commitSeconds.Observe(time.Since(start).Seconds())
	c.met.commitChanges.Observe(float64(len(changes)))
	if err != nil {
		err = fmt.Errorf("commit %d changes: %w", len(changes), err)
		c.log.Error("store commit failed; refusing further commands", "err", err)
		c.mu.Lock()
		c.failed = err
		c.mu.Unlock()
		b.err = err
		close(b.done)
		return err
	}
	close(b.done)
	// The batch's slice collects the one after next, so a steady load
	// allocates no batches; an outsized one (a mass expiry) is let go
	// rather than kept for good.
	if cap(changes) <= maxSpareChanges {
		clear(changes)
		c.mu.Lock()
		c.spare = changes[:0]
		c.mu.Unlock()
	}
	return nil
}

// syncPoint returns the batch whose commit makes everything decided so far
// durable: the open one if it has changes, else the last one handed to the
// store (committed already, or being committed), or nil. mu must be held.
func (c *Coordinator) syncPoint() *batch {
	if len(c.pending) > 0 {
		return c.open
	}
	return c.inflight
}

// maxSpareChanges is the largest batch slice kept for reuse.
const maxSpareChanges = 1024

// collect moves what the machine recorded into the open batch and acts on
// its events. It must be called with mu held; it returns the batch that
// carries the changes, or nil if there were none.
func (c *Coordinator) collect() *batch {
	now := c.now()
	n := 0
	for {
		changes, events := c.m.Drain()
		n += len(changes)
		c.pending = append(c.pending, changes...)
		for _, e := range events {
			c.dispatch(e)
			c.recordEvent(now, e)
		}
		if len(c.shorten) == 0 {
			break
		}
		// Leases granted to detached waiters (holdUnclaimed) end by
		// themselves soon after the grace, in the same batch as their
		// grant: after a restart, no timer is needed to end them.
		for _, id := range c.shorten {
			c.m.Shorten(now, id, max(c.cfg.WaiterGrace, 0)+unclaimedSlack)
		}
		c.shorten = c.shorten[:0]
	}
	leases, waiters := c.m.Counts()
	c.met.leases.Set(float64(leases))
	c.met.waiters.Set(float64(waiters))
	if d, ok := c.m.NextDeadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		c.deadline = d
		select {
		case c.rearm <- struct{}{}:
		default:
		}
	}
	if n == 0 {
		return nil
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return c.open
}

func (c *Coordinator) dispatch(e sema.Event) {
	switch e.Kind {
	case sema.Granted:
		c.met.grants.Inc()
		if p, ok := c.waiters[e.WaiterID]; ok {
			c.unpark(e.WaiterID)
			switch {
			case p.ch != nil:
				if p.ticket != "" && !p.noLease {
					c.handoff[e.Lease.ID] = false
				}
				p.ch <- &waitResult{grant: Grant{Lease: e.Lease, Limits: e.Limits}, b: c.open}
			default:
				p.grace.Stop()
				if !p.noLease {
					c.holdUnclaimed(e.Lease.ID)
				}
			}
		}
	case sema.WaiterFailed:
		if p, ok := c.waiters[e.WaiterID]; ok {
			c.unpark(e.WaiterID)
			if p.ch != nil {
				p.ch <- &waitResult{err: e.Err}
			} else {
				p.grace.Stop()
			}
		}
	case sema.Released:
		c.met.releases.Inc()
		c.leaseEnded(e)
		if e.Reason == sema.ReasonUnclaimed {
			c.log.Info("lease released: granted while its caller was away, and not claimed in time",
				"lease_id", e.Lease.ID, "holder_type", e.Lease.Holder.Type, "holder_id", e.Lease.Holder.ID)
		}
	case sema.Expired:
		c.met.expiries.Inc()
		c.log.Info("lease expired", "lease_id", e.Lease.ID, "holder_type", e.Lease.Holder.Type, "holder_id", e.Lease.Holder.ID)
		c.leaseEnded(e)
	case sema.Revoked:
		c.met.revocations.Inc()
		c.log.Info("lease revoked", "lease_id", e.Lease.ID, "holder_type", e.Lease.Holder.Type, "holder_id", e.Lease.Holder.ID, "reason", e.Reason)
		c.leaseEnded(e)
	case sema.RunChanged:
		for _, w := range c.runWatch[e.Run.ID] {
			w.b = c.open
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
	for ch := range c.subs {
		select {
		case ch <- e:
		default: // a slow subscriber misses events rather than stalling everyone
		}
	}
	for n := range c.notes {
		if n.match(e) {
			select {
			case n.ch <- struct{}{}:
			default: // already signalled: changes coalesce
			}
		}
	}
}

// notifier is a Notify subscription.
type notifier struct {
	match func(sema.Event) bool
	ch    chan struct{}
}

// Notify returns a channel that receives a signal after events that match
// accepts, and a function that ends the subscription. Signals coalesce:
// however many events happen before the receiver looks, it finds one. It
// costs the coordinator a call of match per event and wakes the receiver
// at most once per look, so a page that shows "something changed" costs
// nothing in a burst. match runs under the coordinator's lock: it must be
// quick and must not call the coordinator.
func (c *Coordinator) Notify(match func(sema.Event) bool) (<-chan struct{}, func()) {
	n := &notifier{match: match, ch: make(chan struct{}, 1)}
	c.mu.Lock()
	c.notes[n] = struct{}{}
	c.mu.Unlock()
	return n.ch, func() {
		c.mu.Lock()
		delete(c.notes, n)
		c.mu.Unlock()
	}
}

// do runs fn on the machine under the lock, collects its effects and waits
// until they are durable.
func (c *Coordinator) do(fn func(m *sema.Machine, now time.Time) error) error {
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrUnavailable, c.failed)
	}
	err := fn(c.m, c.now())
	b := c.collect()
	c.mu.Unlock()
	if b != nil {
		if werr := wait(b); werr != nil {
			return werr
		}
	}
	return err
}

func wait(b *batch) error {
	<-b.done
	if b.err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, b.err)
	}
	return nil
}

// doValue is do for a command that returns a value.
func doValue[T any](c *Coordinator, fn func(m *sema.Machine, now time.Time) (T, error)) (T, error) {
	var v T
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		v, err = fn(m, now)
		return err
	})
	return v, err
}

// upsert runs fn, a command that creates a limit with the id given or
// finds (and may change) the one there, and returns the limit's view and
// whether it was created.
func (c *Coordinator) upsert(fn func(m *sema.Machine, now time.Time, id uuid.UUID) (sema.Limit, bool, error)) (v sema.LimitView, created bool, err error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return v, false, err
	}
	err = c.do(func(m *sema.Machine, now time.Time) error {
		l, made, err := fn(m, now, id)
		if err != nil {
			return err
		}
		created = made
		v, err = m.LimitByID(now, l.ID, sema.Full)
		return err
	})
	return v, created, err
}

// watch adds w to the watchers of id (of a lease, of a run) and returns
// what removes it, which takes mu. mu must be held.
func watch[W comparable](c *Coordinator, watchers map[uuid.UUID][]W, id uuid.UUID, w W) (stop func()) {
	watchers[id] = append(watchers[id], w)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		ws := slices.DeleteFunc(watchers[id], func(x W) bool { return x == w })
		if len(ws) == 0 {
			delete(watchers, id)
		} else {
			watchers[id] = ws
		}
	}
}

// read runs fn under the lock for a read-only look.
func (c *Coordinator) read(fn func(m *sema.Machine, now time.Time)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, c.failed)
	}
	fn(c.m, c.now())
	return nil
}

// reap sleeps until the machine's next deadline and ticks it.
func (c *Coordinator) reap(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		d, ok := c.m.NextDeadline()
		if ok {
			c.deadline = d
		} else {
			c.deadline = time.Time{}
		}
		c.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(0, d.Sub(c.now())) // by the coordinator's clock, which may not be time.Now
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.rearm:
			if !t.Stop() {
				<-t.C
			}
		case <-t.C:
			_ = c.do(func(m *sema.Machine, now time.Time) error { m.Tick(now); return nil })
		}
	}
}

// flushSoft writes the Retry-After statistics and forgets the runs past
// their retention, every SoftFlushInterval.
func (c *Coordinator) flushSoft(ctx context.Context) {
	t := time.NewTicker(c.cfg.SoftFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.mu.Lock()
			if c.failed == nil {
				c.m.FlushSoft()
				c.m.PruneRuns(c.now().Add(-c.cfg.RunRetention))
				c.m.PruneAudit(c.now().Add(-c.cfg.AuditRetention))
				c.collect()
			}
			c.mu.Unlock()
		}
	}
}

// Ready reports whether the coordinator answers commands.
func (c *Coordinator) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, c.failed)
	}
	return nil
}

// Subscribe returns a channel of every event from now on, and a function
// that ends the subscription. Events are dropped for a subscriber that does
// not keep up.
func (c *Coordinator) Subscribe(buffer int) (<-chan sema.Event, func()) {
	ch := make(chan sema.Event, buffer)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// jitter spreads a Retry-After around its mean as Prefect's
// clamped_poisson_interval does: an exponential variate with that mean,
// truncated to [0.75·mean, 1.3·mean].
func jitter(mean time.Duration) time.Duration {
	if mean <= 0 {
		return 0
	}
	const clamp = 0.3
	lowerMul := math.Log2(math.Pow(2, 1+clamp) / (math.Pow(2, 1+clamp) - 1))
	cdf := func(x float64) float64 { return 1 - math.Exp(-x) } // in units of the mean
	lo, hi := cdf(lowerMul), cdf(1+clamp)
	u := lo + rand.Float64()*(hi-lo)
	return time.Duration(-math.Log(max(1-u, 1e-10)) * float64(mean))
}

func lockedErr(err error) error {
	var le *sema.LockedError
	if errors.As(err, &le) {
		out := *le
		out.RetryAfter = jitter(le.RetryAfter)
		return &out
	}
	return err
}

// detach keeps p, a waiter whose caller went away, in line for the grace
// (or until deadline, if sooner), then takes it out. mu must be held.
func (c *Coordinator) detach(now time.Time, id uint64, p *parked, deadline time.Time) {
	p.ch = nil
	p.detached++
	gen := p.detached
	d := max(c.cfg.WaiterGrace, 0)
	if !deadline.IsZero() {
		d = min(d, deadline.Sub(now))
	}
	p.grace = time.AfterFunc(max(d, 0), func() { c.graceUp(id, p, gen) })
}

// graceUp takes waiter id out of line when the grace of its detach number
// gen is up, unless its caller came back since, or the waiter was detached
// again (a timer that fired while a returning request held mu must not cut
// the new grace short).
func (c *Coordinator) graceUp(id uint64, p *parked, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil || c.waiters[id] != p || p.ch != nil || p.detached != gen {
		return
	}
	c.unpark(id)
	c.m.CancelWaiter(c.now(), id)
	c.collect()
}

// unclaimedSlack is how long after the waiter grace a lease held unclaimed
// expires by itself, should its release timer not fire (after a restart):
// long enough that the timer, when it runs, releases it first.
const unclaimedSlack = time.Second

// holdUnclaimed keeps a lease granted to a waiter whose caller is away for
// the grace; unless the caller comes back for it (claim), it is then
// released as unclaimed. Nobody was ever told of the grant, so nothing can
// be running under it. Its expiry is brought forward durably to the end of
// the grace (collect, in the batch of the grant), so that it ends after a
// restart too; a claim renews it to its full duration. mu must be held, and
// collect called before it is released.
func (c *Coordinator) holdUnclaimed(id uuid.UUID) {
	if _, ok := c.unclaimed[id]; ok {
		return
	}
	c.shorten = append(c.shorten, id)
	c.unclaimed[id] = time.AfterFunc(max(c.cfg.WaiterGrace, 0), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.unclaimed[id]; !ok || c.failed != nil {
			return
		}
		delete(c.unclaimed, id)
		c.m.ReleaseUnclaimed(c.now(), id)
		c.collect()
	})
}

// claim marks a lease as handed to its caller. mu must be held.
func (c *Coordinator) claim(id uuid.UUID) {
	if _, ok := c.handoff[id]; ok {
		c.handoff[id] = true
	}
	if t, ok := c.unclaimed[id]; ok {
		t.Stop()
		delete(c.unclaimed, id)
	}
}
