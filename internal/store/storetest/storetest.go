// Package storetest is the one conformance suite that every store.Store
// backend must pass. A behaviour that backends must share is written here
// first, then implemented in each backend.
//
// The suite pins down the contract of package store:
//
//   - Load returns exactly what was committed: every field of every limit,
//     lease, run and waiter, times to the nanosecond (returned in UTC), floats bit
//     for bit, fences over the whole uint64 range, holder strings and
//     metadata, run names, tags and state messages whatever valid UTF-8
//     they hold (NUL included), and holds, tags and state histories in
//     their order, and a waiter's names in their order. The order of the
//     Limits, Leases, Runs and Waiters slices is not specified, and nil and
//     empty slices and maps are equivalent.
//   - Commit applies its changes in order and atomically: a batch with an
//     invalid change (a kind that does not exist, a PutRun without a run,
//     a PutWaiter without a waiter, or a limit whose name is already another limit's) returns an error and leaves nothing of the
//     batch applied, and the store stays usable.
//   - A PutLease raises the fencing high-water mark to its Fence; nothing
//     lowers it: not deleting the lease, not a lower fence later, not a
//     restart. Every uint64 is a valid fence.
//   - Deleting what does not exist is not an error. Deleting a limit does
//     not touch the leases that hold it; the state machine drops such holds
//     when it restores. Runs, leases, limits and waiters are independent
//     records: deleting one never touches another. A waiter is keyed by its
//     ticket: a PutWaiter replaces the waiter with the same ticket.
//   - A Commit whose context is already done applies nothing.
//   - The state survives closing and opening the same data again.
//   - After Close, Load and Commit return store.ErrClosed; Close may be
//     called again.
//
// Three cases name the traps a SQL database sets (PostgreSQL's timestamptz
// keeps microseconds, its text refuses NUL, its bigint orders fences above
// 2^63 below the others): SubMicrosecondTimes, NULBytes and
// FencesAcrossTheSignBit. Every backend passes them, whatever it is built
// on.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
)

// Harness tells the suite how to get stores of the backend under test.
type Harness struct {
	// Open returns a new, empty store that no other call shares. It closes
	// the store when the test ends (t.Cleanup), so Close may be called on
	// it more than once.
	Open func(t *testing.T) store.Store
	// Reopen closes s and opens the same underlying data again.
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Run runs the conformance suite against the backend h opens. Every test
// opens its own stores and runs in parallel with the others.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil || h.Reopen == nil {
		t.Fatal("storetest: Harness needs both Open and Reopen")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"EmptyLoad", testEmptyLoad},
		{"EmptyCommit", testEmptyCommit},
		{"LimitRoundtrip", testLimitRoundtrip},
		{"LimitUpsert", testLimitUpsert},
		{"DeleteLimit", testDeleteLimit},
		{"LeaseRoundtrip", testLeaseRoundtrip},
		{"LeaseUpsert", testLeaseUpsert},
		{"DeleteLease", testDeleteLease},
		{"RunRoundtrip", testRunRoundtrip},
		{"RunUpsert", testRunUpsert},
		{"DeleteRun", testDeleteRun},
		{"WaiterRoundtrip", testWaiterRoundtrip},
		{"WaiterUpsert", testWaiterUpsert},
		{"SubMicrosecondTimes", testSubMicrosecondTimes},
		{"NULBytes", testNULBytes},
		{"FencesAcrossTheSignBit", testFencesAcrossTheSignBit},
		{"DeleteWaiter", testDeleteWaiter},
		{"KeyRoundtrip", testKeyRoundtrip},
		{"KeyUpsert", testKeyUpsert},
		{"Audit", testAudit},
		{"Fence", testFence},
		{"Order", testOrder},
		{"Atomic", testAtomic},
		{"CanceledContext", testCanceledContext},
		{"NoAliasing", testNoAliasing},
		{"LargeBatch", testLargeBatch},
		{"Reopen", testReopen},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, h)
		})
	}
}

// base returns a time with every nanosecond digit set, in UTC.
func base() time.Time { return time.Date(2026, time.March, 14, 15, 9, 26, 535897932, time.UTC) }

func newLimit(name string) sema.Limit {
	return sema.Limit{
		ID:                      uuid.New(),
		Name:                    name,
		Limit:                   10,
		Active:                  true,
		SlotDecayPerSecond:      0.1,
		AvgSlotOccupancySeconds: 1.0 / 3,
		Created:                 base(),
		Updated:                 base().Add(time.Nanosecond),
		Level:                   2.5e-7,
		Denied:                  3.75,
		DecayAt:                 base().Add(2*time.Second + time.Nanosecond),
	}
}

func newLease(fence uint64, limits ...uuid.UUID) sema.Lease {
	l := sema.Lease{
		ID:       uuid.Must(uuid.NewV7()),
		Slots:    1,
		Mode:     sema.ModeConcurrency,
		Holder:   sema.Holder{Type: "task_run", ID: "0b7e3c8e-run", Metadata: map[string]string{"flow": "nightly"}},
		Created:  base(),
		Duration: 30*time.Second + time.Nanosecond,
		Expires:  base().Add(30*time.Second + time.Nanosecond),
		Fence:    fence,
	}
	for _, id := range limits {
		l.Holds = append(l.Holds, sema.Hold{LimitID: id, Slots: 1})
	}
	return l
}

// newRun returns a Running task run with every field set.
func newRun(name string, parent uuid.UUID) sema.Run {
	return sema.Run{
		ID:       uuid.New(),
		Kind:     sema.KindTask,
		Name:     name,
		Tags:     []string{"database", "analytics"},
		Limits:   []string{"warehouse", "resource:42"},
		Slots:    2,
		ParentID: parent,
		State:    sema.Running,
		History: []sema.StateEntry{
			{State: sema.Pending, At: base()},
			{State: sema.AwaitingConcurrencySlot, At: base().Add(time.Nanosecond), Message: `waiting for a slot of tag "database"`},
			{State: sema.Running, At: base().Add(time.Second + 1)},
		},
		CollisionStrategy: sema.Enqueue,
		LeaseDuration:     60*time.Second + time.Nanosecond,
		LeaseID:           uuid.New(),
		Fence:             17,
		WaitSeq:           3,
		Created:           base(),
		Updated:           base().Add(time.Second + 1),
	}
}

func putLimit(l sema.Limit) sema.Change { return sema.Change{Kind: sema.PutLimit, Limit: l} }
func delLimit(id uuid.UUID) sema.Change { return sema.Change{Kind: sema.DeleteLimit, ID: id} }
func putLease(l sema.Lease) sema.Change { return sema.Change{Kind: sema.PutLease, Lease: l} }
func delLease(id uuid.UUID) sema.Change { return sema.Change{Kind: sema.DeleteLease, ID: id} }
func putRun(r sema.Run) sema.Change     { return sema.Change{Kind: sema.PutRun, Run: &r} }
func putWaiter(w sema.Waiter) sema.Change {
	return sema.Change{Kind: sema.PutWaiter, Waiter: &w}
}
func delWaiter(ticket string) sema.Change {
	return sema.Change{Kind: sema.DeleteWaiter, Ticket: ticket}
}

