package postgres

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles are the schema migrations, NNNN_name.sql, numbered from 1
// without gaps. A migration, once released, is never edited: a change to the
// schema is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaTooNew is returned by Open for a database whose schema was
// written by a newer allot than this one.
var ErrSchemaTooNew = errors.New("database schema is newer than this allot")

const (
	// lockMigrations serialises the replicas that start together: each
	// migration runs in a transaction that first takes this lock, keyed by
	// the schema the tables live in, and re-reads the version under it.
	lockMigrations        = `SELECT pg_advisory_xact_lock(hashtext('allot migrate ' || current_schema()))`
	createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer     NOT NULL PRIMARY KEY,
    name    text        NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
)`
	selectSchemaVersion = `SELECT coalesce(max(version), 0) FROM schema_migrations`
	insertMigration     = `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`
)

type migration struct {
	version int
	name    string // the file name
	sql     string
}

// readMigrations returns the migrations in fsys's migrations directory in
// order, checking that they are numbered 1, 2, 3… without gaps.
func readMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		b, err := fs.ReadFile(fsys, path.Join("migrations", name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (numbers start at 1 and have no gaps or repeats)", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// migrate brings the schema up to the last of ms, one migration per
// transaction together with its row in schema_migrations, each under the
// migration lock so that replicas starting together apply each migration
// once. It refuses a schema whose version is beyond the last of ms, and
// returns the version the schema is at.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []migration) (int, error) {
	for {
		version, done, err := migrateStep(ctx, pool, ms)
		if err != nil || done {
			return version, err
		}
	}
}

// migrateStep applies the next migration, if there is one; done reports
// that the schema is up to date.
func migrateStep(ctx context.Context, pool *pgxpool.Pool, ms []migration) (version int, done bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("migrate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit a no-op; otherwise the error is the one to report
	if _, err := tx.Exec(ctx, lockMigrations); err != nil {
		return 0, false, fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
		return 0, false, fmt.Errorf("create schema_migrations: %w", err)
	}
	if err := tx.QueryRow(ctx, selectSchemaVersion).Scan(&version); err != nil {
		return 0, false, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(ms) {
		return version, false, fmt.Errorf("%w: the database is at schema version %d, this allot knows up to %d; run a newer allot or restore a backup",
			ErrSchemaTooNew, version, len(ms))
	}
	if version == len(ms) {
		return version, true, tx.Commit(ctx)
	}
	m := ms[version]
	// The simple protocol runs a file of several statements.
	if _, err := tx.Exec(ctx, m.sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return version, false, fmt.Errorf("migration %s: %w", m.name, err)
	}
	if _, err := tx.Exec(ctx, insertMigration, m.version, m.name); err != nil {
		return version, false, fmt.Errorf("migration %s: record: %w", m.name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return version, false, fmt.Errorf("migration %s: commit: %w", m.name, err)
	}
	return m.version, false, nil
}
