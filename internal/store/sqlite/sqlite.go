// Package sqlite is allot's embedded store: the durable shadow of the state
// machine kept in one SQLite database file, allot.db, in a data directory.
// It uses modernc.org/sqlite, a SQLite compiled to pure Go, so allot needs
// no cgo.
//
// # What it owns
//
// The data directory's database file and its write-ahead log; the schema,
// brought up to date by the numbered migrations embedded in the binary
// (migrations/NNNN_name.sql); and the encodings of limits, leases and runs
// in that schema (see encode.go).
//
// # Invariants
//
//   - One process at a time: the database is opened in SQLite's exclusive
//     locking mode, so a second allot on the same directory fails to open
//     (ErrLocked) instead of running a second state machine over the same
//     slots.
//   - One Commit is one transaction: its changes are applied in order and
//     are all visible after a crash or none is. With Synchronous "FULL" (the
//     default) Commit returns only once the write-ahead log is on disk.
//   - The fencing high-water mark (meta.fence) never goes down.
//   - The schema only moves forward: Open applies the migrations this binary
//     knows and refuses a database written by a newer one
//     (ErrSchemaTooNew).
//
// A Store serialises its calls; it is safe for concurrent use, but the
// coordinator is expected to call Commit from one writer goroutine that
// groups the changes of many commands into each call.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/codec"
	"github.com/allot-dev/allot/internal/store/schema"
)

// FileName is the name of the database file in the data directory.
const FileName = "allot.db"

// DefaultBusyTimeout is how long Open waits, by default, for another process
// to let go of the database.
const DefaultBusyTimeout = 5 * time.Second

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("database is in use by another process")

// Options tune a Store. The zero value is the durable default.
type Options struct {
	// Synchronous is SQLite's synchronous setting: "FULL" (the default)
	// makes every Commit durable when it returns, even across a power
	// failure; "EXTRA" is FULL and also syncs the directory; "NORMAL" may
	// lose the last commits on a power failure (never on a crash of the
	// process alone) and is only for benchmarks and tests that say so.
	Synchronous string
	// BusyTimeout is how long Open waits for another process to let go of
	// the database before it fails with ErrLocked; zero means
	// DefaultBusyTimeout.
	BusyTimeout time.Duration
}

// Store is the SQLite store. It implements store.Store.
type Store struct {
	dir string
	db  *sql.DB
	// conn is db's one connection, held from Open to Close: it holds the
	// exclusive lock. Load reads through it with database/sql; Commit
	// writes through statements prepared on its driver connection (see
	// stmt), so that a batch costs little more than SQLite's own work.
	conn *sql.Conn

	// sem is held by the call in progress; it serialises calls and guards
	// the fields below.
	sem    chan struct{}
	closed bool
	fence  uint64 // meta.fence as of the last commit
	// Scratch for the leases' columns, reused from lease to lease.
	holds             []byte
	leaseID, holdsArg blob

	// The statements, prepared on conn's driver connection: use them only
	// inside conn.Raw.
	begin, commit, rollback                                      *stmt
	upsertLimit, deleteLimit, upsertLease, deleteLease, setFence *stmt
	upsertRun, deleteRun                                         *stmt
	upsertWaiter, deleteWaiter                                   *stmt
	upsertKey, insertAudit, pruneAudit                           *stmt
}

var _ store.Store = (*Store)(nil)