// newWaiter returns a waiter with every field set.
func newWaiter(ticket string, seq uint64) sema.Waiter {
	return sema.Waiter{
		Ticket:        ticket,
		Seq:           seq,
		Names:         []string{"warehouse", "resource:42"},
		Slots:         2,
		Mode:          sema.ModeConcurrency,
		LeaseID:       uuid.New(),
		LeaseDuration: 30*time.Second + time.Nanosecond,
		Holder:        sema.Holder{Type: "process", ID: "host:42", Metadata: map[string]string{"job": "nightly"}},
		Since:         base(),
		Deadline:      base().Add(2*time.Minute + time.Nanosecond),
		KeyID:         "0123456789ab",
	}
}
func delRun(id uuid.UUID) sema.Change { return sema.Change{Kind: sema.DeleteRun, ID: id} }
func putKey(k sema.Key) sema.Change   { return sema.Change{Kind: sema.PutKey, Key: &k} }

func compareUUID(a, b uuid.UUID) int { return strings.Compare(string(a[:]), string(b[:])) }

// stateOpts compares states as the contract defines them: slice order of
// limits and leases does not matter, nil equals empty, times compare as
// instants (time.Time.Equal) and floats bit for bit.
func stateOpts() cmp.Options {
	return cmp.Options{
		cmpopts.EquateEmpty(),
		cmpopts.SortSlices(func(a, b sema.Limit) bool { return compareUUID(a.ID, b.ID) < 0 }),
		cmpopts.SortSlices(func(a, b sema.Lease) bool { return compareUUID(a.ID, b.ID) < 0 }),
		cmpopts.SortSlices(func(a, b sema.Run) bool { return compareUUID(a.ID, b.ID) < 0 }),
		cmpopts.SortSlices(func(a, b sema.Waiter) bool { return a.Ticket < b.Ticket }),
		cmpopts.SortSlices(func(a, b sema.Key) bool { return a.ID < b.ID }),
		cmp.Comparer(func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }),
	}
}

func load(t *testing.T, s store.Store) store.State {
	t.Helper()
	st, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checkUTC(t, st)
	return st
}

func commit(t *testing.T, s store.Store, changes ...sema.Change) {
	t.Helper()
	if err := s.Commit(t.Context(), changes); err != nil {
		t.Fatalf("Commit of %d changes: %v", len(changes), err)
	}
}

// checkUTC reports every loaded time that is not in UTC.
func checkUTC(t *testing.T, st store.State) {
	t.Helper()
	check := func(what string, tm time.Time) {
		if tm.Location() != time.UTC {
			t.Errorf("Load: %s is in %v, want UTC", what, tm.Location())
		}
	}
	for _, l := range st.Limits {
		check("limit "+l.Name+" Created", l.Created)
		check("limit "+l.Name+" Updated", l.Updated)
		check("limit "+l.Name+" DecayAt", l.DecayAt)
	}
	for _, l := range st.Leases {
		check("lease "+l.ID.String()+" Created", l.Created)
		check("lease "+l.ID.String()+" Expires", l.Expires)
	}
	for _, a := range st.Audit {
		check(fmt.Sprintf("audit %d Time", a.Seq), a.Time)
	}
	for _, k := range st.Keys {
		check("key "+k.ID+" Created", k.Created)
		check("key "+k.ID+" Expires", k.Expires)
		check("key "+k.ID+" Revoked", k.Revoked)
		check("key "+k.ID+" LastUsed", k.LastUsed)
	}
	for _, r := range st.Runs {
		check("run "+r.ID.String()+" Created", r.Created)
		check("run "+r.ID.String()+" Updated", r.Updated)
		for i, e := range r.History {
			check(fmt.Sprintf("run %s History[%d].At", r.ID, i), e.At)
		}
	}
	for _, w := range st.Waiters {
		check("waiter "+w.Ticket+" Since", w.Since)
		if !w.Deadline.IsZero() {
			check("waiter "+w.Ticket+" Deadline", w.Deadline)
		}
	}
}

func wantState(t *testing.T, s store.Store, want store.State) {
	t.Helper()
	got := load(t, s)
	if diff := cmp.Diff(want, got, stateOpts()); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
}

func testEmptyLoad(t *testing.T, h Harness) {
	s := h.Open(t)
	wantState(t, s, store.State{})
}

func testEmptyCommit(t *testing.T, h Harness) {
	for _, tt := range []struct {
		name    string
		changes []sema.Change
	}{
		{"nil", nil},
		{"empty", []sema.Change{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			l := newLimit("existing")
			commit(t, s, putLimit(l), putLease(newLease(3, l.ID)))
			before := load(t, s)
			if err := s.Commit(t.Context(), tt.changes); err != nil {
				t.Fatalf("Commit(%s): %v", tt.name, err)
			}
			wantState(t, s, before)
		})
	}
}

func testLimitRoundtrip(t *testing.T, h Harness) {
	zone := time.FixedZone("UTC+05:30", 5*3600+30*60)
	tests := []struct {
		name  string
		limit func() sema.Limit
		// want is the limit as Load returns it; nil means the limit itself.
		want func(sema.Limit) sema.Limit
	}{
		{"every field set", func() sema.Limit { return newLimit("warehouse") }, nil},
		{"zero values", func() sema.Limit { return sema.Limit{ID: uuid.New(), Name: "z"} }, nil},
		{"inactive", func() sema.Limit {
			l := newLimit("off")
			l.Active = false
			return l
		}, nil},
		{"extreme numbers", func() sema.Limit {
			l := newLimit("extreme")
			l.Limit = sema.MaxSlots
			l.SlotDecayPerSecond = sema.MaxDecay
			l.AvgSlotOccupancySeconds = math.SmallestNonzeroFloat64
			l.Level = math.MaxFloat64
			l.Denied = 1e-300
			return l
		}, nil},
		{"times far from now", func() sema.Limit {
			l := newLimit("far")
			l.Created = time.Date(1901, time.January, 2, 3, 4, 5, 999999999, time.UTC)
			l.Updated = time.Date(2199, time.December, 31, 23, 59, 59, 1, time.UTC)
			l.DecayAt = time.Unix(0, 1).UTC()
			return l
		}, nil},
		{"times in another zone come back in UTC", func() sema.Limit {
			l := newLimit("zoned")
			l.Created = base().In(zone)
			l.Updated = base().Add(time.Nanosecond).In(zone)
			l.DecayAt = base().Add(time.Hour).In(zone)
			return l
		}, func(l sema.Limit) sema.Limit {
			l.Created, l.Updated, l.DecayAt = l.Created.UTC(), l.Updated.UTC(), l.DecayAt.UTC()
			return l
		}},
		{"template with an idle time", func() sema.Limit {
			l := newLimit("resource:*")
			l.Idle = 90*time.Minute + time.Nanosecond
			return l
		}, nil},
		{"created by a template", func() sema.Limit {
			l := newLimit("resource:42")
			l.FromTemplate = true
			l.Idle = sema.MaxIdle
			return l
		}, nil},
		{"unicode name", func() sema.Limit { return newLimit("名前:ü 😀 'quoted' \"double\"") }, nil},
		{"longest name", func() sema.Limit { return newLimit(strings.Repeat("n", sema.MaxNameLength)) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			l := tt.limit()
			want := l
			if tt.want != nil {
				want = tt.want(l)
			}
			commit(t, s, putLimit(l))
			got := load(t, s)
			if diff := cmp.Diff(store.State{Limits: []sema.Limit{want}}, got, stateOpts()); diff != "" {
				t.Errorf("Load after PutLimit mismatch (-want +got):\n%s", diff)
			}
			// cmp compares times with Equal; make sure the instants really
			// are the same to the nanosecond.
			if len(got.Limits) == 1 {
				g := got.Limits[0]
				for _, p := range [][2]time.Time{{want.Created, g.Created}, {want.Updated, g.Updated}, {want.DecayAt, g.DecayAt}} {
					if !p[0].IsZero() && p[0].UnixNano() != p[1].UnixNano() {
						t.Errorf("time: got %d ns, want %d ns", p[1].UnixNano(), p[0].UnixNano())
					}
					if p[0].IsZero() != p[1].IsZero() {
						t.Errorf("time: got IsZero %v, want %v", p[1].IsZero(), p[0].IsZero())
					}
				}
			}
		})
	}
}

