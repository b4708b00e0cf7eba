package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/postgres"
	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
)

// ttl is the leader lease of these tests: short, so that take-overs that
// wait for it are quick. Bounds on how long a take-over takes are generous
// multiples of it.
const ttl = time.Second

// within is how long a take-over may take at most in these tests: the
// lease, a campaign poll, and a wide margin for a busy machine.
const within = ttl + 4*time.Second

func newCandidate(t *testing.T, url, schema, id string) *postgres.Candidate {
	t.Helper()
	// The tables must exist; the replica opens its store before it
	// campaigns.
	open(t, url, postgres.Options{Schema: schema, MaxConns: 1})
	c, err := postgres.NewCandidate(t.Context(), postgres.CandidateConfig{
		URL: url, Schema: schema, ID: id, Address: id + ".example:4200", TTL: ttl,
	})
	if err != nil {
		t.Fatalf("NewCandidate(%s): %v", id, err)
	}
	t.Cleanup(c.Close)
	return c
}

type campaignResult struct {
	term *postgres.Term
	err  error
}

// campaigner is a campaign in the background; when the test ends it is
// stopped, and the term it won resigned.
type campaigner struct {
	ch     chan campaignResult
	got    *campaignResult
	cancel context.CancelFunc
}

func campaign(t *testing.T, c *postgres.Candidate) *campaigner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cp := &campaigner{ch: make(chan campaignResult, 1), cancel: cancel}
	go func() {
		term, err := c.Campaign(ctx)
		cp.ch <- campaignResult{term, err}
	}()
	t.Cleanup(func() {
		cancel()
		if cp.got == nil {
			r := <-cp.ch
			cp.got = &r
		}
		if cp.got.term != nil {
			cp.got.term.Resign()
		}
	})
	return cp
}

// won reports the campaign's result if it has ended within d, or nil.
func (cp *campaigner) won(d time.Duration) *campaignResult {
	if cp.got != nil {
		return cp.got
	}
	select {
	case r := <-cp.ch:
		cp.got = &r
		return cp.got
	case <-time.After(d):
		return nil
	}
}

// wait waits up to d for the campaign to win.
func (cp *campaigner) wait(t *testing.T, d time.Duration) *postgres.Term {
	t.Helper()
	r := cp.won(d)
	if r == nil {
		t.Fatalf("no lead won within %v", d)
	}
	if r.err != nil {
		t.Fatalf("Campaign: %v", r.err)
	}
	return r.term
}

// lead campaigns alone and returns the term, resigned when the test ends.
func lead(t *testing.T, c *postgres.Candidate) *postgres.Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	term, err := c.Campaign(ctx)
	if err != nil {
		t.Fatalf("Campaign alone: %v", err)
	}
	t.Cleanup(term.Resign)
	return term
}

func waitDone(t *testing.T, term *postgres.Term, d time.Duration) {
	t.Helper()
	select {
	case <-term.Done():
	case <-time.After(d):
		t.Fatalf("term of epoch %d still on %v after it lost the lead", term.Epoch(), d)
	}
}

func execSQL(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func leaseChange(fence uint64) sema.Change {
	return sema.Change{Kind: sema.PutLease, Lease: sema.Lease{ID: uuid.New(), Slots: 1, Fence: fence,
		Created: time.Unix(1, 0).UTC(), Expires: time.Unix(2, 0).UTC(), Duration: time.Second}}
}

func TestOneLeads(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	a, b := newCandidate(t, url, schema, "a"), newCandidate(t, url, schema, "b")
	cpA, cpB := campaign(t, a), campaign(t, b)
	var winner *postgres.Term
	var winnerID string
	var loser *campaigner
	deadline := time.Now().Add(within)
	for winner == nil {
		if time.Now().After(deadline) {
			t.Fatalf("nobody led within %v", within)
		}
		if r := cpA.won(10 * time.Millisecond); r != nil {
			winner, winnerID, loser = cpA.wait(t, 0), "a", cpB
		} else if r := cpB.won(10 * time.Millisecond); r != nil {
			winner, winnerID, loser = cpB.wait(t, 0), "b", cpA
		}
	}

	l, err := a.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (postgres.Leader{Epoch: winner.Epoch(), ID: winnerID, Address: winnerID + ".example:4200", Live: true}); l != want {
		t.Errorf("Leader() = %+v, want %+v", l, want)
	}
	// While the winner renews, over several leases, the other one does not
	// lead.
	deadline = time.Now().Add(10 * ttl)
	for winner.Renewals() < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("the leader renewed %d times in %v, want 9 (every ttl/3)", winner.Renewals(), 10*ttl)
		}
		if r := loser.won(10 * time.Millisecond); r != nil {
			t.Fatalf("a second replica leads while the first (epoch %d) renews: %+v", winner.Epoch(), *r)
		}
	}
	select {
	case <-winner.Done():
		t.Fatalf("the leader's term ended: %v", winner.Err())
	default:
	}

	// It resigns: the other takes over, with a higher epoch.
	winner.Resign()
	if !errors.Is(winner.Err(), postgres.ErrResigned) {
		t.Errorf("Err after Resign = %v, want ErrResigned", winner.Err())
	}
	if next := loser.wait(t, within); next.Epoch() <= winner.Epoch() {
		t.Errorf("successor's epoch %d, want above %d", next.Epoch(), winner.Epoch())
	}
}

