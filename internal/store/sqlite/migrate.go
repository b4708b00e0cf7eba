package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
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
	createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    name    TEXT    NOT NULL,
    applied INTEGER NOT NULL
) STRICT`
	selectSchemaVersion = `SELECT coalesce(max(version), 0) FROM schema_migrations`
	insertMigration     = `INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`
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
	// ReadDir sorts by file name; sort by number so that the padding does
	// not matter.
	slices.SortFunc(ms, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (numbers start at 1 and have no gaps or repeats)", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// migrate brings db's schema up to the last of ms, each migration in its
// own transaction together with its row in schema_migrations. It refuses a
// database whose version is beyond the last of ms, and returns the version
// the database is at.
func migrate(ctx context.Context, db *sql.DB, ms []migration, now func() time.Time) (int, error) {
	if _, err := db.ExecContext(ctx, createMigrationsTable); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var version int
	if err := db.QueryRowContext(ctx, selectSchemaVersion).Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(ms) {
		return version, fmt.Errorf("%w: the database is at schema version %d, this allot knows up to %d; run a newer allot or restore a backup",
			ErrSchemaTooNew, version, len(ms))
	}
	for _, m := range ms[version:] {
		if err := apply(ctx, db, m, now()); err != nil {
			return version, err
		}
		version = m.version
	}
	return version, nil
}

func apply(ctx context.Context, db *sql.DB, m migration, now time.Time) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: begin: %w", m.name, err)
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
		return fmt.Errorf("migration %s: read schema version: %w", m.name, err)
	}
	if version != m.version-1 {
		return fmt.Errorf("migration %s: database is at version %d, want %d", m.name, version, m.version-1)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, insertMigration, m.version, m.name, now.UnixNano()); err != nil {
		return fmt.Errorf("migration %s: record: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: commit: %w", m.name, err)
	}
	return nil
}