func testLimitUpsert(t *testing.T, h Harness) {
	a := newLimit("a")
	changed := sema.Limit{
		ID: a.ID, Name: "a", Limit: 3, Active: false, SlotDecayPerSecond: 2.5,
		AvgSlotOccupancySeconds: 7.125, Created: a.Created, Updated: a.Updated.Add(time.Minute),
		Level: 0.5, Denied: 0, DecayAt: a.DecayAt.Add(time.Minute + 3),
		Idle: time.Second, FromTemplate: true,
	}
	renamed := a
	renamed.Name = "a-renamed"
	b := newLimit("b")
	bTakesA := b
	bTakesA.Name = "a"
	aTemp, aAsB, bAsA := a, a, b
	aTemp.Name, aAsB.Name, bAsA.Name = "tmp", "b", "a"

	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.Limit
	}{
		{"every field overwritten", [][]sema.Change{{putLimit(a)}, {putLimit(changed)}}, []sema.Limit{changed}},
		{"overwritten in one batch", [][]sema.Change{{putLimit(a), putLimit(changed)}}, []sema.Limit{changed}},
		{"same value twice", [][]sema.Change{{putLimit(a)}, {putLimit(a)}}, []sema.Limit{a}},
		{"rename", [][]sema.Change{{putLimit(a)}, {putLimit(renamed)}}, []sema.Limit{renamed}},
		{"old name reused after rename", [][]sema.Change{{putLimit(a), putLimit(b)}, {putLimit(renamed), putLimit(bTakesA)}}, []sema.Limit{renamed, bTakesA}},
		{"names swapped through a third name", [][]sema.Change{{putLimit(a), putLimit(b)}, {putLimit(aTemp), putLimit(bAsA), putLimit(aAsB)}}, []sema.Limit{aAsB, bAsA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Limits: tt.want})
		})
	}
}

func testDeleteLimit(t *testing.T, h Harness) {
	a, b := newLimit("a"), newLimit("b")
	a2 := newLimit("a") // a new limit under a's old name
	lease := newLease(4, a.ID, b.ID)
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    store.State
	}{
		{"delete one of two", [][]sema.Change{{putLimit(a), putLimit(b)}, {delLimit(a.ID)}}, store.State{Limits: []sema.Limit{b}}},
		{"delete in the same batch", [][]sema.Change{{putLimit(a), putLimit(b), delLimit(b.ID)}}, store.State{Limits: []sema.Limit{a}}},
		{"delete missing is not an error", [][]sema.Change{{putLimit(a)}, {delLimit(uuid.New())}}, store.State{Limits: []sema.Limit{a}}},
		{"delete from an empty store", [][]sema.Change{{delLimit(uuid.New())}}, store.State{}},
		{"delete twice", [][]sema.Change{{putLimit(a)}, {delLimit(a.ID), delLimit(a.ID)}, {delLimit(a.ID)}}, store.State{}},
		{"put again after delete", [][]sema.Change{{putLimit(a)}, {delLimit(a.ID)}, {putLimit(a)}}, store.State{Limits: []sema.Limit{a}}},
		{"name reused after delete", [][]sema.Change{{putLimit(a)}, {delLimit(a.ID), putLimit(a2)}}, store.State{Limits: []sema.Limit{a2}}},
		{"leases that hold it are kept", [][]sema.Change{{putLimit(a), putLimit(b), putLease(lease)}, {delLimit(a.ID)}},
			store.State{Limits: []sema.Limit{b}, Leases: []sema.Lease{lease}, Fence: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, tt.want)
		})
	}
}

func testLeaseRoundtrip(t *testing.T, h Harness) {
	zone := time.FixedZone("UTC-08", -8*3600)
	tests := []struct {
		name  string
		lease func() sema.Lease
		want  func(sema.Lease) sema.Lease
	}{
		{"every field set", func() sema.Lease {
			l := newLease(42)
			l.Holds = []sema.Hold{{LimitID: uuid.New(), Slots: 5}, {LimitID: uuid.New(), Slots: 1}, {LimitID: uuid.New(), Slots: sema.MaxSlots}}
			l.Slots = 5
			l.Holder = sema.Holder{Type: "flow_run", ID: "run-1", Metadata: map[string]string{
				"a": "1", "ü": "ß", "empty": "", "quote\"": "back\\slash\nnewline\ttab", "emoji": "😀",
			}}
			l.Anonymous = true
			l.Ticket = "ticket:" + strings.Repeat("x", sema.MaxTicketLength-7)
			l.KeyID = "0123456789ab"
			return l
		}, nil},
		{"holder strings with NUL and control characters", func() sema.Lease {
			// Any string a JSON request can carry reaches the store; one
			// that a backend cannot write would fail the whole batch.
			l := newLease(9)
			l.Holder = sema.Holder{Type: "t\x00ype", ID: "id\x00\x01\u2028\x7f", Metadata: map[string]string{"k\x00": "v\x00\x1b[0m", "": "empty key"}}
			return l
		}, nil},
		{"zero holds and no holder", func() sema.Lease {
			l := newLease(1)
			l.Holder = sema.Holder{}
			return l
		}, nil},
		{"holder without metadata", func() sema.Lease {
			l := newLease(2, uuid.New())
			l.Holder.Metadata = nil
			return l
		}, nil},
		{"rate limit mode", func() sema.Lease {
			l := newLease(3)
			l.Mode = sema.ModeRateLimit
			l.Slots = 7
			return l
		}, nil},
		{"zero values", func() sema.Lease { return sema.Lease{ID: uuid.New()} }, nil},
		{"holds keep their order", func() sema.Lease {
			l := newLease(5)
			for i := range 100 {
				l.Holds = append(l.Holds, sema.Hold{LimitID: uuid.New(), Slots: 100 - i})
			}
			return l
		}, nil},
		{"slots of zero in a hold", func() sema.Lease {
			l := newLease(6, uuid.New())
			l.Holds[0].Slots = 0
			return l
		}, nil},
		{"largest fence", func() sema.Lease { return newLease(math.MaxUint64, uuid.New()) }, nil},
		{"fence above MaxInt64", func() sema.Lease { return newLease(1<<63+5, uuid.New()) }, nil},
		{"long duration", func() sema.Lease {
			l := newLease(7)
			l.Duration = 400 * 24 * time.Hour
			l.Expires = l.Created.Add(l.Duration)
			return l
		}, nil},
		{"times in another zone come back in UTC", func() sema.Lease {
			l := newLease(8)
			l.Created, l.Expires = l.Created.In(zone), l.Expires.In(zone)
			return l
		}, func(l sema.Lease) sema.Lease {
			l.Created, l.Expires = l.Created.UTC(), l.Expires.UTC()
			return l
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			l := tt.lease()
			want := l
			if tt.want != nil {
				want = tt.want(l)
			}
			commit(t, s, putLease(l))
			wantState(t, s, store.State{Leases: []sema.Lease{want}, Fence: l.Fence})
		})
	}
}

