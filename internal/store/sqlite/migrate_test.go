package sqlite

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/schema"
)

// openDB opens a bare database in a new directory with the store's
// settings, closed when the test ends.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	return openDBAt(t, filepath.Join(t.TempDir(), FileName))
}

func openDBAt(t *testing.T, path string) *sql.DB {
	t.Helper()
	name, err := dsn(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", name)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close database: %v", err)
		}
	})
	return db
}

func fixedNow() time.Time { return time.Unix(1_700_000_000, 0) }

func migrations(t *testing.T, files map[string]string) []schema.Migration {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, sql := range files {
		fsys["migrations/"+name] = &fstest.MapFile{Data: []byte(sql)}
	}
	ms, err := schema.Read(fsys)
	if err != nil {
		t.Fatalf("schema.Read: %v", err)
	}
	return ms
}

// tables returns the names of the tables in db, sorted.
func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestEmbeddedMigrations(t *testing.T) {
	t.Parallel()
	ms, err := schema.Read(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t)
	v, err := migrate(t.Context(), db, ms, fixedNow)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if v != len(ms) {
		t.Errorf("version = %d, want %d", v, len(ms))
	}
	want := []string{"audit", "keys", "leases", "limits", "meta", "runs", "schema_migrations", "waiters"}
	if diff := cmp.Diff(want, tables(t, db)); diff != "" {
		t.Errorf("tables mismatch (-want +got):\n%s", diff)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	v1 := map[string]string{"0001_a.sql": "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);"}
	v2 := map[string]string{"0001_a.sql": v1["0001_a.sql"], "0002_b.sql": "CREATE TABLE b (y INTEGER);\nCREATE TABLE c (z INTEGER);"}

	t.Run("applies in order and once", func(t *testing.T) {
		t.Parallel()
		db := openDB(t)
		for range 2 {
			v, err := migrate(t.Context(), db, migrations(t, v2), fixedNow)
			if err != nil || v != 2 {
				t.Fatalf("migrate = %d, %v; want 2, nil", v, err)
			}
		}
		if diff := cmp.Diff([]string{"a", "b", "c", "schema_migrations"}, tables(t, db)); diff != "" {
			t.Errorf("tables mismatch (-want +got):\n%s", diff)
		}
		var n int
		if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 1 {
			t.Errorf("rows in a = %d, %v; want 1 (0001 ran once)", n, err)
		}
		type row struct {
			Version int
			Name    string
			Applied int64
		}
		rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.Version, &r.Name, &r.Applied); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		want := []row{{1, "0001_a.sql", fixedNow().UnixNano()}, {2, "0002_b.sql", fixedNow().UnixNano()}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("schema_migrations mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("upgrades an older database", func(t *testing.T) {
		t.Parallel()
		db := openDB(t)
		if v, err := migrate(t.Context(), db, migrations(t, v1), fixedNow); err != nil || v != 1 {
			t.Fatalf("migrate to 1 = %d, %v; want 1, nil", v, err)
		}
		if v, err := migrate(t.Context(), db, migrations(t, v2), fixedNow); err != nil || v != 2 {
			t.Fatalf("migrate to 2 = %d, %v; want 2, nil", v, err)
		}
	})

	t.Run("refuses a newer database", func(t *testing.T) {
		t.Parallel()
		db := openDB(t)
		if _, err := migrate(t.Context(), db, migrations(t, v2), fixedNow); err != nil {
			t.Fatal(err)
		}
		v, err := migrate(t.Context(), db, migrations(t, v1), fixedNow)
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("migrate with fewer migrations: got error %v, want ErrSchemaTooNew", err)
		}
		if v != 2 {
			t.Errorf("version = %d, want 2", v)
		}
		for _, want := range []string{"version 2", "up to 1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})

	t.Run("a failed migration leaves nothing behind", func(t *testing.T) {
		t.Parallel()
		db := openDB(t)
		bad := map[string]string{"0001_a.sql": v1["0001_a.sql"], "0002_bad.sql": "CREATE TABLE b (y INTEGER); SELEC oops;"}
		v, err := migrate(t.Context(), db, migrations(t, bad), fixedNow)
		if err == nil || !strings.Contains(err.Error(), "0002_bad.sql") {
			t.Fatalf("migrate with a bad migration: got error %v, want one naming 0002_bad.sql", err)
		}
		if v != 1 {
			t.Errorf("version = %d, want 1", v)
		}
		if diff := cmp.Diff([]string{"a", "schema_migrations"}, tables(t, db)); diff != "" {
			t.Errorf("tables mismatch (-want +got):\n%s", diff)
		}
		// Fixed, it applies.
		if v, err := migrate(t.Context(), db, migrations(t, v2), fixedNow); err != nil || v != 2 {
			t.Fatalf("migrate after the fix = %d, %v; want 2, nil", v, err)
		}
	})
}

// TestOpenRefusesNewerSchema checks that Open will not touch a database
// that a newer allot has migrated.
func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err := schema.Read(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	db := openDBAt(t, filepath.Join(dir, FileName))
	if _, err := db.ExecContext(t.Context(), insertMigration, len(ms)+1, "9999_future.sql", 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(t.Context(), dir, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Open of a newer database: got error %v, want ErrSchemaTooNew", err)
	}
}

func TestSynchronous(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opt  string
		want int // SQLite's numbers: 1 NORMAL, 2 FULL, 3 EXTRA
	}{
		{"", 2},
		{"FULL", 2},
		{"full", 2},
		{"EXTRA", 3},
		{"NORMAL", 1},
	}
	for _, tt := range tests {
		t.Run(tt.opt, func(t *testing.T) {
			t.Parallel()
			s, err := Open(t.Context(), t.TempDir(), Options{Synchronous: tt.opt})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := s.synchronous(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("synchronous = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestOpenUpgradesFirstSchema checks that a database written before runs
// existed (schema version 1) opens with its limits and leases, and takes
// runs from then on.
func TestOpenUpgradesFirstSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ms, err := schema.Read(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	db := openDBAt(t, filepath.Join(dir, FileName))
	if v, err := migrate(t.Context(), db, ms[:1], fixedNow); err != nil || v != 1 {
		t.Fatalf("migrate to 1 = %d, %v", v, err)
	}
	// The columns of version 1, as it wrote them.
	const insertV1 = `INSERT INTO limits (id, name, slot_limit, active, slot_decay_per_second, avg_slot_occupancy_seconds,
    created, updated, level, denied, decay_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	id, tmplID := uuid.New(), uuid.New()
	for _, l := range []struct {
		id   uuid.UUID
		name string
	}{{id, "tag:db"}, {tmplID, "resource:*"}} {
		if _, err := db.ExecContext(t.Context(), insertV1, l.id[:], l.name, 3, 1, 0.0, 2.0, nil, nil, 0.0, 0.0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatalf("Open of a version 1 database: %v", err)
	}
	defer s.Close()
	st, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Limits) != 2 || len(st.Runs) != 0 {
		t.Fatalf("loaded %+v, want the two limits and no runs", st)
	}
	// Sorted by name: the template first. It takes the default idle time;
	// the plain limit has none and was not created by a template.
	if l := st.Limits[0]; l.ID != tmplID || l.Idle != sema.DefaultTemplateIdle || l.FromTemplate {
		t.Errorf("template after the upgrade: %+v, want idle %v", l, sema.DefaultTemplateIdle)
	}
	if l := st.Limits[1]; l.ID != id || l.Idle != 0 || l.FromTemplate {
		t.Errorf("plain limit after the upgrade: %+v, want no idle time", l)
	}
	run := sema.Run{ID: uuid.New(), Kind: sema.KindTask, State: sema.Pending, Tags: []string{"db"}}
	if err := s.Commit(t.Context(), []sema.Change{{Kind: sema.PutRun, Run: &run}}); err != nil {
		t.Fatalf("commit a run after the upgrade: %v", err)
	}
	// Tickets and waiters (0004) too.
	w := sema.Waiter{Ticket: "t-1", Seq: 1, Names: []string{"tag:db"}, Slots: 1, Since: fixedNow().UTC()}
	lease := sema.Lease{ID: uuid.New(), Slots: 1, Fence: 1, Ticket: "t-0", Holds: []sema.Hold{{LimitID: id, Slots: 1}}}
	if err := s.Commit(t.Context(), []sema.Change{{Kind: sema.PutWaiter, Waiter: &w}, {Kind: sema.PutLease, Lease: lease}}); err != nil {
		t.Fatalf("commit a waiter and a lease with a ticket after the upgrade: %v", err)
	}
	if st, err = s.Load(t.Context()); err != nil || len(st.Waiters) != 1 || len(st.Leases) != 1 || st.Leases[0].Ticket != "t-0" {
		t.Fatalf("loaded %+v, %v; want the waiter and the lease with its ticket", st, err)
	}
}
