package sema

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestResetTagLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.create(t0, "tag:db", 2)
	b.mustGrant(t0, b.req(1, "tag:db"))
	b.mustGrant(t0, b.req(1, "tag:db"))
	w := b.req(1, "tag:db")
	w.Wait = true
	waiter := b.mustWait(t0, w)
	b.events()
	ids := []uuid.UUID{leaseID(90), leaseID(91), leaseID(92), leaseID(93)}
	res, err := b.m.ResetTagLimit(at(time.Second), KindTask, TagLimitRef{Key: "db"}, []string{"o1", "o2", "o1", "o3"}, ids, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The waiter the revocation let in comes first; o1 takes the other
	// slot (once); o2 and o3 do not fit.
	want := TagLimitReset{Revoked: 2, Granted: []string{"o1"}, Refused: []string{"o2", "o3"}}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("ResetTagLimit (-want +got):\n%s", d)
	}
	if got := grantedWaiters(b.events()); !cmp.Equal([]uint64{waiter}, got) {
		t.Errorf("granted waiters %v, want [%d]", got, waiter)
	}
	v := b.view(at(time.Second), "tag:db")
	var holders []Holder
	for _, h := range v.Holders {
		if !h.Holder.IsZero() {
			holders = append(holders, h.Holder)
		}
	}
	if d := cmp.Diff([]Holder{{Type: "task_run", ID: "o1"}}, holders); d != "" {
		t.Errorf("override holders (-want +got):\n%s", d)
	}
	if lease, _, err := b.m.Lease(at(time.Second), ids[0]); err != nil || !lease.Expires.Equal(at(time.Second).Add(time.Hour)) {
		t.Errorf("o1's lease: %v expires %v, want leaseIDs[0] for an hour", err, lease.Expires)
	}

	for name, ref := range map[string]TagLimitRef{
		"unknown key":        {Key: "nope"},
		"id of another kind": {ID: l.ID},
		"unknown id":         {ID: limitID(99)},
	} {
		kind := KindTask
		if name == "id of another kind" {
			kind = KindFlow
		}
		if _, err := b.m.ResetTagLimit(at(time.Second), kind, ref, nil, nil, time.Hour); !errors.Is(err, ErrLimitNotFound) {
			t.Errorf("%s: %v, want ErrLimitNotFound", name, err)
		}
	}
}

func TestIncrementAndDecrementTagLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:a", 1)
	b.create(t0, "tag:b", 5)
	refs, err := b.m.IncrementTagLimits(t0, KindTask, []string{"a", "b", "missing"}, "h1", leaseID(1), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"tag:a", "tag:b"}, names(refs)); d != "" {
		t.Errorf("limits (-want +got):\n%s", d)
	}
	lease, _, err := b.m.Lease(t0, leaseID(1))
	if err != nil || !cmp.Equal(lease.Holder, Holder{Type: "task_run", ID: "h1"}) || lease.Duration != time.Hour {
		t.Errorf("lease %+v, %v; want h1's for an hour", lease, err)
	}
	// Full: refused with the tag wait as Retry-After.
	_, err = b.m.IncrementTagLimits(t0, KindTask, []string{"a"}, "h2", leaseID(2), time.Hour)
	var le *LockedError
	if !errors.As(err, &le) || le.RetryAfter != DefaultConfig().TagMaxWait {
		t.Errorf("increment of a full tag: %v, want *LockedError with Retry-After %v", err, DefaultConfig().TagMaxWait)
	}
	var ie *InvalidError
	if _, err := b.m.IncrementTagLimits(t0, KindTask, []string{"a*"}, "h2", leaseID(3), time.Hour); !errors.As(err, &ie) || ie.Field != "names" {
		t.Errorf("increment of a tag with '*': %v, want *InvalidError for names", err)
	}
	if _, err := b.m.DecrementTagLimits(t0, KindTask, []string{""}, "h1"); !errors.As(err, &ie) || ie.Field != "names" {
		t.Errorf("decrement of an empty tag: %v, want *InvalidError for names", err)
	}
	refs, err = b.m.DecrementTagLimits(at(time.Second), KindTask, []string{"a"}, "h1")
	if err != nil || !cmp.Equal([]string{"tag:a"}, names(refs)) {
		t.Errorf("DecrementTagLimits = %v, %v; want tag:a", names(refs), err)
	}
	// The lease on a and b is gone whole, as in Prefect.
	if a, bv := b.view(at(time.Second), "tag:a"), b.view(at(time.Second), "tag:b"); a.Held != 0 || bv.Held != 0 {
		t.Errorf("held a %d b %d after the decrement, want 0 and 0", a.Held, bv.Held)
	}
}

func TestUpsertTagLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l, created, err := b.m.UpsertTagLimit(t0, KindFlow, "gpu", 2, limitID(1))
	if err != nil || !created || l.Name != "label:gpu" || l.Limit != 2 || !l.Active {
		t.Fatalf("UpsertTagLimit new = %+v, %v, %v; want label:gpu of 2, active, created", l, created, err)
	}
	inactive := false
	if _, err := b.m.UpdateLimit(t0, l.ID, LimitPatch{Active: &inactive}); err != nil {
		t.Fatal(err)
	}
	l2, created, err := b.m.UpsertTagLimit(at(time.Second), KindFlow, "gpu", 4, limitID(2))
	if err != nil || created || l2.ID != l.ID || l2.Limit != 4 || l2.Active {
		t.Errorf("UpsertTagLimit existing = %+v, %v, %v; want the same limit of 4, still inactive", l2, created, err)
	}
	var ie *InvalidError
	if _, _, err := b.m.UpsertTagLimit(t0, KindTask, "db*", 1, limitID(3)); !errors.As(err, &ie) || ie.Field != "tag" {
		t.Errorf("UpsertTagLimit(db*): %v, want *InvalidError for tag", err)
	}
}