func testLeaseUpsert(t *testing.T, h Harness) {
	x, y := uuid.New(), uuid.New()
	l := newLease(10, x, y)
	renewed := l
	renewed.Expires = l.Expires.Add(time.Minute + 1)
	renewed.Duration = 90 * time.Second
	renewed.Holds = []sema.Hold{{LimitID: y, Slots: 1}}
	renewed.Holder.Metadata = map[string]string{"other": "value"}
	renewed.Fence = 10
	emptied := l
	emptied.Holds = nil
	emptied.Holder = sema.Holder{}
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.Lease
	}{
		{"renewed", [][]sema.Change{{putLease(l)}, {putLease(renewed)}}, []sema.Lease{renewed}},
		{"renewed in one batch", [][]sema.Change{{putLease(l), putLease(renewed)}}, []sema.Lease{renewed}},
		{"holds and holder emptied", [][]sema.Change{{putLease(l)}, {putLease(emptied)}}, []sema.Lease{emptied}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Leases: tt.want, Fence: 10})
		})
	}
}

func testDeleteLease(t *testing.T, h Harness) {
	lim := newLimit("held")
	a, b := newLease(1, lim.ID), newLease(2, lim.ID)
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    store.State
	}{
		{"delete one of two", [][]sema.Change{{putLimit(lim), putLease(a), putLease(b)}, {delLease(a.ID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{b}, Fence: 2}},
		{"delete all", [][]sema.Change{{putLease(a), putLease(b)}, {delLease(b.ID), delLease(a.ID)}}, store.State{Fence: 2}},
		{"delete missing is not an error", [][]sema.Change{{putLease(a)}, {delLease(uuid.New())}}, store.State{Leases: []sema.Lease{a}, Fence: 1}},
		{"delete from an empty store", [][]sema.Change{{delLease(uuid.New())}}, store.State{}},
		{"delete twice", [][]sema.Change{{putLease(a)}, {delLease(a.ID), delLease(a.ID)}, {delLease(a.ID)}}, store.State{Fence: 1}},
		{"limit id is not a lease id", [][]sema.Change{{putLimit(lim), putLease(a)}, {delLease(lim.ID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{a}, Fence: 1}},
		{"lease id is not a limit id", [][]sema.Change{{putLimit(lim), putLease(a)}, {delLimit(a.ID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{a}, Fence: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, tt.want)
		})
	}
}

func testFence(t *testing.T, h Harness) {
	a, b, c := newLease(5), newLease(9), newLease(3)
	lower := newLease(4)
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    uint64
	}{
		{"no lease ever", [][]sema.Change{{putLimit(newLimit("x"))}}, 0},
		{"one lease", [][]sema.Change{{putLease(newLease(7))}}, 7},
		{"highest in the batch, not the last", [][]sema.Change{{putLease(a), putLease(b), putLease(c)}}, 9},
		{"highest across batches", [][]sema.Change{{putLease(a)}, {putLease(b)}, {putLease(c)}}, 9},
		{"kept when the lease is deleted", [][]sema.Change{{putLease(b)}, {delLease(b.ID)}}, 9},
		{"kept when deleted in the same batch", [][]sema.Change{{putLease(b), delLease(b.ID)}}, 9},
		{"kept when a lower fence is written later", [][]sema.Change{{putLease(b)}, {putLease(lower)}}, 9},
		{"kept when the same lease is rewritten lower", [][]sema.Change{{putLease(b)}, {putLease(func() sema.Lease { l := b; l.Fence = 1; return l }())}}, 9},
		{"kept when every lease is gone", [][]sema.Change{{putLease(a), putLease(b)}, {delLease(a.ID), delLease(b.ID)}}, 9},
		{"fence zero", [][]sema.Change{{putLease(newLease(0))}}, 0},
		{"above MaxInt64", [][]sema.Change{{putLease(newLease(1 << 62))}, {putLease(newLease(1<<63 + 1))}, {putLease(newLease(1 << 63))}}, 1<<63 + 1},
		{"largest", [][]sema.Change{{putLease(newLease(math.MaxUint64))}, {putLease(newLease(7))}}, math.MaxUint64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			if got := load(t, s).Fence; got != tt.want {
				t.Errorf("Fence = %d, want %d", got, tt.want)
			}
			s = h.Reopen(t, s)
			if got := load(t, s).Fence; got != tt.want {
				t.Errorf("Fence after Reopen = %d, want %d", got, tt.want)
			}
		})
	}
}

func testOrder(t *testing.T, h Harness) {
	lim := newLimit("x")
	l := newLease(2)
	l2 := l
	l2.Expires = l.Expires.Add(time.Hour)
	tests := []struct {
		name  string
		batch []sema.Change
		want  store.State
	}{
		{"put then delete lease", []sema.Change{putLease(l), delLease(l.ID)}, store.State{Fence: 2}},
		{"delete then put lease", []sema.Change{delLease(l.ID), putLease(l)}, store.State{Leases: []sema.Lease{l}, Fence: 2}},
		{"put, delete, put lease", []sema.Change{putLease(l), delLease(l.ID), putLease(l2)}, store.State{Leases: []sema.Lease{l2}, Fence: 2}},
		{"last put wins", []sema.Change{putLease(l2), putLease(l)}, store.State{Leases: []sema.Lease{l}, Fence: 2}},
		{"put then delete limit", []sema.Change{putLimit(lim), delLimit(lim.ID)}, store.State{}},
		{"delete then put limit", []sema.Change{delLimit(lim.ID), putLimit(lim)}, store.State{Limits: []sema.Limit{lim}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			commit(t, s, tt.batch...)
			wantState(t, s, tt.want)
		})
	}
}

func testAtomic(t *testing.T, h Harness) {
	tests := []struct {
		name string
		// bad builds the invalid batch from what is committed before it.
		bad func(taken sema.Limit, held sema.Lease) []sema.Change
	}{
		{"kind zero last", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putLease(newLease(100)), putLimit(newLimit("new")), delLease(held.ID), delLimit(taken.ID), {}}
		}},
		{"unknown kind first", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{{Kind: 200, ID: held.ID}, putLease(newLease(100)), delLease(held.ID)}
		}},
		{"unknown kind in the middle", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putLease(newLease(100)), delLimit(taken.ID), putRun(newRun("r", uuid.Nil)), {Kind: sema.DeleteWaiter + 1}, putLimit(newLimit("new"))}
		}},
		{"put waiter without a waiter", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putWaiter(newWaiter("w1", 1)), delLease(held.ID), {Kind: sema.PutWaiter}}
		}},
		{"waiters of a batch that fails later", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putWaiter(newWaiter("w1", 1)), delWaiter("w0"), putLimit(newLimit(taken.Name))}
		}},
		{"put run without a run", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putRun(newRun("r", uuid.Nil)), delLease(held.ID), {Kind: sema.PutRun}}
		}},
		{"runs of a batch that fails later", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putRun(newRun("r1", uuid.Nil)), delRun(uuid.New()), putRun(newRun("r2", uuid.Nil)), putLimit(newLimit(taken.Name))}
		}},
		{"name taken by another limit", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putLease(newLease(100)), delLease(held.ID), putLimit(newLimit("new")), putLimit(newLimit(taken.Name))}
		}},
		{"same new name twice", func(taken sema.Limit, held sema.Lease) []sema.Change {
			return []sema.Change{putLease(newLease(100)), putLimit(newLimit("dup")), putLimit(newLimit("dup"))}
		}},
		{"rename onto a taken name", func(taken sema.Limit, held sema.Lease) []sema.Change {
			other := newLimit("other")
			moved := other
			moved.Name = taken.Name
			return []sema.Change{putLimit(other), putLease(newLease(100)), putLimit(moved)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			taken := newLimit("taken")
			held := newLease(7, taken.ID)
			commit(t, s, putLimit(taken), putLease(held))
			before := load(t, s)

			if err := s.Commit(t.Context(), tt.bad(taken, held)); err == nil {
				t.Fatal("Commit of an invalid batch: got nil error, want an error")
			}
			wantState(t, s, before)

			// The store is still usable, and the failed batch left no trace.
			next := newLease(8, taken.ID)
			commit(t, s, putLease(next))
			want := before
			want.Leases = append(slices.Clone(want.Leases), next)
			want.Fence = 8
			wantState(t, s, want)
			wantState(t, h.Reopen(t, s), want)
		})
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	lim := newLimit("x")
	commit(t, s, putLimit(lim))
	before := load(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Commit(ctx, []sema.Change{putLease(newLease(9, lim.ID)), delLimit(lim.ID)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a canceled context: got error %v, want context.Canceled", err)
	}
	wantState(t, s, before)
	if _, err := s.Load(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a canceled context: got error %v, want context.Canceled", err)
	}
}

// testNoAliasing checks that a store keeps neither the caller's changes nor
// the state it returned.
func testNoAliasing(t *testing.T, h Harness) {
	s := h.Open(t)
	lim := newLimit("x")
	lease := newLease(3, lim.ID, uuid.New())
	lease.Holder.Metadata = map[string]string{"k": "v"}
	run := newRun("r", uuid.Nil)
	runChange := putRun(run)
	changes := []sema.Change{putLimit(lim), putLease(lease), runChange}
	wantRun := run
	wantRun.Tags, wantRun.History = slices.Clone(run.Tags), slices.Clone(run.History)
	want := store.State{
		Runs:   []sema.Run{wantRun},
		Limits: []sema.Limit{lim},
		Leases: []sema.Lease{{
			ID: lease.ID, Holds: slices.Clone(lease.Holds), Slots: lease.Slots, Mode: lease.Mode,
			Holder:  sema.Holder{Type: lease.Holder.Type, ID: lease.Holder.ID, Metadata: map[string]string{"k": "v"}},
			Created: lease.Created, Duration: lease.Duration, Expires: lease.Expires, Fence: lease.Fence,
		}},
		Fence: 3,
	}
	commit(t, s, changes...)

	// Scribble over what was passed in and what came out.
	lease.Holds[0].Slots = 99
	lease.Holder.Metadata["k"] = "changed"
	changes[0].Limit.Name = "changed"
	got := load(t, s)
	for i := range got.Leases {
		got.Leases[i].Holds[0].Slots = 77
		got.Leases[i].Holder.Metadata["k"] = "scribbled"
	}
	got.Limits[0].Limit = 1234
	runChange.Run.Tags[0] = "changed"
	runChange.Run.History[0].Message = "changed"
	got.Runs[0].Tags[1] = "scribbled"
	got.Runs[0].History[1].Message = "scribbled"

	wantState(t, s, want)
}

func testLargeBatch(t *testing.T, h Harness) {
	const n = 10_000
	s := h.Open(t)
	var want store.State
	changes := make([]sema.Change, 0, n)
	for i := range n / 10 {
		l := newLimit(fmt.Sprintf("limit-%04d", i))
		want.Limits = append(want.Limits, l)
		changes = append(changes, putLimit(l))
	}
	for i := len(changes); i < n; i++ {
		l := newLease(uint64(i), want.Limits[i%len(want.Limits)].ID)
		want.Leases = append(want.Leases, l)
		changes = append(changes, putLease(l))
	}
	want.Fence = n - 1
	commit(t, s, changes...)
	wantState(t, s, want)

	changes = changes[:0]
	for _, l := range want.Leases {
		changes = append(changes, delLease(l.ID))
	}
	for _, l := range want.Limits {
		changes = append(changes, delLimit(l.ID))
	}
	commit(t, s, changes...)
	wantState(t, s, store.State{Fence: n - 1})
}

func testReopen(t *testing.T, h Harness) {
	t.Run("state survives", func(t *testing.T) {
		t.Parallel()
		s := h.Open(t)
		a, b, gone := newLimit("a"), newLimit("b"), newLimit("gone")
		l1, l2, l3 := newLease(11, a.ID, b.ID), newLease(12, b.ID), newLease(13, a.ID)
		l1.Holder.Metadata = map[string]string{"x": "y"}
		r1, r2 := newRun("r1", uuid.Nil), newRun("r2", uuid.Nil)
		commit(t, s, putLimit(a), putLimit(b), putLimit(gone), putLease(l1), putRun(r1))
		commit(t, s, putLease(l2), putLease(l3), putRun(r2))
		commit(t, s, delLimit(gone.ID), delLease(l3.ID), delRun(r1.ID))
		want := store.State{Limits: []sema.Limit{a, b}, Leases: []sema.Lease{l1, l2}, Runs: []sema.Run{r2}, Fence: 13}
		wantState(t, s, want)

		s = h.Reopen(t, s)
		wantState(t, s, want)

		// Commits go on after a reopen and survive the next one.
		l4 := newLease(14, a.ID)
		r3 := newRun("r3", r2.ID)
		commit(t, s, putLease(l4), delLease(l1.ID), putRun(r3))
		want.Leases = []sema.Lease{l2, l4}
		want.Runs = []sema.Run{r2, r3}
		want.Fence = 14
		s = h.Reopen(t, s)
		wantState(t, s, want)
	})
	t.Run("empty store", func(t *testing.T) {
		t.Parallel()
		s := h.Reopen(t, h.Open(t))
		wantState(t, s, store.State{})
		l := newLease(1)
		commit(t, s, putLease(l))
		wantState(t, h.Reopen(t, s), store.State{Leases: []sema.Lease{l}, Fence: 1})
	})
	t.Run("without commits in between", func(t *testing.T) {
		t.Parallel()
		s := h.Open(t)
		lim := newLimit("x")
		commit(t, s, putLimit(lim))
		for range 3 {
			s = h.Reopen(t, s)
		}
		wantState(t, s, store.State{Limits: []sema.Limit{lim}})
	})
}

func testClosed(t *testing.T, h Harness) {
	s := h.Open(t)
	commit(t, s, putLimit(newLimit("x")))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Load(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Load after Close: got error %v, want store.ErrClosed", err)
	}
	for _, tt := range []struct {
		name    string
		changes []sema.Change
	}{
		{"one change", []sema.Change{putLease(newLease(1))}},
		{"no change", nil},
	} {
		if err := s.Commit(t.Context(), tt.changes); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Commit (%s) after Close: got error %v, want store.ErrClosed", tt.name, err)
		}
	}
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: got error %v, want nil or store.ErrClosed", err)
	}
}

