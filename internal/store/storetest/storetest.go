// Package storetest is the one conformance suite that every store.Store
// backend must pass. A behaviour that backends must share is written here
// first, then implemented in each backend.
//
// The suite pins down the contract of package store:
//
//   - Load returns exactly what was committed: every field of every limit
//     and lease, times to the nanosecond (returned in UTC), floats bit for
//     bit, fences over the whole uint64 range, holder strings and metadata
//     whatever valid UTF-8 they hold (NUL included), and holds in their
//     order. The order of the
//     Limits and Leases slices is not specified, and nil and empty slices
//     and maps are equivalent.
//   - Commit applies its changes in order and atomically: a batch with an
//     invalid change (a kind that does not exist, or a limit whose name is
//     already another limit's) returns an error and leaves nothing of the
//     batch applied, and the store stays usable.
//   - A PutLease raises the fencing high-water mark to its Fence; nothing
//     lowers it: not deleting the lease, not a lower fence later, not a
//     restart. Every uint64 is a valid fence.
//   - Deleting what does not exist is not an error. Deleting a limit does
//     not touch the leases that hold it; the state machine drops such holds
//     when it restores.
//   - A Commit whose context is already done applies nothing.
//   - The state survives closing and opening the same data again.
//   - After Close, Load and Commit return store.ErrClosed; Close may be
//     called again.
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

func putLimit(l sema.Limit) sema.Change { return sema.Change{Kind: sema.PutLimit, Limit: l} }
func delLimit(id uuid.UUID) sema.Change { return sema.Change{Kind: sema.DeleteLimit, ID: id} }
func putLease(l sema.Lease) sema.Change { return sema.Change{Kind: sema.PutLease, Lease: l} }
func delLease(id uuid.UUID) sema.Change { return sema.Change{Kind: sema.DeleteLease, ID: id} }

func compareUUID(a, b uuid.UUID) int { return strings.Compare(string(a[:]), string(b[:])) }

// stateOpts compares states as the contract defines them: slice order of
// limits and leases does not matter, nil equals empty, times compare as
// instants (time.Time.Equal) and floats bit for bit.
func stateOpts() cmp.Options {
	return cmp.Options{
		cmpopts.EquateEmpty(),
		cmpopts.SortSlices(func(a, b sema.Limit) bool { return compareUUID(a.ID, b.ID) < 0 }),
		cmpopts.SortSlices(func(a, b sema.Lease) bool { return compareUUID(a.ID, b.ID) < 0 }),
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
		{"template name", func() sema.Limit { return newLimit("resource:*") }, nil},
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
			return []sema.Change{putLease(newLease(100)), delLimit(taken.ID), {Kind: sema.DeleteLease + 1}, putLimit(newLimit("new"))}
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
	changes := []sema.Change{putLimit(lim), putLease(lease)}
	want := store.State{
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
		commit(t, s, putLimit(a), putLimit(b), putLimit(gone), putLease(l1))
		commit(t, s, putLease(l2), putLease(l3))
		commit(t, s, delLimit(gone.ID), delLease(l3.ID))
		want := store.State{Limits: []sema.Limit{a, b}, Leases: []sema.Lease{l1, l2}, Fence: 13}
		wantState(t, s, want)

		s = h.Reopen(t, s)
		wantState(t, s, want)

		// Commits go on after a reopen and survive the next one.
		l4 := newLease(14, a.ID)
		commit(t, s, putLease(l4), delLease(l1.ID))
		want.Leases = []sema.Lease{l2, l4}
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
