// Package schema holds what the SQL stores (internal/store/sqlite,
// internal/store/postgres) share about their schema migrations: how the
// migration files are found and ordered, and the rule that a database whose
// schema is newer than this allot knows is refused. Applying a migration is
// SQL, and stays in each store.
//
// A store's migrations are files migrations/NNNN_name.sql, numbered from 1
// without gaps. A migration, once released, is never edited: a change to
// the schema is a new file.
package schema

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// ErrTooNew is the error of a database whose schema was written by a newer
// allot than this one.
var ErrTooNew = errors.New("database schema is newer than this allot")

// Migration is one schema migration.
type Migration struct {
	Version int
	Name    string // the file name
	SQL     string
}

// Read returns the migrations in fsys's migrations directory in order,
// checking that they are numbered 1, 2, 3… without gaps.
func Read(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
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
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	// ReadDir sorts by file name; sort by number so that the padding does
	// not matter.
	slices.SortFunc(ms, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (numbers start at 1 and have no gaps or repeats)", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}

// Pending returns the migrations of ms that a database at version has not
// applied yet, in order. A version beyond the last of ms is ErrTooNew.
func Pending(ms []Migration, version int) ([]Migration, error) {
	if version > len(ms) {
		return nil, fmt.Errorf("%w: the database is at schema version %d, this allot knows up to %d; run a newer allot or restore a backup",
			ErrTooNew, version, len(ms))
	}
	return ms[version:], nil
}