func testRunRoundtrip(t *testing.T, h Harness) {
	zone := time.FixedZone("UTC+09", 9*3600)
	tests := []struct {
		name string
		run  func() sema.Run
		want func(sema.Run) sema.Run
	}{
		{"every field set", func() sema.Run { return newRun("nightly-etl", uuid.New()) }, nil},
		{"pending flow run, no parent, no lease", func() sema.Run {
			return sema.Run{ID: uuid.New(), Kind: sema.KindFlow, State: sema.Pending,
				History:       []sema.StateEntry{{State: sema.Pending, At: base()}},
				LeaseDuration: time.Second, Created: base(), Updated: base()}
		}, nil},
		{"every state, strategy and kind", func() sema.Run {
			r := newRun("all", uuid.Nil)
			r.Kind, r.CollisionStrategy, r.State = sema.KindFlow, sema.CancelNew, sema.Cancelled
			r.History = nil
			for i, s := range []sema.RunState{sema.Pending, sema.AwaitingConcurrencySlot, sema.Running,
				sema.Completed, sema.Failed, sema.Crashed, sema.Cancelled} {
				r.History = append(r.History, sema.StateEntry{State: s, At: base().Add(time.Duration(i)), Message: s.String()})
			}
			return r
		}, nil},
		{"text with NUL, control characters and unicode", func() sema.Run {
			r := newRun("n\x00me \x1b[0m 名前 😀 'q' \"dq\" \\", uuid.Nil)
			r.Tags = []string{"ü", "emoji-😀", "quote'\"", "back\\slash"}
			r.History[1].Message = "line\nbreak\ttab\x00nul\u2028"
			return r
		}, nil},
		{"longest history", func() sema.Run {
			r := newRun("long", uuid.Nil)
			r.History = nil
			for i := range sema.MaxRunHistory {
				r.History = append(r.History, sema.StateEntry{State: sema.Running, At: base().Add(time.Duration(i) * time.Millisecond),
					Message: strings.Repeat("m", sema.MaxRunMessage)})
			}
			return r
		}, nil},
		{"many tags keep their order", func() sema.Run {
			r := newRun("tags", uuid.Nil)
			r.Tags = nil
			for i := range sema.MaxRunTags {
				r.Tags = append(r.Tags, fmt.Sprintf("tag-%03d", sema.MaxRunTags-i))
			}
			return r
		}, nil},
		{"largest numbers", func() sema.Run {
			r := newRun("big", uuid.Nil)
			r.Fence, r.WaitSeq = math.MaxUint64, 1<<63+1
			r.LeaseDuration = 400 * 24 * time.Hour
			return r
		}, nil},
		{"times in another zone come back in UTC", func() sema.Run {
			r := newRun("zoned", uuid.Nil)
			r.Created, r.Updated = r.Created.In(zone), r.Updated.In(zone)
			for i := range r.History {
				r.History[i].At = r.History[i].At.In(zone)
			}
			return r
		}, func(r sema.Run) sema.Run {
			r.Created, r.Updated = r.Created.UTC(), r.Updated.UTC()
			r.History = slices.Clone(r.History)
			for i := range r.History {
				r.History[i].At = r.History[i].At.UTC()
			}
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			r := tt.run()
			want := r
			if tt.want != nil {
				want = tt.want(r)
			}
			commit(t, s, putRun(r))
			wantState(t, s, store.State{Runs: []sema.Run{want}})
			wantState(t, h.Reopen(t, s), store.State{Runs: []sema.Run{want}})
		})
	}
}

