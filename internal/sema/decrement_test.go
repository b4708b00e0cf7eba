package sema

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecrementValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		names     []string
		slots     int
		wantField string
	}{
		{"no names", nil, 1, "names"},
		{"zero slots", []string{"db"}, 0, "slots"},
		{"negative slots", []string{"db"}, -3, "slots"},
		{"too many slots", []string{"db"}, MaxSlots + 1, "slots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "db", 1)
			_, err := b.m.Decrement(t0, tt.names, tt.slots, 0)
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Errorf("Decrement: %v, want *InvalidError on %q", err, tt.wantField)
			}
		})
	}
}

func TestDecrementOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "db", Limit: 10, Active: true, ActiveSlots: 1})
	b.create(t0, "other", 10)
	anon := func(now time.Time, slots int) Lease {
		r := b.req(slots, "db")
		r.Anonymous = true
		return b.mustGrant(now, r)
	}
	// Created out of order: a2 is the oldest.
	a1 := anon(at(2*time.Second), 2)
	a2 := anon(at(time.Second), 2)
	named := b.mustGrant(t0, b.req(3, "db"))
	if v := b.view(at(3*time.Second), "db"); v.ActiveSlots != 8 {
		t.Fatalf("ActiveSlots %d, want 8", v.ActiveSlots)
	}
	tests := []struct {
		slots      int
		wantActive int
		wantLeases []Lease // the leases left holding db, oldest first
	}{
		{3, 5, []Lease{named, a1}}, // a2 (2) and one slot of a1
		{2, 3, []Lease{named}},     // the rest of a1, then the level
		{5, 3, []Lease{named}},     // nothing left but the named lease
	}
	for i, tt := range tests {
		now := at(time.Duration(3+i) * time.Second)
		refs, err := b.m.Decrement(now, []string{"db", "unknown", "db"}, tt.slots, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"db"}, names(refs)); d != "" {
			t.Errorf("Decrement refs (-want +got):\n%s", d)
		}
		v := b.view(now, "db")
		if v.ActiveSlots != tt.wantActive {
			t.Errorf("step %d: ActiveSlots %d, want %d", i, v.ActiveSlots, tt.wantActive)
		}
		var got []string
		for _, h := range v.Holders {
			got = append(got, h.LeaseID.String())
		}
		var want []string
		for _, l := range tt.wantLeases {
			want = append(want, l.ID.String())
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("step %d: holders (-want +got):\n%s", i, d)
		}
	}
	if _, _, err := b.m.Lease(at(6*time.Second), a2.ID); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("fully decremented lease still found: %v", err)
	}
	if !b.m.Release(at(6*time.Second), named.ID) {
		t.Error("the named lease was not held")
	}
	b.events()
	if d := diffRestored(b.m, b.store, at(6*time.Second)); d != "" {
		t.Error(d)
	}
}

func TestDecrementMultiLimitAnonymousLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	x := b.create(t0, "x", 2)
	y := b.create(t0, "y", 2)
	r := b.req(2, "x", "y")
	r.Anonymous = true
	lease := b.mustGrant(t0, r)
	kept := append([]Hold(nil), lease.Holds...)
	if _, err := b.m.Decrement(t0, []string{"x"}, 2, 0); err != nil {
		t.Fatal(err)
	}
	// The Outcome handed out before must not change under the caller.
	if d := cmp.Diff(kept, lease.Holds); d != "" {
		t.Errorf("returned lease's holds changed by a later Decrement (-before +after):\n%s", d)
	}
	got, refs, err := b.m.Lease(t0, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Hold{{LimitID: y.ID, Slots: 2}}, got.Holds); d != "" {
		t.Errorf("holds after decrementing x (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"y"}, names(refs)); d != "" {
		t.Errorf("limits after decrementing x (-want +got):\n%s", d)
	}
	if v := b.view(t0, "x"); v.Held != 0 {
		t.Errorf("x held %d, want 0", v.Held)
	}
	b.events()
	if d := diffRestored(b.m, b.store, t0); d != "" {
		t.Error(d)
	}
	b.m.Release(t0, lease.ID)
	if v := b.view(t0, "y"); v.Held != 0 {
		t.Errorf("y held %d after release, want 0", v.Held)
	}
	_ = x
}

func TestDecrementWakesWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "db", Limit: 1, Active: true, ActiveSlots: 1})
	w := b.mustWait(t0, b.req(1, "db"))
	b.events()
	if _, err := b.m.Decrement(t0, []string{"db"}, 1, 0); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]uint64{w}, grantedWaiters(b.events())); d != "" {
		t.Errorf("granted (-want +got):\n%s", d)
	}
}

func TestAverageOccupancy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		start     float64
		occupancy float64
		slots     int
		check     func(t *testing.T, prev, got float64)
	}{
		{"grows toward the sample", 0.5, 5, 1, func(t *testing.T, prev, got float64) {
			if got <= prev || got >= 5 {
				t.Errorf("avg %v after %v, want strictly between it and 5", got, prev)
			}
		}},
		{"per slot", 0.5, 10, 2, func(t *testing.T, prev, got float64) {
			if got <= prev || got >= 5 {
				t.Errorf("avg %v after %v, want strictly between it and 5", got, prev)
			}
		}},
		{"shrinks toward the sample", 8, 5, 1, func(t *testing.T, prev, got float64) {
			if got >= prev || got <= 5 {
				t.Errorf("avg %v after %v, want strictly between 5 and it", got, prev)
			}
		}},
		{"minimum 0.1", 0.1, 0.001, 1, func(t *testing.T, prev, got float64) {
			if got != 0.1 {
				t.Errorf("avg %v, want 0.1", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.DefaultAvgOccupancy = tt.start
			m := New(cfg)
			if _, err := m.CreateLimit(t0, limitID(1), LimitSpec{Name: "db", Limit: 10, Active: true}); err != nil {
				t.Fatal(err)
			}
			prev := tt.start
			for range 50 {
				if _, err := m.Decrement(t0, []string{"db"}, tt.slots, tt.occupancy); err != nil {
					t.Fatal(err)
				}
				v, _ := m.LimitByName(t0, "db", Summary)
				tt.check(t, prev, v.AvgSlotOccupancySeconds)
				prev = v.AvgSlotOccupancySeconds
			}
			// The first sample moves the average by 1/(2·limit) of the gap.
			m2 := New(cfg)
			m2.CreateLimit(t0, limitID(1), LimitSpec{Name: "db", Limit: 10, Active: true})
			m2.Decrement(t0, []string{"db"}, tt.slots, tt.occupancy)
			v, _ := m2.LimitByName(t0, "db", Summary)
			occ := max(tt.occupancy/float64(tt.slots), 0.1)
			if want := tt.start + (occ-tt.start)/20; !closeTo(v.AvgSlotOccupancySeconds, want) {
				t.Errorf("avg after one sample %v, want %v", v.AvgSlotOccupancySeconds, want)
			}
		})
	}
}

func closeTo(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestReleaseRecordsOccupancy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	b.createSpec(t0, LimitSpec{Name: "off", Limit: 1})
	lease := b.mustGrant(t0, b.req(1, "db", "off"))
	b.events()
	b.m.Release(at(12*time.Second), lease.ID)
	// 2 + (12 - 2)/2 = 7
	if v := b.view(at(12*time.Second), "db"); !closeTo(v.AvgSlotOccupancySeconds, 7) {
		t.Errorf("avg %v after a 12 s lease on a limit of 1, want 7", v.AvgSlotOccupancySeconds)
	}
	if v := b.view(at(12*time.Second), "off"); v.AvgSlotOccupancySeconds != 2 {
		t.Errorf("inactive limit avg %v, want 2 unchanged", v.AvgSlotOccupancySeconds)
	}
	// Occupancy is soft: recorded on FlushSoft, not with the release.
	c, _ := b.m.Drain()
	for _, ch := range c {
		if ch.Kind == PutLimit {
			t.Errorf("release recorded %+v before FlushSoft", ch.Limit)
		}
	}
	b.m.FlushSoft()
	c, _ = b.m.Drain()
	if len(c) != 1 || c[0].Kind != PutLimit || !closeTo(c[0].Limit.AvgSlotOccupancySeconds, 7) {
		t.Errorf("FlushSoft recorded %+v, want db with avg 7", c)
	}
	b.m.FlushSoft()
	if c, _ := b.m.Drain(); len(c) != 0 {
		t.Errorf("a second FlushSoft recorded %d changes, want none", len(c))
	}
}
