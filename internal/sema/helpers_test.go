package sema

import (
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
)

// t0 is the moment every test starts at.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// sec returns f seconds as a Duration.
func sec(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// testID returns a deterministic id distinct for every n and kind.
func testID(kind byte, n uint64) uuid.UUID {
	var u uuid.UUID
	u[0] = kind
	binary.BigEndian.PutUint64(u[8:], n)
	return u
}

func limitID(n uint64) uuid.UUID { return testID('L', n) }
func leaseID(n uint64) uuid.UUID { return testID('l', n) }

// bundle is one test's machine plus the helpers that drive it.
type bundle struct {
	t     *testing.T
	m     *Machine
	next  uint64 // next lease id
	store *mapStore
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return &bundle{t: t, m: New(DefaultConfig()), store: newMapStore()}
}

// create creates an active limit named name and fails the test on error.
func (b *bundle) create(now time.Time, name string, limit int) Limit {
	b.t.Helper()
	return b.createSpec(now, LimitSpec{Name: name, Limit: limit, Active: true})
}

func (b *bundle) createSpec(now time.Time, s LimitSpec) Limit {
	b.t.Helper()
	b.next++
	l, err := b.m.CreateLimit(now, limitID(b.next), s)
	if err != nil {
		b.t.Fatalf("CreateLimit(%q): %v", s.Name, err)
	}
	return l
}

// req returns a concurrency request for slots on names with a fresh lease id
// and a 60 s lease.
func (b *bundle) req(slots int, names ...string) Request {
	b.next++
	return Request{Names: names, Slots: slots, LeaseID: leaseID(b.next), LeaseDuration: time.Minute}
}

// acquire acquires and fails the test on error.
func (b *bundle) acquire(now time.Time, r Request) Outcome {
	b.t.Helper()
	o, err := b.m.Acquire(now, r)
	if err != nil {
		b.t.Fatalf("Acquire(%v): %v", r.Names, err)
	}
	return o
}

// mustGrant acquires and fails the test unless the request is granted now.
func (b *bundle) mustGrant(now time.Time, r Request) Lease {
	b.t.Helper()
	o := b.acquire(now, r)
	if !o.Granted {
		b.t.Fatalf("Acquire(%v): not granted (waiter %d, position %d)", r.Names, o.WaiterID, o.Position)
	}
	return o.Lease
}

// mustWait acquires with Wait and fails the test unless the request queues.
func (b *bundle) mustWait(now time.Time, r Request) uint64 {
	b.t.Helper()
	r.Wait = true
	o := b.acquire(now, r)
	if o.Granted {
		b.t.Fatalf("Acquire(%v): granted, want queued", r.Names)
	}
	return o.WaiterID
}

// view reads a limit by name.
func (b *bundle) view(now time.Time, name string) LimitView {
	b.t.Helper()
	v, err := b.m.LimitByName(now, name, Full)
	if err != nil {
		b.t.Fatalf("LimitByName(%q): %v", name, err)
	}
	return v
}

// events drains the machine, applies its changes to the bundle's store and
// returns the events.
func (b *bundle) events() []Event {
	b.t.Helper()
	c, e := b.m.Drain()
	b.store.apply(c)
	return e
}

// grantedWaiters returns the waiter ids of Granted events, in order.
func grantedWaiters(es []Event) []uint64 {
	out := []uint64{}
	for _, e := range es {
		if e.Kind == Granted && e.WaiterID != 0 {
			out = append(out, e.WaiterID)
		}
	}
	return out
}

// eventKinds returns the kinds of es, in order.
func eventKinds(es []Event) []EventKind {
	out := []EventKind{}
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

// mapStore is the simplest durable store: the result of applying changes in
// order to three maps, and the fencing high-water mark of the PutLeases.
type mapStore struct {
	limits  map[uuid.UUID]Limit
	leases  map[uuid.UUID]Lease
	runs    map[uuid.UUID]Run
	waiters map[string]Waiter
	fence   uint64
}

func newMapStore() *mapStore {
	return &mapStore{limits: map[uuid.UUID]Limit{}, leases: map[uuid.UUID]Lease{}, runs: map[uuid.UUID]Run{},
		waiters: map[string]Waiter{}}
}

func (s *mapStore) apply(cs []Change) {
	for _, c := range cs {
		switch c.Kind {
		case PutLimit:
			s.limits[c.Limit.ID] = c.Limit
		case DeleteLimit:
			delete(s.limits, c.ID)
		case PutLease:
			l := c.Lease
			l.Holds = slices.Clone(l.Holds)
			s.leases[l.ID] = l
			s.fence = max(s.fence, l.Fence)
		case DeleteLease:
			delete(s.leases, c.ID)
		case PutRun:
			r := *c.Run
			r.Tags, r.History = slices.Clone(r.Tags), slices.Clone(r.History)
			s.runs[r.ID] = r
		case DeleteRun:
			delete(s.runs, c.ID)
		case PutWaiter:
			w := *c.Waiter
			w.Names = slices.Clone(w.Names)
			s.waiters[w.Ticket] = w
		case DeleteWaiter:
			delete(s.waiters, c.Ticket)
		default:
			panic("unknown change kind")
		}
	}
}

// restore returns a new Machine loaded from the store at now.
func (s *mapStore) restore(cfg Config, now time.Time) *Machine {
	m := s.restoreLeases(cfg)
	m.RestoreRuns(now, s.runList())
	m.RestoreWaiters(now, s.waiterList())
	return m
}

// waiterList returns the stored waiters, ordered by ticket.
func (s *mapStore) waiterList() []Waiter {
	return slices.SortedFunc(maps.Values(s.waiters), func(a, b Waiter) int { return strings.Compare(a.Ticket, b.Ticket) })
}

// liveWaiters returns the records of the machine's waiters with a ticket,
// ordered by ticket.
func liveWaiters(m *Machine) []Waiter {
	out := []Waiter{}
	for t, w := range m.ticketWaiters {
		r := w.req
		out = append(out, Waiter{Ticket: t, Seq: w.id, Names: r.Names, Slots: r.Slots, Mode: r.Mode,
			LeaseID: r.LeaseID, LeaseDuration: r.LeaseDuration, Holder: r.Holder, NoLease: r.NoLease,
			Anonymous: r.Anonymous, Since: w.since, Deadline: r.Deadline})
	}
	slices.SortFunc(out, func(a, b Waiter) int { return strings.Compare(a.Ticket, b.Ticket) })
	return out
}

// restoreLeases returns a new Machine loaded with the store's limits and
// leases only.
func (s *mapStore) restoreLeases(cfg Config) *Machine {
	m := New(cfg)
	ls := slices.SortedFunc(maps.Values(s.limits), func(a, b Limit) int { return slices.Compare(a.ID[:], b.ID[:]) })
	ss := slices.SortedFunc(maps.Values(s.leases), func(a, b Lease) int { return slices.Compare(a.ID[:], b.ID[:]) })
	for i := range ss {
		ss[i].Holds = slices.Clone(ss[i].Holds)
	}
	m.Restore(ls, ss, s.fence)
	return m
}

// runList returns the stored runs, ordered by id.
func (s *mapStore) runList() []Run {
	rs := slices.SortedFunc(maps.Values(s.runs), func(a, b Run) int { return slices.Compare(a.ID[:], b.ID[:]) })
	for i := range rs {
		rs[i].Tags, rs[i].History = slices.Clone(rs[i].Tags), slices.Clone(rs[i].History)
	}
	return rs
}

// runSet returns every run the machine keeps, ordered by id.
func runSet(m *Machine) []Run {
	out := []Run{}
	for _, r := range m.runs {
		out = append(out, r.snapshot())
	}
	slices.SortFunc(out, func(a, b Run) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return out
}

// durableViews returns every limit's Summary view at now, without what is
// not durable: the waiters and the per-limit fencing token (see
// TestRestoreForgetsLimitFencingToken). The decaying Level and Denied are
// given as of now, since a limit may be settled (decay folded in) without
// recording it, which changes the representation but not the value.
func durableViews(m *Machine, now time.Time) []LimitView {
	vs := m.Limits(now, "", 0, m.LimitCount()+1, Summary)
	for i := range vs {
		l := m.byID[vs[i].ID]
		vs[i].Waiting, vs[i].HeadSince = 0, time.Time{} // waiters are not durable
		vs[i].FencingToken = 0
		vs[i].Level = level(now, l)
		vs[i].Denied = max(0, l.Denied-m.deniedRate(l)*max(0, now.Sub(l.DecayAt).Seconds()))
		vs[i].DecayAt = time.Time{}
	}
	return vs
}

// leaseSet returns every lease the machine holds, expired ones included,
// ordered by id.
func leaseSet(m *Machine) []Lease {
	out := []Lease{}
	for _, ll := range m.leases {
		l := ll.Lease
		l.Holds = slices.Clone(l.Holds)
		if len(l.Holds) == 0 {
			l.Holds = nil
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return out
}

// diffRestored reports how a machine restored from the store differs from m.
func diffRestored(m *Machine, s *mapStore, now time.Time) string {
	// Without the runs: restoring them may move them on (a waiting run
	// that fits once the other waiters are gone starts).
	r := s.restoreLeases(m.cfg)
	opts := cmp.Options{cmpopts.EquateEmpty(), cmpopts.EquateApprox(0, 1e-6)}
	if d := cmp.Diff(durableViews(m, now), durableViews(r, now), opts); d != "" {
		return "limits (-live +restored):\n" + d
	}
	if d := cmp.Diff(leaseSet(m), leaseSet(r), opts); d != "" {
		return "leases (-live +restored):\n" + d
	}
	if d := cmp.Diff(runSet(m), s.runList(), opts); d != "" {
		return "runs (-live +stored):\n" + d
	}
	if d := cmp.Diff(liveWaiters(m), s.waiterList(), opts); d != "" {
		return "waiters (-live +stored):\n" + d
	}
	if r.Fence() > m.Fence() {
		return "restored fence is higher than the live one"
	}
	return ""
}