// TestTakeOver deposes a leader in the two ways a leader is lost (its
// sessions end, or it stops renewing, as a paused process does) and checks
// that another replica leads within the lease, with a higher epoch, and
// that the deposed leader's store commits nothing more.
func TestTakeOver(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		depose func(t *testing.T, url string, a *postgres.Candidate, term *postgres.Term) (undo func())
		// why is what the old term ends with.
		why []error
	}{
		{"sessions terminated", func(t *testing.T, url string, a *postgres.Candidate, term *postgres.Term) func() {
			execSQL(t, url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, a.ApplicationName())
			return func() {}
		}, []error{postgres.ErrDeposed}},
		{"renewals stopped", func(t *testing.T, url string, a *postgres.Candidate, term *postgres.Term) func() {
			return term.PauseRenewals()
		}, []error{postgres.ErrLostLead, postgres.ErrDeposed}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, schema := pgtest.Schema(t)
			a, b := newCandidate(t, url, schema, "a"), newCandidate(t, url, schema, "b")
			termA := lead(t, a)
			storeA := open(t, url, postgres.Options{Schema: schema, Epoch: termA.Epoch(), ApplicationName: a.ApplicationName()})
			before := leaseChange(1)
			if err := storeA.Commit(t.Context(), []sema.Change{before}); err != nil {
				t.Fatalf("leader's commit: %v", err)
			}

			cpB := campaign(t, b)
			start := time.Now()
			undo := tt.depose(t, url, a, termA)
			termB := cpB.wait(t, within)
			t.Logf("take-over after %v", time.Since(start))
			if tt.name == "renewals stopped" && termA.Trusted() {
				// The successor waited for the lease to lapse by the
				// database's clock; the old leader stopped trusting it
				// before that, by its own.
				t.Errorf("the old leader still trusts its lease after a successor took over at its lapse")
			}
			if termB.Epoch() <= termA.Epoch() {
				t.Errorf("new epoch %d, want above %d", termB.Epoch(), termA.Epoch())
			}

			// The deposed leader's commits fail, and apply nothing.
			late := leaseChange(2)
			if err := storeA.Commit(t.Context(), []sema.Change{late}); !errors.Is(err, postgres.ErrDeposed) {
				t.Errorf("deposed leader's commit: got error %v, want ErrDeposed", err)
			}
			storeB := open(t, url, postgres.Options{Schema: schema, Epoch: termB.Epoch(), ApplicationName: b.ApplicationName()})
			after := leaseChange(3)
			if err := storeB.Commit(t.Context(), []sema.Change{after}); err != nil {
				t.Fatalf("new leader's commit: %v", err)
			}
			st, err := storeB.Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			got := map[uuid.UUID]bool{}
			for _, l := range st.Leases {
				got[l.ID] = true
			}
			if !got[before.Lease.ID] || got[late.Lease.ID] || !got[after.Lease.ID] || len(got) != 2 {
				t.Errorf("leases after the take-over: got %v, want the one committed before it and the new leader's", got)
			}

			// The old term learns it lost the lead.
			undo()
			waitDone(t, termA, within)
			ok := false
			for _, why := range tt.why {
				ok = ok || errors.Is(termA.Err(), why)
			}
			if !ok {
				t.Errorf("old term ended with %v, want one of %v", termA.Err(), tt.why)
			}
		})
	}
}

// TestCommitHoldsOffTakeOver checks the lock a commit takes on the leader
// row: while a commit of the leader is in progress, a take-over waits for
// it (a FOR KEY SHARE check would let the take-over through, and the commit
// would land after the successor loaded the state); once the commit ends,
// the take-over goes ahead, and the next commit of the old epoch fails.
func TestCommitHoldsOffTakeOver(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	a, b := newCandidate(t, url, schema, "a"), newCandidate(t, url, schema, "b")
	termA := lead(t, a)

	// A commit of the leader, stalled after its epoch check.
	cfg, err := postgres.ConnConfig(url, schema, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT allot_check_epoch($1)`, termA.Epoch()); err != nil {
		t.Fatalf("epoch check of the leader: %v", err)
	}

	// The leader's own sessions end (its lock is free), and a candidate
	// tries to take over.
	execSQL(t, url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, a.ApplicationName())
	cpB := campaign(t, b)
	if r := cpB.won(3 * ttl); r != nil {
		t.Fatalf("took the lead while a commit held the leader row: %+v", *r)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("the stalled commit: %v", err)
	}

	termB := cpB.wait(t, within)
	if termB.Epoch() <= termA.Epoch() {
		t.Errorf("new epoch %d, want above %d", termB.Epoch(), termA.Epoch())
	}
	storeA := open(t, url, postgres.Options{Schema: schema, Epoch: termA.Epoch()})
	if err := storeA.Commit(t.Context(), []sema.Change{leaseChange(1)}); !errors.Is(err, postgres.ErrDeposed) {
		t.Errorf("commit of the old epoch after the take-over: got error %v, want ErrDeposed", err)
	}
}
