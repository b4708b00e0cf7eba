// Package postgres is allot's store for several replicas: the durable shadow
// of the state machine kept in a PostgreSQL database that the replicas
// share, and the leadership (leader.go) that lets exactly one of them write
// to it at a time. It uses github.com/jackc/pgx/v5 and its pool.
//
// # What it owns
//
// The tables in one schema of the database (the connection's search_path,
// or Options.Schema); the schema's migrations, embedded in the binary
// (migrations/NNNN_name.sql); the encodings of limits, leases and runs in
// those tables (encode.go); and the leader row.
//
// # Invariants
//
//   - One Commit is one transaction, sent as one pipeline: its changes are
//     applied in order and are all visible after a crash or none is, and
//     Commit returns only once PostgreSQL has committed them.
//   - A store opened with an epoch (Options.Epoch, the term the replica
//     won, see Campaign) checks it first in every commit, with a row lock
//     that conflicts with a take-over: once another replica has taken the
//     lead, every later commit of this store fails with ErrDeposed.
//   - The fencing high-water mark never goes down, whoever writes it.
//   - The schema only moves forward: Open applies the migrations this binary
//     knows, once even when replicas start together, and refuses a schema
//     written by a newer allot (ErrSchemaTooNew).
//
// A Store serialises its calls; the coordinator calls Commit from one
// writer goroutine that groups the changes of many commands into each call.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/codec"
	"github.com/allot-dev/allot/internal/store/schema"
)

// ErrDeposed is returned by Commit when another replica has taken the lead
// since the store's epoch was won: nothing of the batch was applied.
var ErrDeposed = errors.New("deposed: another replica leads")

// sqlstateDeposed is the SQLSTATE allot_check_epoch raises.
const sqlstateDeposed = "AL001"

// Options tune a Store. The zero value is an unfenced store over the
// connection's search_path.
type Options struct {
	// Schema is the schema the tables live in; it is created if missing.
	// Empty means the connection's search_path (normally public).
	Schema string
	// Epoch fences every Commit: it fails with ErrDeposed once the leader
	// row's epoch is no longer this one. Zero means no check, for tools and
	// tests that are alone on the database; a replica always sets the epoch
	// its Term won.
	Epoch int64
	// MaxConns bounds the pool; zero means 4. Commits use one connection at
	// a time; Load and the migrations may use another.
	MaxConns int32
	// ApplicationName names the store's sessions in pg_stat_activity; a
	// replica names them after itself so that a successor can end them.
	ApplicationName string
}

// Store is the PostgreSQL store. It implements store.Store.
type Store struct {
	pool  *pgxpool.Pool
	epoch int64

	// sem is held by the call in progress; it serialises calls and guards
	// closed.
	sem    chan struct{}
	closed bool
}

var _ store.Store = (*Store)(nil)