const (
	pragmaJournalMode = `PRAGMA journal_mode`
	pragmaSynchronous = `PRAGMA synchronous`
	pragmaLockingMode = `PRAGMA locking_mode`

	selectLimits = `SELECT id, name, slot_limit, active, slot_decay_per_second, avg_slot_occupancy_seconds,
       created, updated, level, denied, decay_at, idle, from_template
FROM limits ORDER BY name`
	selectLeases = `SELECT id, holds, slots, mode, holder_type, holder_id, holder_metadata, anonymous,
       created, duration, expires, fence, ticket, key_id
FROM leases ORDER BY id`
	selectAudit = `SELECT seq, at, key_id, key_name, remote, request_id, action, target, status, before, after
FROM audit ORDER BY seq`
	insertAudit = `INSERT INTO audit (seq, at, key_id, key_name, remote, request_id, action, target, status, before, after)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	pruneAudit = `DELETE FROM audit WHERE at < ?`
	selectKeys = `SELECT id, name, scopes, hash, created, expires, revoked, last_used FROM keys ORDER BY id`
	upsertKey  = `INSERT INTO keys (id, name, scopes, hash, created, expires, revoked, last_used)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    scopes = excluded.scopes,
    hash = excluded.hash,
    created = excluded.created,
    expires = excluded.expires,
    revoked = excluded.revoked,
    last_used = excluded.last_used`
	selectWaiters = `SELECT ticket, seq, names, slots, mode, lease_id, lease_duration, holder_type, holder_id,
       holder_metadata, no_lease, anonymous, since, deadline, key_id
FROM waiters ORDER BY ticket`
	selectFence = `SELECT value FROM meta WHERE key = 'fence'`
	selectRuns  = `SELECT id, kind, name, tags, parent_id, state, history, collision_strategy, lease_duration,
       lease_id, fence, wait_seq, created, updated, limits, slots
FROM runs ORDER BY id`

	upsertLimit = `INSERT INTO limits (id, name, slot_limit, active, slot_decay_per_second, avg_slot_occupancy_seconds,
    created, updated, level, denied, decay_at, idle, from_template)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
	deleteLimit = `DELETE FROM limits WHERE id = ?`

	upsertLease = `INSERT INTO leases (id, holds, slots, mode, holder_type, holder_id, holder_metadata, anonymous,
    created, duration, expires, fence, ticket, key_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
	deleteLease = `DELETE FROM leases WHERE id = ?`

	upsertWaiter = `INSERT INTO waiters (ticket, seq, names, slots, mode, lease_id, lease_duration, holder_type,
    holder_id, holder_metadata, no_lease, anonymous, since, deadline, key_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
	deleteWaiter = `DELETE FROM waiters WHERE ticket = ?`

	upsertRun = `INSERT INTO runs (id, kind, name, tags, parent_id, state, history, collision_strategy, lease_duration,
    lease_id, fence, wait_seq, created, updated, limits, slots)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
	deleteRun = `DELETE FROM runs WHERE id = ?`

	setFence = `UPDATE meta SET value = ? WHERE key = 'fence'`

	// begin takes the write lock at once, as the connection's other
	// transactions do (_txlock=immediate).
	begin    = `BEGIN IMMEDIATE`
	commit   = `COMMIT`
	rollback = `ROLLBACK`
)

// synchronousMode returns the pragma value for Options.Synchronous.
func synchronousMode(s string) (string, bool) {
	switch strings.ToUpper(s) {
	case "", "FULL":
		return "FULL", true
	case "EXTRA":
		return "EXTRA", true
	case "NORMAL":
		return "NORMAL", true
	}
	return "", false
}

// dsn returns the data source name that opens path with the store's
// settings on every connection.
func dsn(path string, opts Options) (string, error) {
	sync, ok := synchronousMode(opts.Synchronous)
	if !ok {
		return "", fmt.Errorf("synchronous %q: want FULL, EXTRA or NORMAL", opts.Synchronous)
	}
	busy := opts.BusyTimeout
	if busy == 0 {
		busy = DefaultBusyTimeout
	}
	if busy < 0 {
		return "", fmt.Errorf("busy timeout %v: must not be negative", busy)
	}
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(max(1, busy.Milliseconds()), 10))
	// Exclusive locking must come before WAL mode is entered (the driver
	// applies _pragma before _journal_mode): SQLite then keeps the WAL index
	// in the process's memory instead of a shared-memory file, and holds the
	// lock until the connection closes.
	q.Add("_pragma", "locking_mode(EXCLUSIVE)")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", sync)
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	if !strings.HasPrefix(u.Path, "/") { // a Windows drive letter
		u.Path = "/" + u.Path
	}
	return u.String(), nil
}

// Open opens the store in dir, creating dir and the database if they do not
// exist, and brings the schema up to date.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	name, err := dsn(filepath.Join(abs, FileName), opts)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create data directory: %w", err)
	}
	db, err := sql.Open("sqlite", name)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// One connection: it holds the exclusive lock, and there is one writer.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	s := &Store{dir: dir, db: db, sem: make(chan struct{}, 1)}
	if err := s.init(ctx); err != nil {
		_ = s.release() // the init error is the one to report
		if isBusy(err) {
			err = fmt.Errorf("%w: %w", ErrLocked, err)
		}
		return nil, fmt.Errorf("open store in %s: %w", dir, err)
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	ms, err := schema.Read(migrationFiles)
	if err != nil {
		return err
	}
	if _, err := migrate(ctx, s.db, ms, time.Now); err != nil {
		return err
	}
	// The driver applies the pragmas; make sure they took.
	for _, p := range []struct{ pragma, want string }{
		{pragmaJournalMode, "wal"},
		{pragmaLockingMode, "exclusive"},
	} {
		var got string
		if err := s.db.QueryRowContext(ctx, p.pragma).Scan(&got); err != nil {
			return fmt.Errorf("read %s: %w", p.pragma, err)
		}
		if !strings.EqualFold(got, p.want) {
			return fmt.Errorf("%s is %q, want %q", p.pragma, got, p.want)
		}
	}
	var v int64
	if err := s.db.QueryRowContext(ctx, selectFence).Scan(&v); err != nil {
		return fmt.Errorf("read fence: %w", err)
	}
	s.fence = scanFence(v)
	if s.conn, err = s.db.Conn(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return s.conn.Raw(func(c any) error {
		for _, p := range []struct {
			stmt  **stmt
			query string
		}{
			{&s.begin, begin},
			{&s.commit, commit},
			{&s.rollback, rollback},
			{&s.upsertLimit, upsertLimit},
			{&s.deleteLimit, deleteLimit},
			{&s.upsertLease, upsertLease},
			{&s.deleteLease, deleteLease},
			{&s.setFence, setFence},
			{&s.upsertRun, upsertRun},
			{&s.deleteRun, deleteRun},
			{&s.upsertWaiter, upsertWaiter},
			{&s.deleteWaiter, deleteWaiter},
			{&s.upsertKey, upsertKey},
			{&s.insertAudit, insertAudit},
			{&s.pruneAudit, pruneAudit},
		} {
			if *p.stmt, err = prepare(ctx, c, p.query); err != nil {
				return fmt.Errorf("prepare: %w", err)
			}
		}
		return nil
	})
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// Dir returns the data directory the store was opened in.
func (s *Store) Dir() string { return s.dir }

// synchronous reports the synchronous setting in force, for tests.
func (s *Store) synchronous(ctx context.Context) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.unlock()
	var v int
	err := s.conn.QueryRowContext(ctx, pragmaSynchronous).Scan(&v)
	return v, err
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

// Load returns the committed state. Limits come sorted by name and leases
// by id.
func (s *Store) Load(ctx context.Context) (store.State, error) {
	if err := s.lock(ctx); err != nil {
		return store.State{}, fmt.Errorf("load: %w", err)
	}
	defer s.unlock()
	if s.closed {
		return store.State{}, store.ErrClosed
	}
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return store.State{}, fmt.Errorf("load: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // read only: nothing to keep or report
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
	var v int64
	if err := tx.QueryRowContext(ctx, selectFence).Scan(&v); err != nil {
		return store.State{}, fmt.Errorf("load fence: %w", err)
	}
	st.Fence = scanFence(v)
	return st, nil
}

func loadLimits(ctx context.Context, tx *sql.Tx) ([]sema.Limit, error) {
	rows, err := tx.QueryContext(ctx, selectLimits)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Limit
	for rows.Next() {
		var (
			l                          sema.Limit
			id                         []byte
			active, idle, fromTemplate int64
			created, updated, decayAt  sql.Null[int64]
		)
		if err := rows.Scan(&id, &l.Name, &l.Limit, &active, &l.SlotDecayPerSecond, &l.AvgSlotOccupancySeconds,
			&created, &updated, &l.Level, &l.Denied, &decayAt, &idle, &fromTemplate); err != nil {
			return nil, err
		}
		if l.ID, err = uuid.FromBytes(id); err != nil {
			return nil, fmt.Errorf("limit id: %w", err)
		}
		l.Active = active != 0
		l.Idle, l.FromTemplate = time.Duration(idle), fromTemplate != 0
		l.Created, l.Updated, l.DecayAt = scanTime(created), scanTime(updated), scanTime(decayAt)
		out = append(out, l)
	}
	return out, rows.Err()
}

func loadLeases(ctx context.Context, tx *sql.Tx) ([]sema.Lease, error) {
	rows, err := tx.QueryContext(ctx, selectLeases)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Lease
	for rows.Next() {
		var (
			l                sema.Lease
			id, holds        []byte
			mode             string
			metadata         sql.Null[string]
			anonymous        int64
			created, expires sql.Null[int64]
			duration, fence  int64
			ticket           sql.Null[string]
		)
		if err := rows.Scan(&id, &holds, &l.Slots, &mode, &l.Holder.Type, &l.Holder.ID, &metadata, &anonymous,
			&created, &duration, &expires, &fence, &ticket, &l.KeyID); err != nil {
			return nil, err
		}
		if l.ID, err = uuid.FromBytes(id); err != nil {
			return nil, fmt.Errorf("lease id: %w", err)
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
		l.Anonymous = anonymous != 0
		l.Created, l.Expires = scanTime(created), scanTime(expires)
		l.Duration = time.Duration(duration)
		l.Fence = scanFence(fence)
		l.Ticket = ticket.V
		out = append(out, l)
	}
	return out, rows.Err()
}

func loadWaiters(ctx context.Context, tx *sql.Tx) ([]sema.Waiter, error) {
	rows, err := tx.QueryContext(ctx, selectWaiters)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Waiter
	for rows.Next() {
		var (
			w                  sema.Waiter
			seq, duration      int64
			names, mode        string
			leaseID            []byte
			metadata           sql.Null[string]
			noLease, anonymous int64
			since, deadline    sql.Null[int64]
		)
		if err := rows.Scan(&w.Ticket, &seq, &names, &w.Slots, &mode, &leaseID, &duration, &w.Holder.Type,
			&w.Holder.ID, &metadata, &noLease, &anonymous, &since, &deadline, &w.KeyID); err != nil {
			return nil, err
		}
		if w.Names, err = codec.DecodeTags(names); err != nil {
			return nil, fmt.Errorf("waiter %s: names: %w", w.Ticket, err)
		}
		if w.Mode, err = codec.DecodeMode(mode); err != nil {
			return nil, fmt.Errorf("waiter %s: %w", w.Ticket, err)
		}
		if w.LeaseID, err = scanUUID(leaseID); err != nil {
			return nil, fmt.Errorf("waiter %s: lease id: %w", w.Ticket, err)
		}
		if w.Holder.Metadata, err = scanMetadata(metadata); err != nil {
			return nil, fmt.Errorf("waiter %s: %w", w.Ticket, err)
		}
		w.Seq, w.LeaseDuration = scanFence(seq), time.Duration(duration)
		w.NoLease, w.Anonymous = noLease != 0, anonymous != 0
		w.Since, w.Deadline = scanTime(since), scanTime(deadline)
		out = append(out, w)
	}
	return out, rows.Err()
}

func loadKeys(ctx context.Context, tx *sql.Tx) ([]sema.Key, error) {
	rows, err := tx.QueryContext(ctx, selectKeys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Key
	for rows.Next() {
		var (
			k                                  sema.Key
			scopes                             string
			created, expires, revoked, lastUse sql.Null[int64]
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

func loadAudit(ctx context.Context, tx *sql.Tx) ([]sema.AuditRecord, error) {
	rows, err := tx.QueryContext(ctx, selectAudit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.AuditRecord
	for rows.Next() {
		var (
			a   sema.AuditRecord
			seq int64
			at  sql.Null[int64]
		)
		if err := rows.Scan(&seq, &at, &a.KeyID, &a.KeyName, &a.Remote, &a.RequestID, &a.Action, &a.Target,
			&a.Status, &a.Before, &a.After); err != nil {
			return nil, err
		}
		a.Seq, a.Time = uint64(seq), scanTime(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

func loadRuns(ctx context.Context, tx *sql.Tx) ([]sema.Run, error) {
	rows, err := tx.QueryContext(ctx, selectRuns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sema.Run
	for rows.Next() {
		var (
			r                               sema.Run
			t                               codec.RunText
			id, parent, lease               []byte
			duration, fence, waitSeq, slots int64
			created, updated                sql.Null[int64]
		)
		if err := rows.Scan(&id, &t.Kind, &r.Name, &t.Tags, &parent, &t.State, &t.History, &t.Strategy, &duration,
			&lease, &fence, &waitSeq, &created, &updated, &t.Limits, &slots); err != nil {
			return nil, err
		}
		if r.ID, err = uuid.FromBytes(id); err != nil {
			return nil, fmt.Errorf("run id: %w", err)
		}
		if err := t.Decode(&r); err != nil {
			return nil, err
		}
		r.Slots = int(slots)
		if r.ParentID, err = scanUUID(parent); err != nil {
			return nil, fmt.Errorf("run %s: parent id: %w", r.ID, err)
		}
		if r.LeaseID, err = scanUUID(lease); err != nil {
			return nil, fmt.Errorf("run %s: lease id: %w", r.ID, err)
		}
		r.LeaseDuration = time.Duration(duration)
		r.Fence, r.WaitSeq = scanFence(fence), scanFence(waitSeq)
		r.Created, r.Updated = scanTime(created), scanTime(updated)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Commit applies changes in order in one transaction and returns once it is
// durable. A change of an unknown kind, a limit whose name another limit
// has, or a value the schema cannot hold (a time outside the years 1678 to
// 2262, a NaN) fails the whole batch. ctx is checked before each change;
// once the transaction commits it is not interrupted.
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
	return s.conn.Raw(func(any) error { return s.apply(ctx, changes) })
}

// apply is Commit's transaction; it runs inside conn.Raw. Its statements
// run without ctx (see stmt.run), which is checked between them instead.
func (s *Store) apply(ctx context.Context, changes []sema.Change) (err error) {
	if err := s.begin.run(); err != nil {
		return fmt.Errorf("commit: begin: %w", err)
	}
	defer func() {
		if err != nil {
			// This also ends the transaction a failed COMMIT can leave
			// open, so that the next Commit can begin; if the COMMIT
			// ended it, the ROLLBACK fails, which is fine.
			_ = s.rollback.run() // the error that made us roll back is the one to report
		}
	}()
	fence := s.fence
	for i := range changes {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		c := &changes[i]
		var err error
		switch c.Kind {
		case sema.PutLimit:
			err = s.putLimit(&c.Limit)
		case sema.DeleteLimit:
			err = s.deleteLimit.run(c.ID[:])
		case sema.PutLease:
			err = s.putLease(&c.Lease)
			fence = max(fence, c.Lease.Fence)
		case sema.DeleteLease:
			err = s.deleteLease.run(s.leaseID.set(c.ID[:]))
		case sema.PutRun:
			err = s.putRun(c.Run)
		case sema.DeleteRun:
			err = s.deleteRun.run(c.ID[:])
		case sema.PutWaiter:
			err = s.putWaiter(c.Waiter)
		case sema.DeleteWaiter:
			err = s.deleteWaiter.run(c.Ticket)
		case sema.PutKey:
			err = s.putKey(c.Key)
		case sema.PutAudit:
			err = s.putAudit(c.Audit)
		case sema.PruneAudit:
			var before any
			if before, err = timeArg(c.Before); err == nil {
				err = s.pruneAudit.run(before)
			}
		default:
			return fmt.Errorf("commit: change %d of %d: unknown kind %d", i+1, len(changes), c.Kind)
		}
		if err != nil {
			return fmt.Errorf("commit: change %d of %d (%s): %w", i+1, len(changes), codec.Describe(c), err)
		}
	}
	if fence != s.fence {
		if err := s.setFence.run(fenceArg(fence)); err != nil {
			return fmt.Errorf("commit: set fence: %w", err)
		}
	}
	if err := s.commit.run(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.fence = fence
	return nil
}

func (s *Store) putLimit(l *sema.Limit) error {
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
	return s.upsertLimit.run(l.ID[:], l.Name, int64(l.Limit), boolArg(l.Active),
		l.SlotDecayPerSecond, l.AvgSlotOccupancySeconds, created, updated, l.Level, l.Denied, decayAt,
		int64(l.Idle), boolArg(l.FromTemplate))
}

func (s *Store) putLease(l *sema.Lease) error {
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
	s.holds = codec.AppendHolds(s.holds[:0], l.Holds)
	return s.upsertLease.run(s.leaseID.set(l.ID[:]), s.holdsArg.set(s.holds), int64(l.Slots), mode,
		l.Holder.Type, l.Holder.ID, metadata, boolArg(l.Anonymous), created, int64(l.Duration), expires, fenceArg(l.Fence),
		ticketArg(l.Ticket), l.KeyID)
}

// ticketArg encodes a lease's ticket: NULL for none.
func ticketArg(t string) any {
	if t == "" {
		return nil
	}
	return t
}

func (s *Store) putWaiter(w *sema.Waiter) error {
	if w == nil {
		return errors.New("no waiter")
	}
	mode, err := codec.EncodeMode(w.Mode)
	if err != nil {
		return err
	}
	names, err := codec.EncodeTags(w.Names)
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
	return s.upsertWaiter.run(w.Ticket, fenceArg(w.Seq), names, int64(w.Slots), mode, uuidArg(w.LeaseID),
		int64(w.LeaseDuration), w.Holder.Type, w.Holder.ID, metadata, boolArg(w.NoLease), boolArg(w.Anonymous),
		since, deadline, w.KeyID)
}

func (s *Store) putRun(r *sema.Run) error {
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
	return s.upsertRun.run(r.ID[:], t.Kind, r.Name, t.Tags, uuidArg(r.ParentID), t.State, t.History,
		t.Strategy, int64(r.LeaseDuration), uuidArg(r.LeaseID), fenceArg(r.Fence), fenceArg(r.WaitSeq), created, updated,
		t.Limits, int64(r.Slots))
}

func (s *Store) putKey(k *sema.Key) error {
	if k == nil {
		return errors.New("no key")
	}
	scopes, err := codec.EncodeTags(k.Scopes)
	if err != nil {
		return fmt.Errorf("scopes: %w", err)
	}
	var times [4]any
	for i, t := range []time.Time{k.Created, k.Expires, k.Revoked, k.LastUsed} {
		if times[i], err = timeArg(t); err != nil {
			return fmt.Errorf("key times: %w", err)
		}
	}
	hash := k.Hash
	if hash == nil {
		hash = []byte{}
	}
	return s.upsertKey.run(k.ID, k.Name, scopes, hash, times[0], times[1], times[2], times[3])
}

func (s *Store) putAudit(a *sema.AuditRecord) error {
	if a == nil {
		return errors.New("no audit record")
	}
	at, err := timeArg(a.Time)
	if err != nil {
		return fmt.Errorf("audit time: %w", err)
	}
	return s.insertAudit.run(int64(a.Seq), at, a.KeyID, a.KeyName, a.Remote, a.RequestID, a.Action, a.Target,
		int64(a.Status), a.Before, a.After)
}

// Close closes the database; it waits for a call in progress. Closing again
// does nothing.
func (s *Store) Close() error {
	s.sem <- struct{}{}
	defer s.unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.release(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// release closes the statements, the connection and the database, as far as
// Open got.
func (s *Store) release() error {
	var errs []error
	if s.conn != nil {
		errs = append(errs, s.conn.Raw(func(any) error {
			return closeStmts(s.begin, s.commit, s.rollback, s.upsertLimit, s.deleteLimit,
				s.upsertLease, s.deleteLease, s.setFence, s.upsertRun, s.deleteRun, s.upsertWaiter, s.deleteWaiter,
				s.upsertKey, s.insertAudit, s.pruneAudit)
		}))
		errs = append(errs, s.conn.Close())
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}