func testRunUpsert(t *testing.T, h Harness) {
	r := newRun("r", uuid.Nil)
	done := r
	done.State = sema.Completed
	done.History = append(slices.Clone(r.History), sema.StateEntry{State: sema.Completed, At: base().Add(time.Minute), Message: "ok"})
	done.Updated = base().Add(time.Minute)
	renamed := done
	renamed.Name, renamed.Tags, renamed.ParentID, renamed.LeaseID = "", nil, uuid.Nil, uuid.Nil
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.Run
	}{
		{"state changed", [][]sema.Change{{putRun(r)}, {putRun(done)}}, []sema.Run{done}},
		{"changed in one batch", [][]sema.Change{{putRun(r), putRun(done)}}, []sema.Run{done}},
		{"fields emptied", [][]sema.Change{{putRun(done)}, {putRun(renamed)}}, []sema.Run{renamed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Runs: tt.want})
		})
	}
}

func testDeleteRun(t *testing.T, h Harness) {
	a, b := newRun("a", uuid.Nil), newRun("b", uuid.Nil)
	child := newRun("child", a.ID)
	lim := newLimit("tag:database")
	lease := newLease(5, lim.ID)
	lease.ID = a.LeaseID
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    store.State
	}{
		{"delete one of two", [][]sema.Change{{putRun(a), putRun(b)}, {delRun(a.ID)}}, store.State{Runs: []sema.Run{b}}},
		{"delete in the same batch", [][]sema.Change{{putRun(a), putRun(b), delRun(b.ID)}}, store.State{Runs: []sema.Run{a}}},
		{"delete missing is not an error", [][]sema.Change{{putRun(a)}, {delRun(uuid.New())}}, store.State{Runs: []sema.Run{a}}},
		{"delete twice", [][]sema.Change{{putRun(a)}, {delRun(a.ID), delRun(a.ID)}, {delRun(a.ID)}}, store.State{}},
		{"put again after delete", [][]sema.Change{{putRun(a)}, {delRun(a.ID)}, {putRun(a)}}, store.State{Runs: []sema.Run{a}}},
		{"children, leases and limits are kept", [][]sema.Change{{putLimit(lim), putLease(lease), putRun(a), putRun(child)}, {delRun(a.ID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{lease}, Runs: []sema.Run{child}, Fence: 5}},
		{"run id is not a lease or limit id", [][]sema.Change{{putRun(a), putLimit(lim), putLease(lease)}, {delLease(a.ID), delLimit(a.ID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{lease}, Runs: []sema.Run{a}, Fence: 5}},
		{"lease id is not a run id", [][]sema.Change{{putRun(a), putLease(lease)}, {delRun(lease.ID)}},
			store.State{Leases: []sema.Lease{lease}, Runs: []sema.Run{a}, Fence: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, tt.want)
		})
	}
}

func testWaiterRoundtrip(t *testing.T, h Harness) {
	zone := time.FixedZone("UTC+05:30", 5*3600+1800)
	tests := []struct {
		name   string
		waiter func() sema.Waiter
		want   func(sema.Waiter) sema.Waiter
	}{
		{"every field set", func() sema.Waiter { return newWaiter("job-1", 7) }, nil},
		{"rate limit without a lease, no holder, no deadline", func() sema.Waiter {
			return sema.Waiter{Ticket: "r", Seq: 1, Names: []string{"api"}, Slots: 1, Mode: sema.ModeRateLimit,
				NoLease: true, Since: base()}
		}, nil},
		{"anonymous increment", func() sema.Waiter {
			w := newWaiter("anon", 2)
			w.Anonymous, w.Holder = true, sema.Holder{}
			return w
		}, nil},
		{"longest ticket, largest numbers, many names in order", func() sema.Waiter {
			w := newWaiter(strings.Repeat("T", sema.MaxTicketLength), math.MaxUint64)
			w.Slots = sema.MaxSlots
			w.LeaseDuration = 400 * 24 * time.Hour
			w.Names = nil
			for i := range 50 {
				w.Names = append(w.Names, fmt.Sprintf("name-%02d-ü-😀", 50-i))
			}
			return w
		}, nil},
		{"times in another zone come back in UTC", func() sema.Waiter {
			w := newWaiter("zoned", 3)
			w.Since, w.Deadline = w.Since.In(zone), w.Deadline.In(zone)
			return w
		}, func(w sema.Waiter) sema.Waiter {
			w.Since, w.Deadline = w.Since.UTC(), w.Deadline.UTC()
			return w
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			w := tt.waiter()
			want := w
			if tt.want != nil {
				want = tt.want(w)
			}
			commit(t, s, putWaiter(w))
			wantState(t, s, store.State{Waiters: []sema.Waiter{want}})
			wantState(t, h.Reopen(t, s), store.State{Waiters: []sema.Waiter{want}})
		})
	}
}

func testWaiterUpsert(t *testing.T, h Harness) {
	w := newWaiter("job", 1)
	later := w
	later.Seq, later.Deadline, later.Names = 9, base().Add(time.Hour), []string{"other"}
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.Waiter
	}{
		{"replaced by its ticket", [][]sema.Change{{putWaiter(w)}, {putWaiter(later)}}, []sema.Waiter{later}},
		{"replaced in one batch", [][]sema.Change{{putWaiter(w), putWaiter(later)}}, []sema.Waiter{later}},
		{"two tickets", [][]sema.Change{{putWaiter(w)}, {putWaiter(newWaiterLike("job2", 2, w))}}, []sema.Waiter{w, newWaiterLike("job2", 2, w)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Waiters: tt.want})
		})
	}
}

