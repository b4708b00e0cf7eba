package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Leadership of the replicas that share one database.
//
// The leader row (migrations/0002_leader.sql) carries an epoch, the
// leader's id and address, and a lease that ends at lease_until by the
// database's clock. A candidate takes the lead by raising the epoch; the
// leader renews the lease every TTL/3; every commit of the leader's store
// checks the epoch (Options.Epoch), so a deposed leader commits nothing.
//
// A session advisory lock, held by the leader's campaign connection, only
// makes a take-over after a crash fast: when the leader's process or
// connection dies, PostgreSQL frees the lock at once, and a candidate that
// gets it takes over without waiting for the lease. Safety never rests on
// the lock or the lease, only on the epoch: whoever raises it last leads,
// and a commit checked against an older one fails.
//
// A candidate that finds the lease lapsed while the lock is still held (the
// leader is paused, or cut off and PostgreSQL has not noticed yet) ends the
// lapsed leader's sessions with pg_terminate_backend: every connection of a
// replica's process carries one application name, unique to the process
// (Candidate.ApplicationName) and written into the leader row when it takes
// the lead, so its campaign connection (and lock) and its store's
// connections (and any transaction they hold open) go together, and nobody
// else's do.

// ErrLostLead is why a Term ends when its leader could not renew its lease
// before its trust in the last renewal ran out.
var ErrLostLead = errors.New("lost the lead: could not renew the lease in time")

// ErrResigned is why a Term ends after Resign.
var ErrResigned = errors.New("resigned the lead")

// DefaultTTL is the leader's lease when CandidateConfig names none.
const DefaultTTL = 5 * time.Second

// campaignPoll is the longest a candidate waits between two tries: after a
// leader's crash, service is back within it (plus PostgreSQL noticing the
// dead session, and loading the state).
const campaignPoll = 250 * time.Millisecond

const (
	// The leader lock is the advisory lock (1634496623 ("allo"),
	// hashtext(current_schema())): schemas of one database elect apart.
	tryLeaderLock = `SELECT pg_try_advisory_lock(1634496623, hashtext(current_schema()))`

	// takeOver raises the epoch. Only the holder of the advisory lock runs
	// it. Its UPDATE conflicts with the FOR SHARE of a commit in progress,
	// so it waits for that commit (up to lock_timeout) or the commit fails.
	takeOver = `UPDATE leader SET epoch = epoch + 1, holder = $1, address = $2, sessions = $3, elected = now(),
    lease_until = now() + $4 * interval '1 microsecond'
RETURNING epoch, now()`

	// renew extends the lease of the epoch this replica won; no row means
	// another replica has taken the lead.
	renew = `UPDATE leader SET lease_until = now() + $2 * interval '1 microsecond' WHERE epoch = $1 RETURNING now()`

	// terminateLapsed ends the sessions of a leader whose lease has lapsed
	// by the database's clock: every session named after it (its campaign
	// session, which holds the leader lock, and its store's). Not whoever
	// holds the lock: that may be a candidate in the middle of its
	// take-over, before the row names it.
	terminateLapsed = `SELECT count(pg_terminate_backend(a.pid))
FROM pg_stat_activity a, leader l
WHERE l.lease_until < now() AND l.sessions <> '' AND a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.application_name = l.sessions`

	// terminateHolder ends the sessions of the replica the leader row
	// names; only the holder of the leader lock runs it, which the named
	// leader no longer is.
	terminateHolder = `SELECT count(pg_terminate_backend(a.pid))
FROM pg_stat_activity a, leader l
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND l.sessions <> ''
  AND a.application_name = l.sessions`

	selectLeader = `SELECT epoch, holder, address, lease_until > now(), now() FROM leader`

	// resign ends the lease now, so that a candidate need not wait for it.
	resign = `UPDATE leader SET lease_until = now() WHERE epoch = $1`
)