const (
	selectLimits = `SELECT id, name, slot_limit, active, slot_decay_per_second, avg_slot_occupancy_seconds,
       created, updated, level, denied, decay_at, idle, from_template
FROM limits ORDER BY name`
	selectLeases = `SELECT id, holds, slots, mode, holder_type, holder_id, holder_metadata, anonymous,
       created, duration, expires, fence, ticket, key_id
FROM leases ORDER BY id`
	selectKeys  = `SELECT id, name, scopes, hash, created, expires, revoked, last_used FROM keys ORDER BY id`
	selectAudit = `SELECT seq, at, key_id, key_name, remote, request_id, action, target, status, before, after
FROM audit ORDER BY seq`
	upsertKey = `INSERT INTO keys (id, name, scopes, hash, created, expires, revoked, last_used)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    scopes = excluded.scopes,
    hash = excluded.hash,
    created = excluded.created,
    expires = excluded.expires,
    revoked = excluded.revoked,
    last_used = excluded.last_used`
	insertAudit = `INSERT INTO audit (seq, at, key_id, key_name, remote, request_id, action, target, status, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	pruneAudit  = `DELETE FROM audit WHERE at < $1`
	selectFence = `SELECT value FROM fence`
	selectRuns  = `SELECT id, kind, name, tags, parent_id, state, history, collision_strategy, lease_duration,
       lease_id, fence, wait_seq, created, updated, limits, slots
FROM runs ORDER BY id`
	selectWaiters = `SELECT ticket, seq, names, slots, mode, lease_id, lease_duration, holder_type, holder_id,
       holder_metadata, no_lease, anonymous, since, deadline, key_id
FROM waiters ORDER BY ticket`

	checkEpoch = `SELECT allot_check_epoch($1)`

	upsertLimit = `INSERT INTO limits (id, name, slot_limit, active, slot_decay_per_second, avg_slot_occupancy_seconds,
    created, updated, level, denied, decay_at, idle, from_template)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    slot_limit = excluded.slot_limit,
    active = excluded.active,
    slot_decay_per_second = excluded.slot_decay_per_second,
    avg_slot_occupancy_seconds = excluded.avg_slot_occupancy_seconds,
    created = excluded.created,
    updated = excluded.updated,
    level = excluded.level,
    denied = excluded.denied,
    decay_at = excluded.decay_at,
    idle = excluded.idle,
    from_template = excluded.from_template`
	deleteLimit = `DELETE FROM limits WHERE id = $1`

	upsertLease = `INSERT INTO leases (id, holds, slots, mode, holder_type, holder_id, holder_metadata, anonymous,
    created, duration, expires, fence, ticket, key_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (id) DO UPDATE SET
    holds = excluded.holds,
    slots = excluded.slots,
    mode = excluded.mode,
    holder_type = excluded.holder_type,
    holder_id = excluded.holder_id,
    holder_metadata = excluded.holder_metadata,
    anonymous = excluded.anonymous,
    created = excluded.created,
    duration = excluded.duration,
    expires = excluded.expires,
    fence = excluded.fence,
    ticket = excluded.ticket,
    key_id = excluded.key_id`
	deleteLease = `DELETE FROM leases WHERE id = $1`

	upsertRun = `INSERT INTO runs (id, kind, name, tags, parent_id, state, history, collision_strategy, lease_duration,
    lease_id, fence, wait_seq, created, updated, limits, slots)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET
    kind = excluded.kind,
    name = excluded.name,
    tags = excluded.tags,
    parent_id = excluded.parent_id,
    state = excluded.state,
    history = excluded.history,
    collision_strategy = excluded.collision_strategy,
    lease_duration = excluded.lease_duration,
    lease_id = excluded.lease_id,
    fence = excluded.fence,
    wait_seq = excluded.wait_seq,
    created = excluded.created,
    updated = excluded.updated,
    limits = excluded.limits,
    slots = excluded.slots`
	deleteRun = `DELETE FROM runs WHERE id = $1`

	upsertWaiter = `INSERT INTO waiters (ticket, seq, names, slots, mode, lease_id, lease_duration, holder_type,
    holder_id, holder_metadata, no_lease, anonymous, since, deadline, key_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (ticket) DO UPDATE SET
    seq = excluded.seq,
    names = excluded.names,
    slots = excluded.slots,
    mode = excluded.mode,
    lease_id = excluded.lease_id,
    lease_duration = excluded.lease_duration,
    holder_type = excluded.holder_type,
    holder_id = excluded.holder_id,
    holder_metadata = excluded.holder_metadata,
    no_lease = excluded.no_lease,
    anonymous = excluded.anonymous,
    since = excluded.since,
    deadline = excluded.deadline,
    key_id = excluded.key_id`
	deleteWaiter = `DELETE FROM waiters WHERE ticket = $1`

	// raiseFence compares in numeric, so fences above 2^63 order right.
	raiseFence = `UPDATE fence SET value = greatest(value, $1)`

	createSchema = `CREATE SCHEMA IF NOT EXISTS `
)

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string), brings the schema up to date and returns the store.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := PoolConfig(url, opts.Schema, opts.ApplicationName)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4
	}
	cfg.MinConns = 1
	if opts.Schema != "" {
		if err := ensureSchema(ctx, cfg.ConnConfig, opts.Schema); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{pool: pool, epoch: opts.Epoch, sem: make(chan struct{}, 1)}
	ms, err := schema.Read(migrationFiles)
	if err == nil {
		_, err = migrate(ctx, pool, ms)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// ensureSchema creates schema if it does not exist.
func ensureSchema(ctx context.Context, cfg *pgx.ConnConfig, schema string) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to keep
	if _, err := conn.Exec(ctx, createSchema+pgx.Identifier{schema}.Sanitize()); err != nil {
		var pe *pgconn.PgError
		// Two replicas creating it at once: one of them loses the race on
		// the catalog, and the schema is there.
		if !errors.As(err, &pe) || pe.Code != "23505" {
			return fmt.Errorf("create schema %s: %w", schema, err)
		}
	}
	return nil
}

func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) unlock() { <-s.sem }

// Load returns the committed state, read in one repeatable-read
// transaction. Limits come sorted by name and leases by id.
func (s *Store) Load(ctx context.Context) (store.State, error) {
	if err := s.lock(ctx); err != nil {
		return store.State{}, fmt.Errorf("load: %w", err)
	}
	defer s.unlock()
	if s.closed {
		return store.State{}, store.ErrClosed
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return store.State{}, fmt.Errorf("load: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // read only: nothing to keep or report
	var st store.State
	if st.Limits, err = loadLimits(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load limits: %w", err)
	}
	if st.Leases, err = loadLeases(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load leases: %w", err)
	}
	if st.Runs, err = loadRuns(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load runs: %w", err)
	}
	if st.Waiters, err = loadWaiters(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load waiters: %w", err)
	}
	if st.Keys, err = loadKeys(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load keys: %w", err)
	}
	if st.Audit, err = loadAudit(ctx, tx); err != nil {
		return store.State{}, fmt.Errorf("load audit: %w", err)
	}
	var f fence
	if err := tx.QueryRow(ctx, selectFence).Scan(&f); err != nil {
		return store.State{}, fmt.Errorf("load fence: %w", err)
	}
	st.Fence = uint64(f)
	return st, nil
}

func loadLimits(ctx context.Context, tx pgx.Tx) ([]sema.Limit, error) {
	rows, err := tx.Query(ctx, selectLimits)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Limit
	for rows.Next() {
		var (
			l                         sema.Limit
			slots                     int64
			created, updated, decayAt *int64
			idle                      int64
		)
		if err := rows.Scan(&l.ID, &l.Name, &slots, &l.Active, &l.SlotDecayPerSecond, &l.AvgSlotOccupancySeconds,
			&created, &updated, &l.Level, &l.Denied, &decayAt, &idle, &l.FromTemplate); err != nil {
			return nil, err
		}
		l.Idle = time.Duration(idle)
		l.Limit = int(slots)
		l.Created, l.Updated, l.DecayAt = scanTime(created), scanTime(updated), scanTime(decayAt)
		out = append(out, l)
	}
	return out, rows.Err()
}

func loadLeases(ctx context.Context, tx pgx.Tx) ([]sema.Lease, error) {
	rows, err := tx.Query(ctx, selectLeases)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Lease
	for rows.Next() {
		var (
			l                 sema.Lease
			holds, htype, hid []byte
			mode              string
			metadata          *string
			created, expires  *int64
			slots, duration   int64
			f                 fence
			ticket            *string
		)
		if err := rows.Scan(&l.ID, &holds, &slots, &mode, &htype, &hid, &metadata, &l.Anonymous,
			&created, &duration, &expires, &f, &ticket, &l.KeyID); err != nil {
			return nil, err
		}
		if l.Holds, err = codec.DecodeHolds(holds); err != nil {
			return nil, fmt.Errorf("lease %s: %w", l.ID, err)
		}
		if l.Mode, err = codec.DecodeMode(mode); err != nil {
			return nil, fmt.Errorf("lease %s: %w", l.ID, err)
		}
		if l.Holder.Metadata, err = scanMetadata(metadata); err != nil {
			return nil, fmt.Errorf("lease %s: %w", l.ID, err)
		}
		l.Slots = int(slots)
		l.Holder.Type, l.Holder.ID = string(htype), string(hid)
		l.Created, l.Expires = scanTime(created), scanTime(expires)
		l.Duration = time.Duration(duration)
		l.Fence = uint64(f)
		if ticket != nil {
			l.Ticket = *ticket
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

func loadRuns(ctx context.Context, tx pgx.Tx) ([]sema.Run, error) {
	rows, err := tx.Query(ctx, selectRuns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Run
	for rows.Next() {
		var (
			r                sema.Run
			t                codec.RunText
			name             []byte
			parent, lease    *uuid.UUID
			duration         int64
			f, waitSeq       fence
			created, updated *int64
			slots            int64
		)
		if err := rows.Scan(&r.ID, &t.Kind, &name, &t.Tags, &parent, &t.State, &t.History, &t.Strategy, &duration,
			&lease, &f, &waitSeq, &created, &updated, &t.Limits, &slots); err != nil {
			return nil, err
		}
		if err := t.Decode(&r); err != nil {
			return nil, err
		}
		r.Slots = int(slots)
		r.Name = string(name)
		r.ParentID, r.LeaseID = scanUUID(parent), scanUUID(lease)
		r.LeaseDuration = time.Duration(duration)
		r.Fence, r.WaitSeq = uint64(f), uint64(waitSeq)
		r.Created, r.Updated = scanTime(created), scanTime(updated)
		out = append(out, r)
	}
	return out, rows.Err()
}

func loadKeys(ctx context.Context, tx pgx.Tx) ([]sema.Key, error) {
	rows, err := tx.Query(ctx, selectKeys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Key
	for rows.Next() {
		var (
			k                                  sema.Key
			scopes                             string
			created, expires, revoked, lastUse *int64
		)
		if err := rows.Scan(&k.ID, &k.Name, &scopes, &k.Hash, &created, &expires, &revoked, &lastUse); err != nil {
			return nil, err
		}
		if k.Scopes, err = codec.DecodeTags(scopes); err != nil {
			return nil, fmt.Errorf("key %s: scopes: %w", k.ID, err)
		}
		k.Created, k.Expires, k.Revoked, k.LastUsed = scanTime(created), scanTime(expires), scanTime(revoked), scanTime(lastUse)
		out = append(out, k)
	}
	return out, rows.Err()
}

func loadAudit(ctx context.Context, tx pgx.Tx) ([]sema.AuditRecord, error) {
	rows, err := tx.Query(ctx, selectAudit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.AuditRecord
	for rows.Next() {
		var (
			a      sema.AuditRecord
			seq    fence
			at     *int64
			status int64
		)
		if err := rows.Scan(&seq, &at, &a.KeyID, &a.KeyName, &a.Remote, &a.RequestID, &a.Action, &a.Target,
			&status, &a.Before, &a.After); err != nil {
			return nil, err
		}
		a.Seq, a.Time, a.Status = uint64(seq), scanTime(at), int(status)
		out = append(out, a)
	}
	return out, rows.Err()
}

func loadWaiters(ctx context.Context, tx pgx.Tx) ([]sema.Waiter, error) {
	rows, err := tx.Query(ctx, selectWaiters)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Waiter
	for rows.Next() {
		var (
			w               sema.Waiter
			seq             fence
			names, mode     string
			slots, duration int64
			leaseID         *uuid.UUID
			htype, hid      []byte
			metadata        *string
			since, deadline *int64
		)
		if err := rows.Scan(&w.Ticket, &seq, &names, &slots, &mode, &leaseID, &duration, &htype, &hid,
			&metadata, &w.NoLease, &w.Anonymous, &since, &deadline, &w.KeyID); err != nil {
			return nil, err
		}
		if w.Names, err = codec.DecodeTags(names); err != nil {
			return nil, fmt.Errorf("waiter %s: names: %w", w.Ticket, err)
		}
		if w.Mode, err = codec.DecodeMode(mode); err != nil {
			return nil, fmt.Errorf("waiter %s: %w", w.Ticket, err)
		}
		if w.Holder.Metadata, err = scanMetadata(metadata); err != nil {
			return nil, fmt.Errorf("waiter %s: %w", w.Ticket, err)
		}
		w.Seq, w.Slots = uint64(seq), int(slots)
		w.LeaseID, w.LeaseDuration = scanUUID(leaseID), time.Duration(duration)
		w.Holder.Type, w.Holder.ID = string(htype), string(hid)
		w.Since, w.Deadline = scanTime(since), scanTime(deadline)
		out = append(out, w)
	}
	return out, rows.Err()
}

// Commit applies changes in order in one transaction and returns once
// PostgreSQL has committed it. The batch goes as one pipeline, so it costs
// one round trip: pgx sends its statements followed by one Sync, which
// makes them one implicit transaction that commits at the Sync, or rolls
// back as a whole at the first statement that fails. A store with an epoch
// checks it first (allot_check_epoch) and fails with ErrDeposed once
// another replica leads.
//
// A change of an unknown kind, a limit whose name another limit has, or a
// value the schema cannot hold (a time outside the years 1678 to 2262)
// fails the whole batch. A batch whose outcome is unknown (the connection
// broke after it was sent) returns an error too: the coordinator must then
// stop, and a restart reads what PostgreSQL kept.
func (s *Store) Commit(ctx context.Context, changes []sema.Change) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer s.unlock()
	if s.closed {
		return store.ErrClosed
	}
	if len(changes) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	if s.epoch != 0 {
		b.Queue(checkEpoch, s.epoch)
	}
	var high uint64
	leases := false
	for i := range changes {
		c := &changes[i]
		var err error
		switch c.Kind {
		case sema.PutLimit:
			err = queueLimit(b, &c.Limit)
		case sema.DeleteLimit:
			b.Queue(deleteLimit, c.ID)
		case sema.PutLease:
			err = queueLease(b, &c.Lease)
			high = max(high, c.Lease.Fence)
			leases = true
		case sema.DeleteLease:
			b.Queue(deleteLease, c.ID)
		case sema.PutRun:
			err = queueRun(b, c.Run)
		case sema.DeleteRun:
			b.Queue(deleteRun, c.ID)
		case sema.PutWaiter:
			err = queueWaiter(b, c.Waiter)
		case sema.DeleteWaiter:
			b.Queue(deleteWaiter, c.Ticket)
		case sema.PutKey:
			err = queueKey(b, c.Key)
		case sema.PutAudit:
			err = queueAudit(b, c.Audit)
		case sema.PruneAudit:
			var before *int64
			if before, err = timeArg(c.Before); err == nil {
				b.Queue(pruneAudit, before)
			}
		default:
			return fmt.Errorf("commit: change %d of %d: unknown kind %d", i+1, len(changes), c.Kind)
		}
		if err != nil {
			return fmt.Errorf("commit: change %d of %d (%s): %w", i+1, len(changes), codec.Describe(c), err)
		}
	}
	if leases {
		b.Queue(raiseFence, fence(high))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for attempt := 1; ; attempt++ {
		err := s.pool.SendBatch(ctx, b).Close()
		if attempt > 1 || err != nil {
			// A batch remembers the statements it was prepared as on its
			// connection; another connection needs a fresh one.
			b = requeue(b)
		}
		var pe *pgconn.PgError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &pe) && pe.Code == sqlstateDeposed:
			return fmt.Errorf("commit: %w: %s", ErrDeposed, pe.Message)
		case attempt < commitAttempts && lostConnection(ctx, err):
			// The session ended (PostgreSQL restarted, or a successor ended
			// a lapsed leader's sessions). The batch may or may not have
			// committed; sending it again is safe, because its changes are
			// idempotent (upserts, deletes, greatest) and no other batch
			// came in between. The epoch check makes it fail if the lead
			// has passed.
			continue
		default:
			return fmt.Errorf("commit: %w", err)
		}
	}
}

func requeue(b *pgx.Batch) *pgx.Batch {
	fresh := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(b.QueuedQueries))}
	for _, q := range b.QueuedQueries {
		fresh.Queue(q.SQL, q.Arguments...)
	}
	return fresh
}

// commitAttempts is how many times Commit sends a batch whose connection
// broke: enough to get past the pool's other connections, ended too.
const commitAttempts = 4

// lostConnection reports whether err says the connection broke, not that
// the batch was refused.
func lostConnection(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 57P01 admin_shutdown (pg_terminate_backend, a fast shutdown) and
		// the other FATAL ends of a session; class 08 connection
		// exceptions.
		return pe.Severity == "FATAL" || strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	return true // a network error, below PostgreSQL's messages
}

func queueLimit(b *pgx.Batch, l *sema.Limit) error {
	created, err := timeArg(l.Created)
	if err != nil {
		return fmt.Errorf("created: %w", err)
	}
	updated, err := timeArg(l.Updated)
	if err != nil {
		return fmt.Errorf("updated: %w", err)
	}
	decayAt, err := timeArg(l.DecayAt)
	if err != nil {
		return fmt.Errorf("decay_at: %w", err)
	}
	b.Queue(upsertLimit, l.ID, l.Name, int64(l.Limit), l.Active,
		l.SlotDecayPerSecond, l.AvgSlotOccupancySeconds, created, updated, l.Level, l.Denied, decayAt,
		int64(l.Idle), l.FromTemplate)
	return nil
}

func queueLease(b *pgx.Batch, l *sema.Lease) error {
	mode, err := codec.EncodeMode(l.Mode)
	if err != nil {
		return err
	}
	metadata, err := metadataArg(l.Holder.Metadata)
	if err != nil {
		return err
	}
	created, err := timeArg(l.Created)
	if err != nil {
		return fmt.Errorf("created: %w", err)
	}
	expires, err := timeArg(l.Expires)
	if err != nil {
		return fmt.Errorf("expires: %w", err)
	}
	b.Queue(upsertLease, l.ID, codec.AppendHolds([]byte{}, l.Holds), int64(l.Slots), mode,
		[]byte(l.Holder.Type), []byte(l.Holder.ID), metadata, l.Anonymous, created, int64(l.Duration), expires, fence(l.Fence),
		ticketArg(l.Ticket), l.KeyID)
	return nil
}

func queueKey(b *pgx.Batch, k *sema.Key) error {
	if k == nil {
		return errors.New("no key")
	}
	scopes, err := codec.EncodeTags(k.Scopes)
	if err != nil {
		return fmt.Errorf("scopes: %w", err)
	}
	var times [4]*int64
	for i, t := range []time.Time{k.Created, k.Expires, k.Revoked, k.LastUsed} {
		if times[i], err = timeArg(t); err != nil {
			return fmt.Errorf("key times: %w", err)
		}
	}
	hash := k.Hash
	if hash == nil {
		hash = []byte{}
	}
	b.Queue(upsertKey, k.ID, k.Name, scopes, hash, times[0], times[1], times[2], times[3])
	return nil
}

func queueAudit(b *pgx.Batch, a *sema.AuditRecord) error {
	if a == nil {
		return errors.New("no audit record")
	}
	at, err := timeArg(a.Time)
	if err != nil {
		return fmt.Errorf("audit time: %w", err)
	}
	b.Queue(insertAudit, fence(a.Seq), at, a.KeyID, a.KeyName, a.Remote, a.RequestID, a.Action, a.Target,
		int64(a.Status), a.Before, a.After)
	return nil
}

// ticketArg encodes a lease's ticket: NULL for none.
func ticketArg(t string) *string {
	if t == "" {
		return nil
	}
	return &t
}

func queueWaiter(b *pgx.Batch, w *sema.Waiter) error {
	if w == nil {
		return errors.New("no waiter")
	}
	names, err := codec.EncodeTags(w.Names)
	if err != nil {
		return err
	}
	mode, err := codec.EncodeMode(w.Mode)
	if err != nil {
		return err
	}
	metadata, err := metadataArg(w.Holder.Metadata)
	if err != nil {
		return err
	}
	since, err := timeArg(w.Since)
	if err != nil {
		return fmt.Errorf("since: %w", err)
	}
	deadline, err := timeArg(w.Deadline)
	if err != nil {
		return fmt.Errorf("deadline: %w", err)
	}
	b.Queue(upsertWaiter, w.Ticket, fence(w.Seq), names, int64(w.Slots), mode, uuidArg(w.LeaseID), int64(w.LeaseDuration),
		[]byte(w.Holder.Type), []byte(w.Holder.ID), metadata, w.NoLease, w.Anonymous, since, deadline, w.KeyID)
	return nil
}

func queueRun(b *pgx.Batch, r *sema.Run) error {
	if r == nil {
		return errors.New("no run")
	}
	t, err := codec.EncodeRun(r)
	if err != nil {
		return err
	}
	created, err := timeArg(r.Created)
	if err != nil {
		return fmt.Errorf("created: %w", err)
	}
	updated, err := timeArg(r.Updated)
	if err != nil {
		return fmt.Errorf("updated: %w", err)
	}
	b.Queue(upsertRun, r.ID, t.Kind, []byte(r.Name), t.Tags, uuidArg(r.ParentID), t.State, t.History,
		t.Strategy, int64(r.LeaseDuration), uuidArg(r.LeaseID), fence(r.Fence), fence(r.WaitSeq), created, updated,
		t.Limits, int64(r.Slots))
	return nil
}

// Close closes the pool; it waits for a call in progress. Closing again
// does nothing.
func (s *Store) Close() error {
	s.sem <- struct{}{}
	defer s.unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.pool.Close()
	return nil
}
