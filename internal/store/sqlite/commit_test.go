package sqlite

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
)

// TestFailedCommit checks that a batch whose COMMIT fails leaves nothing
// behind, neither in the database nor in the fence the store remembers,
// and that the store takes the next batch.
func TestFailedCommit(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A deferred foreign key is checked at COMMIT, and a COMMIT that finds
	// it broken fails and leaves the transaction open. This temporary
	// trigger breaks one with every lease put.
	exec := func(query string) {
		t.Helper()
		if _, err := s.conn.ExecContext(t.Context(), query); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	exec(`PRAGMA foreign_keys = ON`)
	exec(`CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)`)
	exec(`CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`)
	exec(`CREATE TEMP TRIGGER break_fk AFTER INSERT ON main.leases BEGIN INSERT INTO child VALUES (1); END`)

	created := time.Date(2026, time.January, 2, 3, 4, 5, 6, time.UTC)
	lease := func(fence uint64) sema.Lease {
		return sema.Lease{ID: uuid.New(), Slots: 1, Holds: []sema.Hold{{LimitID: uuid.New(), Slots: 1}},
			Created: created, Duration: time.Minute, Expires: created.Add(time.Minute), Fence: fence}
	}
	failed := lease(5)
	err = s.Commit(t.Context(), []sema.Change{{Kind: sema.PutLease, Lease: failed}})
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("Commit with a broken deferred foreign key: got error %v, want one from COMMIT", err)
	}

	exec(`DROP TRIGGER temp.break_fk`)
	kept := lease(3)
	if err := s.Commit(t.Context(), []sema.Change{{Kind: sema.PutLease, Lease: kept}}); err != nil {
		t.Fatalf("Commit after a failed COMMIT: %v", err)
	}
	got, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := store.State{Leases: []sema.Lease{kept}, Fence: 3}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load after a failed and a good commit mismatch (-want +got):\n%s", diff)
	}
}

func TestBlob(t *testing.T) {
	t.Parallel()
	var a blob
	for _, b := range [][]byte{{1, 2, 3}, {4, 5, 6}, {7}, {}, {}, {8, 9}} {
		got, ok := a.set(b).([]byte)
		if !ok || got == nil || !bytes.Equal(got, b) {
			t.Errorf("set(%v) = %#v, want a non-nil []byte %v", b, got, b)
		}
	}
}
