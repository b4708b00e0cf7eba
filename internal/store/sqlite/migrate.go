package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

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
	createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    name    TEXT    NOT NULL,
    applied INTEGER NOT NULL
) STRICT`
	selectSchemaVersion = `SELECT coalesce(max(version), 0) FROM schema_migrations`
	insertMigration     = `INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`
)

// migrate brings db's schema up to the last of ms, each migration in its
// own transaction together with its row in schema_migrations. It refuses a
// database whose version is beyond the last of ms, and returns the version
// the database is at.
func migrate(ctx context.Context, db *sql.DB, ms []schema.Migration, now func() time.Time) (int, error) {
	if _, err := db.ExecContext(ctx, createMigrationsTable); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var version int
	if err := db.QueryRowContext(ctx, selectSchemaVersion).Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	pending, err := schema.Pending(ms, version)
	if err != nil {
		return version, err
	}
	for _, m := range pending {
		if err := apply(ctx, db, m, now()); err != nil {
			return version, err
		}
		version = m.Version
	}
	return version, nil
}

func apply(ctx context.Context, db *sql.DB, m schema.Migration, now time.Time) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: begin: %w", m.Name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that made us roll back is the one to report
		}
	}()
	// Check again inside the transaction: the version read before it is
	// only a hint.
	var version int
	if err := tx.QueryRowContext(ctx, selectSchemaVersion).Scan(&version); err != nil {
		return fmt.Errorf("migration %s: read schema version: %w", m.Name, err)
	}
	if version != m.Version-1 {
		return fmt.Errorf("migration %s: database is at version %d, want %d", m.Name, version, m.Version-1)
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migration %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, insertMigration, m.Version, m.Name, now.UnixNano()); err != nil {
		return fmt.Errorf("migration %s: record: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: commit: %w", m.Name, err)
	}
	return nil
}
