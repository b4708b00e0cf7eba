package sema

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRestore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 3)
	b.createSpec(t0, LimitSpec{Name: "api", Limit: 10, Active: true, SlotDecayPerSecond: 0.5, DeniedSlots: 4})
	b.createSpec(t0, LimitSpec{Name: "off", Limit: 1})
	b.create(t0, "resource:*", 3)
	gone := b.create(t0, "gone", 2)

	multi := b.mustGrant(t0, b.req(1, "db", "off", "resource:7", "gone"))
	anon := b.req(2, "db", "resource:7")
	anon.Anonymous = true
	b.mustGrant(at(time.Second), anon)
	b.mustGrant(at(time.Second), rateReq(6, "api"))
	if _, err := b.m.Acquire(at(2*time.Second), rateReq(6, "api")); err == nil {
		t.Fatal("rate acquire over the limit granted")
	}
	if _, err := b.m.Decrement(at(3*time.Second), []string{"db"}, 1, 4); err != nil {
		t.Fatal(err)
	}
	short := b.req(1, "api")
	short.LeaseDuration = 5 * time.Second
	b.mustGrant(at(3*time.Second), short)
	if _, err := b.m.Renew(at(4*time.Second), multi.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.m.DeleteLimit(at(4*time.Second), gone.ID); err != nil {
		t.Fatal(err)
	}
	b.mustWait(at(4*time.Second), b.req(3, "db")) // waiters are not durable
	b.m.FlushSoft()
	b.events()

	now := at(9 * time.Second) // the short lease expired but was not ticked
	if d := diffRestored(b.m, b.store, now); d != "" {
		t.Fatal(d)
	}
	r := b.store.restore(DefaultConfig(), now)
	if r.Fence() != b.m.Fence() {
		t.Errorf("restored Fence %d, want %d", r.Fence(), b.m.Fence())
	}
	// Both expire the short lease at the same Tick.
	for _, m := range []*Machine{b.m, r} {
		m.Drain()
		m.Tick(now)
		_, es := m.Drain()
		if d := cmp.Diff([]EventKind{Expired}, eventKinds(es)); d != "" {
			t.Errorf("events at Tick (-want +got):\n%s", d)
		}
	}
	// The restored machine grants above every fence ever handed out.
	o, err := r.Acquire(now, Request{Names: []string{"api"}, Slots: 1, LeaseID: leaseID(1000), LeaseDuration: time.Minute})
	if err != nil || !o.Granted {
		t.Fatalf("acquire on the restored machine: %+v %v", o, err)
	}
	if o.Lease.Fence <= b.m.Fence() {
		t.Errorf("restored machine granted fence %d, want above %d", o.Lease.Fence, b.m.Fence())
	}
}

func TestRestoreDropsHoldsOfMissingLimits(t *testing.T) {
	t.Parallel()
	m := New(DefaultConfig())
	a := Limit{ID: limitID(1), Name: "a", Limit: 2, Active: true, AvgSlotOccupancySeconds: 2, Created: t0, Updated: t0, DecayAt: t0}
	lease := Lease{ID: leaseID(1), Slots: 1, Created: t0, Duration: time.Minute, Expires: at(time.Minute), Fence: 7,
		Holds: []Hold{{LimitID: limitID(9), Slots: 1}, {LimitID: limitID(1), Slots: 1}}}
	m.Restore([]Limit{a}, []Lease{lease}, 3)
	if m.Fence() != 7 {
		t.Errorf("Fence %d, want the highest lease fence 7", m.Fence())
	}
	got, refs, err := m.Lease(t0, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Hold{{LimitID: limitID(1), Slots: 1}}, got.Holds); d != "" {
		t.Errorf("holds (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"a"}, names(refs)); d != "" {
		t.Errorf("limits (-want +got):\n%s", d)
	}
	v, _ := m.LimitByName(t0, "a", Full)
	if v.Held != 1 || v.FencingToken != 7 {
		t.Errorf("a: held %d token %d, want 1 7", v.Held, v.FencingToken)
	}
	if c, e := m.Drain(); len(c) != 0 || len(e) != 0 {
		t.Errorf("Restore recorded %d changes %d events, want none", len(c), len(e))
	}
	m.Tick(at(time.Minute))
	if _, es := m.Drain(); len(es) != 1 || es[0].Kind != Expired {
		t.Errorf("Tick at expiry: %v, want one Expired", eventKinds(es))
	}
}
