package sema

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// treq is b.req with a ticket.
func (b *bundle) treq(ticket string, slots int, names ...string) Request {
	r := b.req(slots, names...)
	r.Ticket = ticket
	return r
}

func TestTicketRetryGetsTheSameLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 2)
	first := b.mustGrant(t0, b.treq("job-1", 1, "db"))
	b.events()
	o := b.acquire(at(time.Second), b.treq("job-1", 1, "db")) // a retry after a lost answer: new lease id
	if !o.Granted || !o.Resumed {
		t.Fatalf("retry: Granted %v Resumed %v, want both", o.Granted, o.Resumed)
	}
	if diff := cmp.Diff(first, o.Lease); diff != "" {
		t.Errorf("retry's lease (-first +retry):\n%s", diff)
	}
	if c, e := b.m.Drain(); len(c) != 0 || len(e) != 0 {
		t.Errorf("retry recorded %d changes and %d events, want none", len(c), len(e))
	}
	if got := b.view(at(time.Second), "db").Held; got != 1 {
		t.Errorf("active slots = %d, want 1 (one lease)", got)
	}
}

func TestTicketForgottenWhenLeaseEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	first := b.mustGrant(t0, b.treq("job-1", 1, "db"))
	b.m.Release(at(time.Second), first.ID)
	o := b.acquire(at(2*time.Second), b.treq("job-1", 1, "db"))
	if !o.Granted || o.Resumed || o.Lease.ID == first.ID {
		t.Fatalf("after release: Granted %v Resumed %v id %v, want a new lease", o.Granted, o.Resumed, o.Lease.ID)
	}
	// An expired lease's ticket is forgotten too, even before a Tick.
	o2 := b.acquire(at(2*time.Second+2*time.Minute), b.treq("job-1", 1, "db"))
	if !o2.Granted || o2.Resumed || o2.Lease.ID == o.Lease.ID {
		t.Fatalf("after expiry: Granted %v Resumed %v id %v, want a new lease", o2.Granted, o2.Resumed, o2.Lease.ID)
	}
}

func TestTicketReattachKeepsPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	holder := b.mustGrant(t0, b.req(1, "db"))
	w1 := b.mustWait(t0, b.treq("w1", 1, "db"))
	w2 := b.mustWait(t0, b.treq("w2", 1, "db"))
	r := b.treq("w1", 1, "db")
	r.Wait = true
	o := b.acquire(at(time.Second), r)
	if o.Granted || !o.Resumed || o.WaiterID != w1 || o.Position != 1 {
		t.Fatalf("reattach w1: %+v, want waiter %d at position 1, resumed", o, w1)
	}
	r = b.treq("w2", 1, "db")
	r.Wait = true
	if o := b.acquire(at(time.Second), r); o.WaiterID != w2 || o.Position != 2 {
		t.Fatalf("reattach w2: waiter %d position %d, want %d at 2", o.WaiterID, o.Position, w2)
	}
	b.events()
	b.m.Release(at(2*time.Second), holder.ID)
	if got := grantedWaiters(b.events()); !cmp.Equal(got, []uint64{w1}) {
		t.Errorf("granted %v, want [%d]", got, w1)
	}
}

func TestTicketConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	b.create(t0, "api", 1)
	b.mustGrant(t0, b.treq("held", 1, "db"))
	b.mustWait(t0, b.treq("waits", 1, "db"))
	for _, r := range []Request{
		b.treq("held", 1, "api"),
		b.treq("waits", 1, "api"),
		b.treq("waits", 1, "db", "api"),
		{Names: []string{"db"}, Slots: 1, Mode: ModeRateLimit, Ticket: "held"},
	} {
		r.Wait = true
		if _, err := b.m.Acquire(at(time.Second), r); !errors.Is(err, ErrTicketConflict) {
			t.Errorf("Acquire(%v, ticket %s): %v, want ErrTicketConflict", r.Names, r.Ticket, err)
		}
	}
}

func TestTicketValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	for _, tk := range []string{strings.Repeat("a", 129), "has space", "slash/", "é"} {
		_, err := b.m.Acquire(t0, b.treq(tk, 1, "db"))
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != "ticket" {
			t.Errorf("ticket %q: %v, want an InvalidError on ticket", tk, err)
		}
	}
	for _, tk := range []string{"a", strings.Repeat("Z", 128), "run:1.2_x-Y"} {
		if why := ValidateTicket(tk); why != "" {
			t.Errorf("ValidateTicket(%q) = %q, want valid", tk, why)
		}
	}
}

func TestTicketWaitersAreDurable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	holder := b.mustGrant(t0, b.req(1, "db"))
	b.mustWait(t0, b.req(1, "db")) // no ticket: not durable
	r := b.treq("w1", 1, "db")
	r.Deadline = at(time.Hour)
	b.mustWait(t0, r)
	b.mustWait(at(time.Second), b.treq("w2", 1, "db"))
	late := b.treq("late", 1, "db")
	late.Deadline = at(time.Minute)
	b.mustWait(at(time.Second), late)
	b.events()
	if got := len(b.store.waiters); got != 3 {
		t.Fatalf("stored waiters = %d, want 3", got)
	}
	// After a restart two minutes later the holder is gone (expired): the
	// first ticket waiter is granted, the second waits, "late" is dropped.
	m := b.store.restoreLeases(b.m.cfg)
	m.Tick(at(2 * time.Minute))
	rs := m.RestoreWaiters(at(2*time.Minute), b.store.waiterList())
	var got []string
	for _, r := range rs {
		got = append(got, r.Waiter.Ticket)
		if r.Err != nil {
			t.Errorf("restore %s: %v", r.Waiter.Ticket, r.Err)
		}
	}
	if want := []string{"w1", "w2"}; !cmp.Equal(got, want) {
		t.Fatalf("restored %v, want %v (in order; late dropped)", got, want)
	}
	if !rs[0].Outcome.Granted || rs[1].Outcome.Granted || rs[1].Outcome.Position != 1 {
		t.Errorf("restored outcomes: %+v, %+v; want w1 granted, w2 first in line", rs[0].Outcome, rs[1].Outcome)
	}
	// The client of w1 comes back and gets its lease; w2's takes its place.
	if o, err := m.Acquire(at(2*time.Minute), b.treq("w1", 1, "db")); err != nil || !o.Resumed || o.Lease.ID != rs[0].Outcome.Lease.ID {
		t.Errorf("w1 reclaims: %+v %v", o, err)
	}
	c, _ := m.Drain()
	b.store.apply(c)
	if _, ok := b.store.waiters["late"]; ok || len(b.store.waiters) != 1 {
		t.Errorf("stored waiters after restore: %v, want only w2", b.store.waiters)
	}
	if l := b.store.leases[rs[0].Outcome.Lease.ID]; l.Ticket != "w1" {
		t.Errorf("stored lease ticket %q, want w1", l.Ticket)
	}
	_ = holder
}

func TestCreateRunAgainIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := RunSpec{ID: uuid.MustParse("00000000-0000-0000-0000-0000000000a1"), Kind: KindTask, Name: "x",
		Tags: []string{"d"}, LeaseDuration: time.Minute}
	first, err := b.m.CreateRun(t0, spec)
	if err != nil {
		t.Fatal(err)
	}
	b.events()
	again, err := b.m.CreateRun(at(time.Second), spec)
	if err != nil {
		t.Fatalf("create again: %v", err)
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("run created again (-first +again):\n%s", diff)
	}
	if c, _ := b.m.Drain(); len(c) != 0 {
		t.Errorf("create again recorded %d changes", len(c))
	}
	spec.Name = "y"
	if _, err := b.m.CreateRun(at(time.Second), spec); !errors.Is(err, ErrRunExists) {
		t.Errorf("create with another spec: %v, want ErrRunExists", err)
	}
}