// newWaiterLike is like's waiter with another ticket and seq.
func newWaiterLike(ticket string, seq uint64, like sema.Waiter) sema.Waiter {
	like.Ticket, like.Seq = ticket, seq
	return like
}

func testDeleteWaiter(t *testing.T, h Harness) {
	a, b := newWaiter("a", 1), newWaiter("b", 2)
	b.LeaseID = a.LeaseID
	lim := newLimit("warehouse")
	lease := newLease(5, lim.ID)
	lease.Ticket = "a"
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    store.State
	}{
		{"delete one of two", [][]sema.Change{{putWaiter(a), putWaiter(b)}, {delWaiter("a")}}, store.State{Waiters: []sema.Waiter{b}}},
		{"delete in the same batch", [][]sema.Change{{putWaiter(a), putWaiter(b), delWaiter("b")}}, store.State{Waiters: []sema.Waiter{a}}},
		{"delete missing is not an error", [][]sema.Change{{putWaiter(a)}, {delWaiter("nobody")}}, store.State{Waiters: []sema.Waiter{a}}},
		{"delete twice", [][]sema.Change{{putWaiter(a)}, {delWaiter("a"), delWaiter("a")}, {delWaiter("a")}}, store.State{}},
		{"put again after delete", [][]sema.Change{{putWaiter(a)}, {delWaiter("a")}, {putWaiter(a)}}, store.State{Waiters: []sema.Waiter{a}}},
		{"granted: waiter deleted, lease with its ticket kept", [][]sema.Change{{putLimit(lim), putWaiter(a)}, {delWaiter("a"), putLease(lease)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{lease}, Fence: 5}},
		{"leases, limits and runs are kept", [][]sema.Change{{putLimit(lim), putLease(lease), putWaiter(a)}, {delWaiter("a"), delLease(a.LeaseID), delRun(a.LeaseID)}},
			store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{lease}, Fence: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, tt.want)
			wantState(t, h.Reopen(t, s), tt.want)
		})
	}
}

// testSubMicrosecondTimes checks that times keep the digits below a
// microsecond, before the Unix epoch too (where truncating toward zero and
// flooring differ), and that two times a nanosecond apart stay apart.
func testSubMicrosecondTimes(t *testing.T, h Harness) {
	instants := []time.Time{
		base().Truncate(time.Microsecond).Add(1),
		base().Truncate(time.Microsecond).Add(999),
		time.Unix(0, -1).UTC(),   // 1969-12-31 23:59:59.999999999
		time.Unix(-1, 1).UTC(),   // 1969-12-31 23:59:59.000000001
		time.Unix(0, 1).UTC(),    // 1970-01-01 00:00:00.000000001
		time.Unix(0, 999).UTC(),  // below a microsecond after the epoch
		time.Unix(0, -999).UTC(), // below a microsecond before it
		time.Date(1901, time.December, 13, 20, 45, 52, 123456789, time.UTC),
	}
	for i, at := range instants {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			lim := newLimit("sub-micro")
			lim.Created, lim.Updated, lim.DecayAt = at, at.Add(1), at.Add(2)
			lease := newLease(1, lim.ID)
			lease.Created, lease.Expires = at, at.Add(time.Nanosecond)
			lease.Duration = time.Nanosecond
			run := newRun("sub-micro", uuid.Nil)
			run.Created, run.Updated = at, at.Add(1)
			for j := range run.History {
				run.History[j].At = at.Add(time.Duration(j))
			}
			want := store.State{Limits: []sema.Limit{lim}, Leases: []sema.Lease{lease}, Runs: []sema.Run{run}, Fence: 1}
			commit(t, s, putLimit(lim), putLease(lease), putRun(run))
			for _, st := range []store.State{load(t, s), load(t, h.Reopen(t, s))} {
				if diff := cmp.Diff(want, st, stateOpts()); diff != "" {
					t.Errorf("Load mismatch (-want +got):\n%s", diff)
				}
				if len(st.Leases) != 1 || len(st.Limits) != 1 || len(st.Runs) != 1 {
					continue
				}
				got := []time.Time{st.Limits[0].Created, st.Limits[0].Updated, st.Limits[0].DecayAt,
					st.Leases[0].Created, st.Leases[0].Expires, st.Runs[0].Created, st.Runs[0].Updated}
				wantNs := []time.Time{at, at.Add(1), at.Add(2), at, at.Add(1), at, at.Add(1)}
				for j := range got {
					if got[j].UnixNano() != wantNs[j].UnixNano() {
						t.Errorf("time %d: got %d ns, want %d ns", j, got[j].UnixNano(), wantNs[j].UnixNano())
					}
				}
			}
		})
	}
}

