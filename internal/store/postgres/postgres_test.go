package postgres_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/postgres"
	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
	"github.com/allot-dev/allot/internal/store/storetest"
)

// open opens a store over schema that is closed when the test ends.
func open(t *testing.T, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

type opened struct {
	*postgres.Store
	url  string
	opts postgres.Options
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			url, schema := pgtest.Schema(t)
			opts := postgres.Options{Schema: schema, MaxConns: 2}
			return opened{open(t, url, opts), url, opts}
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			o := s.(opened)
			if err := o.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return opened{open(t, o.url, o.opts), o.url, o.opts}
		},
	})
}

// query runs sql in schema and scans its one row into dest.
func query(t *testing.T, url, schema, sql string, dest ...any) {
	t.Helper()
	cfg, err := postgres.ConnConfig(url, schema, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	if len(dest) == 0 {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return
	}
	if err := conn.QueryRow(t.Context(), sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestOpenTogether opens several stores over one new schema at once, as
// replicas that start together do: each migration is applied once, and
// every store works.
func TestOpenTogether(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	const n = 5
	errs := make(chan error, n)
	stores := make(chan *postgres.Store, n)
	for range n {
		go func() {
			s, err := postgres.Open(t.Context(), url, postgres.Options{Schema: schema, MaxConns: 1})
			errs <- err
			stores <- s
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Open: %v", err)
		}
		if s := <-stores; s != nil {
			if _, err := s.Load(t.Context()); err != nil {
				t.Errorf("Load: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}
	var rows, version int
	query(t, url, schema, `SELECT count(*), max(version) FROM schema_migrations`, &rows, &version)
	if rows != version || version < 2 {
		t.Errorf("schema_migrations: %d rows up to version %d, want one row per version (at least 2)", rows, version)
	}
}

func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	open(t, url, postgres.Options{Schema: schema}).Close()
	query(t, url, schema, `INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future.sql')`)
	s, err := postgres.Open(t.Context(), url, postgres.Options{Schema: schema})
	if !errors.Is(err, postgres.ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open over a schema at version 999: got error %v, want ErrSchemaTooNew", err)
	}
}

// TestConnectionSettings checks that every connection carries the settings
// that make a stalled or dead peer noticed in seconds.
func TestConnectionSettings(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	want := map[string]string{
		"idle_in_transaction_session_timeout": "5s",
		"tcp_user_timeout":                    "5000", // milliseconds
		"tcp_keepalives_idle":                 "2",
		"tcp_keepalives_interval":             "1",
		"tcp_keepalives_count":                "3",
		"search_path":                         `"` + schema + `"`,
		"application_name":                    "allot test",
	}
	cfg, err := postgres.ConnConfig(url, schema, "allot test")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	got := map[string]string{}
	for k := range want {
		var v string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", k).Scan(&v); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		got[k] = v
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
}

// TestCommitAfterLostConnection ends every session of a store (as a
// PostgreSQL restart or an operator would) and checks that its next commit
// goes through on a new connection.
func TestCommitAfterLostConnection(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	s := open(t, url, postgres.Options{Schema: schema, ApplicationName: "allot lost-connection " + schema})
	first, second := leaseChange(1), leaseChange(2)
	if err := s.Commit(t.Context(), []sema.Change{first}); err != nil {
		t.Fatal(err)
	}
	execSQL(t, url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, "allot lost-connection "+schema)
	if err := s.Commit(t.Context(), []sema.Change{second}); err != nil {
		t.Fatalf("commit after the sessions ended: %v", err)
	}
	st, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Leases) != 2 || st.Fence != 2 {
		t.Errorf("after the commits: %d leases, fence %d; want 2 and 2", len(st.Leases), st.Fence)
	}
}
