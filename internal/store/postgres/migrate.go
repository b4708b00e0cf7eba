package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/allot-dev/allot/internal/store/schema"
)

// migrationFiles are the schema migrations, NNNN_name.sql, read by
// schema.Read (which says the rules on their names and numbers).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaTooNew is returned by Open for a database whose schema was
// written by a newer allot than this one (schema.ErrTooNew, the one rule of
// both SQL stores).
var ErrSchemaTooNew = schema.ErrTooNew

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

// migrate brings the schema up to the last of ms, one migration per
// transaction together with its row in schema_migrations, each under the
// migration lock so that replicas starting together apply each migration
// once. It refuses a schema whose version is beyond the last of ms, and
// returns the version the schema is at.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []schema.Migration) (int, error) {
	for {
		version, done, err := migrateStep(ctx, pool, ms)
		if err != nil || done {
			return version, err
		}
	}
}

// migrateStep applies the next migration, if there is one; done reports
// that the schema is up to date.
func migrateStep(ctx context.Context, pool *pgxpool.Pool, ms []schema.Migration) (version int, done bool, err error) {
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
	pending, err := schema.Pending(ms, version)
	if err != nil {
		return version, false, err
	}
	if len(pending) == 0 {
		return version, true, tx.Commit(ctx)
	}
	m := pending[0]
	// The simple protocol runs a file of several statements.
	if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
		return version, false, fmt.Errorf("migration %s: %w", m.Name, err)
	}
	if _, err := tx.Exec(ctx, insertMigration, m.Version, m.Name); err != nil {
		return version, false, fmt.Errorf("migration %s: record: %w", m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return version, false, fmt.Errorf("migration %s: commit: %w", m.Name, err)
	}
	return m.Version, false, nil
}