// testNULBytes checks every string that sema lets carry a NUL byte: a
// holder's type, id and metadata (keys and values), a run's name and its
// state messages. Limit names and tags cannot: sema refuses control
// characters in them.
func testNULBytes(t *testing.T, h Harness) {
	for _, str := range []string{"\x00", "\x00\x00", "a\x00", "\x00b", "a\x00b\x00c", "\\x00 \\0 \\u0000", "\u0000\x00ü😀\x00"} {
		t.Run(fmt.Sprintf("%q", str), func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			lease := newLease(3)
			lease.Holder = sema.Holder{Type: str, ID: str + str, Metadata: map[string]string{str: str, "k": str, str + "k": ""}}
			run := newRun(str, uuid.Nil)
			for j := range run.History {
				run.History[j].Message = str
			}
			want := store.State{Leases: []sema.Lease{lease}, Runs: []sema.Run{run}, Fence: 3}
			commit(t, s, putLease(lease), putRun(run))
			wantState(t, s, want)
			s = h.Reopen(t, s)
			wantState(t, s, want)

			// And they can be overwritten with other strings holding NUL.
			lease.Holder.ID, run.Name = str+"\x00again", "\x00"+str
			commit(t, s, putLease(lease), putRun(run))
			wantState(t, s, store.State{Leases: []sema.Lease{lease}, Runs: []sema.Run{run}, Fence: 3})
		})
	}
}

// testFencesAcrossTheSignBit checks fences and the high-water mark on both
// sides of 2^63, where a signed 64-bit column orders them wrongly: the
// larger uint64 is the negative int64.
func testFencesAcrossTheSignBit(t *testing.T, h Harness) {
	const (
		belowSign = 1<<63 - 1
		sign      = 1 << 63
	)
	tests := []struct {
		name   string
		fences [][]uint64 // batches of leases with these fences
		want   uint64
	}{
		{"MaxInt64 then 2^63", [][]uint64{{belowSign}, {sign}}, sign},
		{"2^63 then MaxInt64", [][]uint64{{sign}, {belowSign}}, sign},
		{"2^63 then 1", [][]uint64{{sign}, {1}}, sign},
		{"max then 2^63 and 0", [][]uint64{{math.MaxUint64}, {sign, 0}}, math.MaxUint64},
		{"one batch, mixed order", [][]uint64{{sign + 1, belowSign, 5, sign, math.MaxUint64 - 1}}, math.MaxUint64 - 1},
		{"MaxUint64-1 then 2^63+1", [][]uint64{{math.MaxUint64 - 1}, {sign + 1}}, math.MaxUint64 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			var want store.State
			for _, batch := range tt.fences {
				var changes []sema.Change
				for _, f := range batch {
					l := newLease(f)
					want.Leases = append(want.Leases, l)
					changes = append(changes, putLease(l))
					r := newRun(fmt.Sprint(f), uuid.Nil)
					r.Fence, r.WaitSeq = f, f
					want.Runs = append(want.Runs, r)
					changes = append(changes, putRun(r))
				}
				commit(t, s, changes...)
			}
			want.Fence = tt.want
			wantState(t, s, want)
			wantState(t, h.Reopen(t, s), want)
		})
	}
}

// newKey returns an API key record with every field set.
func newKey(id string) sema.Key {
	return sema.Key{
		ID:       id,
		Name:     "etl-workers",
		Scopes:   []string{"read", "acquire:warehouse*", "manage:resource:*"},
		Hash:     []byte("0123456789abcdef0123456789abcdef"),
		Created:  base(),
		Expires:  base().Add(90 * 24 * time.Hour),
		Revoked:  base().Add(time.Hour + time.Nanosecond),
		LastUsed: base().Add(time.Minute),
	}
}

func testKeyRoundtrip(t *testing.T, h Harness) {
	zone := time.FixedZone("UTC-08", -8*3600)
	tests := []struct {
		name string
		key  func() sema.Key
		want func(sema.Key) sema.Key
	}{
		{"every field set", func() sema.Key { return newKey("0123456789ab") }, nil},
		{"never expires, not revoked, never used", func() sema.Key {
			k := newKey("ba9876543210")
			k.Expires, k.Revoked, k.LastUsed = time.Time{}, time.Time{}, time.Time{}
			return k
		}, nil},
		{"unicode name and one scope", func() sema.Key {
			k := newKey("aaaaaaaaaaaa")
			k.Name, k.Scopes = "équipe ü 😀", []string{"admin"}
			return k
		}, nil},
		{"times in another zone come back in UTC", func() sema.Key {
			k := newKey("bbbbbbbbbbbb")
			k.Created, k.Expires = k.Created.In(zone), k.Expires.In(zone)
			return k
		}, func(k sema.Key) sema.Key {
			k.Created, k.Expires = k.Created.UTC(), k.Expires.UTC()
			return k
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			k := tt.key()
			want := k
			if tt.want != nil {
				want = tt.want(k)
			}
			commit(t, s, putKey(k))
			wantState(t, s, store.State{Keys: []sema.Key{want}})
			s = h.Reopen(t, s)
			wantState(t, s, store.State{Keys: []sema.Key{want}})
		})
	}
}

func testKeyUpsert(t *testing.T, h Harness) {
	a, b := newKey("aaaaaaaaaaaa"), newKey("bbbbbbbbbbbb")
	revoked := a
	revoked.Revoked = base().Add(2 * time.Hour)
	revoked.LastUsed = base().Add(3 * time.Hour)
	revoked.Scopes = []string{"read"}
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.Key
	}{
		{"two keys", [][]sema.Change{{putKey(a), putKey(b)}}, []sema.Key{a, b}},
		{"replaced", [][]sema.Change{{putKey(a)}, {putKey(revoked)}}, []sema.Key{revoked}},
		{"replaced in one batch", [][]sema.Change{{putKey(a), putKey(revoked), putKey(b)}}, []sema.Key{revoked, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Keys: tt.want})
		})
	}
}

func audit(seq uint64, at time.Time) sema.AuditRecord {
	return sema.AuditRecord{Seq: seq, Time: at, KeyID: "0123456789ab", KeyName: "ops ü", Remote: "127.0.0.1:5555",
		RequestID: "req-1", Action: "limit.update", Target: "warehouse", Status: 200,
		Before: `{"limit":5}`, After: `{"limit":10}`}
}

func putAudit(r sema.AuditRecord) sema.Change { return sema.Change{Kind: sema.PutAudit, Audit: &r} }
func pruneAudit(before time.Time) sema.Change {
	return sema.Change{Kind: sema.PruneAudit, Before: before}
}

func testAudit(t *testing.T, h Harness) {
	a, b, c := audit(1, base()), audit(2, base().Add(time.Hour)), audit(3, base().Add(2*time.Hour))
	empty := sema.AuditRecord{Seq: 4, Time: base().Add(3 * time.Hour)}
	tests := []struct {
		name    string
		batches [][]sema.Change
		want    []sema.AuditRecord
	}{
		{"kept in order", [][]sema.Change{{putAudit(a), putAudit(b)}, {putAudit(c), putAudit(empty)}}, []sema.AuditRecord{a, b, c, empty}},
		{"pruned before a time", [][]sema.Change{{putAudit(a), putAudit(b), putAudit(c)}, {pruneAudit(b.Time)}}, []sema.AuditRecord{b, c}},
		{"pruned in the batch that wrote them", [][]sema.Change{{putAudit(a), pruneAudit(base().Add(time.Minute)), putAudit(b)}}, []sema.AuditRecord{b}},
		{"pruning nothing", [][]sema.Change{{pruneAudit(base())}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			for _, b := range tt.batches {
				commit(t, s, b...)
			}
			wantState(t, s, store.State{Audit: tt.want})
			s = h.Reopen(t, s)
			wantState(t, s, store.State{Audit: tt.want})
		})
	}
}