// CandidateConfig configures a Candidate.
type CandidateConfig struct {
	// URL is the database; Schema the schema of allot's tables, as for
	// Open.
	URL    string
	Schema string
	// ID names the replica: unique among the replicas, at most 40 bytes.
	ID string
	// Address is where the other replicas forward requests to while this
	// one leads.
	Address string
	// TTL is the leader's lease: a leader that cannot renew for this long
	// is replaced. Zero means DefaultTTL.
	TTL    time.Duration
	Logger *slog.Logger
}

// Leader is the leader row as a replica reads it.
type Leader struct {
	Epoch   int64
	ID      string // empty before the first election
	Address string
	// Live reports whether the lease had not lapsed by the database's clock
	// when it was read.
	Live bool
}

// Candidate campaigns for the lead and reads who leads.
type Candidate struct {
	cfg  CandidateConfig
	app  string
	conn *pgx.ConnConfig // the campaign connection's settings
	pool *pgxpool.Pool   // for Leader
}

// NewCandidate checks cfg and connects a small pool for Leader. Close
// releases it.
func NewCandidate(ctx context.Context, cfg CandidateConfig) (*Candidate, error) {
	if cfg.ID == "" || len(cfg.ID) > 40 {
		return nil, fmt.Errorf("candidate id %q: want 1 to 40 bytes", cfg.ID)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 100*time.Millisecond {
		return nil, fmt.Errorf("leader lease %v: want at least 100ms", cfg.TTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	app := "allot " + cfg.ID + " " + hex.EncodeToString(b)
	cc, err := ConnConfig(cfg.URL, cfg.Schema, app)
	if err != nil {
		return nil, err
	}
	// A candidate waits for a commit in progress at most this long before
	// it ends the leader's sessions; its statements at most a lease.
	cc.RuntimeParams["lock_timeout"] = fmt.Sprint(max(cfg.TTL/4, 50*time.Millisecond).Milliseconds())
	cc.RuntimeParams["statement_timeout"] = fmt.Sprint(cfg.TTL.Milliseconds())
	// The reads' sessions carry another name: a successor that ends this
	// replica's sessions need not end them, nor this replica's own
	// take-over end its reads.
	pc, err := PoolConfig(cfg.URL, cfg.Schema, app+" (reads)")
	if err != nil {
		return nil, err
	}
	pc.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return &Candidate{cfg: cfg, app: app, conn: cc, pool: pool}, nil
}

// ApplicationName is the application_name of the candidate's sessions,
// unique to it. Open the store of a term it wins with it
// (Options.ApplicationName), so that a successor ends the store's sessions
// together with the campaign's.
func (c *Candidate) ApplicationName() string { return c.app }

// Close releases the candidate's pool. Terms it won live on until they
// end.
func (c *Candidate) Close() { c.pool.Close() }

// Leader reads the leader row.
func (c *Candidate) Leader(ctx context.Context) (Leader, error) {
	var l Leader
	var now time.Time
	if err := c.pool.QueryRow(ctx, selectLeader).Scan(&l.Epoch, &l.ID, &l.Address, &l.Live, &now); err != nil {
		return Leader{}, fmt.Errorf("read leader: %w", err)
	}
	return l, nil
}

// Campaign blocks until this replica leads, and returns its term; or until
// ctx is done. It tries every TTL/4, at most 250ms apart: it takes the
// lead at once when the leader lock is free (no leader, or the leader's
// session is gone), and ends the sessions of a leader whose lease has
// lapsed. The caller must Resign the term it returns, even after the
// term's Done has closed, to wait for its goroutine.
func (c *Candidate) Campaign(ctx context.Context) (*Term, error) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx)) // frees the lock, if held
		}
	}()
	poll := max(min(c.cfg.TTL/4, campaignPoll), 25*time.Millisecond)
	for {
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = pgx.ConnectConfig(ctx, c.conn); err != nil {
				conn = nil
				c.cfg.Logger.Warn("campaign: connect", "err", err)
			}
		}
		if conn != nil {
			t, err := c.try(ctx, conn)
			if err != nil {
				c.cfg.Logger.Warn("campaign", "err", err)
				_ = conn.Close(context.WithoutCancel(ctx)) // start again on a new connection
				conn = nil
			} else if t != nil {
				conn = nil // the term's now
				return t, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// try makes one attempt to take the lead over conn: a term, or nil if
// another replica leads.
func (c *Candidate) try(ctx context.Context, conn *pgx.Conn) (*Term, error) {
	var locked bool
	if err := conn.QueryRow(ctx, tryLeaderLock).Scan(&locked); err != nil {
		return nil, fmt.Errorf("try leader lock: %w", err)
	}
	if !locked {
		var n int
		if err := conn.QueryRow(ctx, terminateLapsed).Scan(&n); err != nil {
			return nil, fmt.Errorf("end a lapsed leader's sessions: %w", err)
		}
		if n > 0 {
			c.cfg.Logger.Info("campaign: ended the sessions of a leader whose lease lapsed", "sessions", n)
		}
		return nil, nil
	}
	// The lock is ours, so the leader the row names has lost its campaign
	// session: end the others it may still have, one of which may hold the
	// row in a stalled commit (that commit then fails, as it would after
	// the take-over anyway).
	var n int
	if err := conn.QueryRow(ctx, terminateHolder).Scan(&n); err != nil {
		return nil, fmt.Errorf("end the old leader's sessions: %w", err)
	}
	if n > 0 {
		c.cfg.Logger.Info("campaign: ended the sessions of the old leader", "sessions", n)
	}
	start := time.Now()
	var epoch int64
	var dbNow time.Time
	err := conn.QueryRow(ctx, takeOver, c.cfg.ID, c.cfg.Address, c.app, c.cfg.TTL.Microseconds()).Scan(&epoch, &dbNow)
	end := time.Now()
	if err != nil {
		// lock_timeout, say: the caller closes the connection, which frees
		// the lock, and tries again.
		return nil, fmt.Errorf("take over: %w", err)
	}
	t := &Term{
		cfg:    c.cfg,
		cc:     c.conn,
		conn:   conn,
		epoch:  epoch,
		offset: dbNow.Sub(midpoint(start, end)),
		trust:  start.Add(c.cfg.TTL - trustMargin(c.cfg.TTL)),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	c.cfg.Logger.Info("leading", "epoch", epoch, "id", c.cfg.ID, "address", c.cfg.Address, "clock_offset", t.offset)
	t.wg.Add(1)
	go func() { defer t.wg.Done(); t.run() }()
	return t, nil
}

func midpoint(a, b time.Time) time.Time { return a.Add(b.Sub(a) / 2) }

// trustMargin is how much earlier than its lease a leader stops trusting
// it: room for the two clocks to run at slightly different rates.
func trustMargin(ttl time.Duration) time.Duration { return ttl / 20 }

// Term is one replica's lead, from the take-over until Done closes. Its
// goroutine renews the lease every TTL/3 and ends the term when another
// replica has taken the lead, when the lease could not be renewed before
// the leader's trust in its last renewal ran out, or on Resign.
type Term struct {
	cfg    CandidateConfig
	cc     *pgx.ConnConfig
	conn   *pgx.Conn // owned by run
	epoch  int64
	offset time.Duration // the database's clock minus this process's, at the take-over

	stop    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	trust   time.Time // renewals keep this monotonic instant ahead
	err     error
	renewed int
	stopped bool
	paused  chan struct{} // tests: renewals wait while it is not nil
}

// Epoch is the term's epoch: open the leader's store with it.
func (t *Term) Epoch() int64 { return t.epoch }

// Done closes when the term has ended; Err says why.
func (t *Term) Done() <-chan struct{} { return t.done }

// Err is why the term ended (ErrDeposed, ErrLostLead, ErrResigned), or nil
// while it lasts.
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Now is the database's clock as this leader reckons it: the local clock
// plus the offset measured at the take-over. The coordinator of a leader
// decides with it, so that the expiries it stores are database times that
// a successor reads against the same clock. It is monotonic within the
// term (the offset is fixed), and keeps time.Now's monotonic reading.
func (t *Term) Now() time.Time { return time.Now().Add(t.offset) }

// Trusted reports whether the leader may still trust its lease: the term
// has not ended and its last renewal is recent enough. A stalled leader
// that wakes up finds it false at once, before its renewal timer ends the
// term, and must not answer from its memory meanwhile.
func (t *Term) Trusted() bool {
	select {
	case <-t.done:
		return false
	default:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Now().Before(t.trust)
}

// Offset is the database's clock minus this process's, measured at the
// take-over.
func (t *Term) Offset() time.Duration { return t.offset }

// Resign ends the term: it stops renewing, ends the lease in the database
// so that a candidate need not wait for it, and frees the leader lock. It
// waits for the term's goroutine.
func (t *Term) Resign() {
	t.mu.Lock()
	if !t.stopped {
		t.stopped = true
		close(t.stop)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

func (t *Term) end(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
	if t.conn != nil {
		_ = t.conn.Close(context.Background()) // frees the lock; nothing else to do with the error
		t.conn = nil
	}
	t.cfg.Logger.Warn("no longer leading", "epoch", t.epoch, "why", err)
	close(t.done)
}

func (t *Term) run() {
	every := max(t.cfg.TTL/3, 10*time.Millisecond)
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-t.stop:
			t.resign()
			return
		case <-timer.C:
		}
		t.waitWhilePaused()
		if err := t.renewOnce(); err != nil {
			t.end(err)
			return
		}
		timer.Reset(every)
	}
}

// renewOnce renews the lease, reconnecting as long as the leader still
// trusts its last renewal. A reconnected session must get the leader lock
// again: if another replica holds it, this one is deposed.
func (t *Term) renewOnce() error {
	for {
		t.mu.Lock()
		trust := t.trust
		t.mu.Unlock()
		if !time.Now().Before(trust) {
			return ErrLostLead
		}
		ctx, cancel := context.WithDeadline(context.Background(), trust)
		err := t.renewOn(ctx)
		cancel()
		if err == nil || errors.Is(err, ErrDeposed) {
			return err
		}
		t.cfg.Logger.Warn("renew leader lease", "epoch", t.epoch, "err", err)
		if t.conn != nil {
			_ = t.conn.Close(context.Background()) // a fresh session next
			t.conn = nil
		}
		select {
		case <-t.stop:
			return ErrResigned
		case <-time.After(min(t.cfg.TTL/10, time.Until(trust))):
		}
	}
}

func (t *Term) renewOn(ctx context.Context) error {
	if t.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, t.cc)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		var locked bool
		if err := conn.QueryRow(ctx, tryLeaderLock).Scan(&locked); err != nil {
			_ = conn.Close(context.Background()) // the query's error is the one to report
			return fmt.Errorf("try leader lock: %w", err)
		}
		t.conn = conn
		if !locked {
			return fmt.Errorf("%w: the leader lock is held by another session", ErrDeposed)
		}
	}
	start := time.Now()
	var dbNow time.Time
	err := t.conn.QueryRow(ctx, renew, t.epoch, t.cfg.TTL.Microseconds()).Scan(&dbNow)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: the leader row is past epoch %d", ErrDeposed, t.epoch)
	}
	if err != nil {
		return err
	}
	end := time.Now()
	t.mu.Lock()
	t.trust = start.Add(t.cfg.TTL - trustMargin(t.cfg.TTL))
	t.renewed++
	t.mu.Unlock()
	if drift := dbNow.Sub(midpoint(start, end)) - t.offset; drift > 100*time.Millisecond || drift < -100*time.Millisecond {
		t.cfg.Logger.Warn("the database's clock moved against this replica's", "epoch", t.epoch, "drift", drift)
	}
	return nil
}

func (t *Term) resign() {
	if t.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.TTL)
		_, err := t.conn.Exec(ctx, resign, t.epoch)
		cancel()
		if err != nil {
			t.cfg.Logger.Warn("resign: end the lease", "epoch", t.epoch, "err", err)
		}
	}
	t.end(ErrResigned)
}

func (t *Term) waitWhilePaused() {
	t.mu.Lock()
	p := t.paused
	t.mu.Unlock()
	if p != nil {
		select {
		case <-p:
		case <-t.stop:
		}
	}
}
