package sema

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
)

func names(rs []LimitRef) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func TestAcquireValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		req       Request
		wantField string
		wantNever string
	}{
		{"no names", Request{Slots: 1}, "names", ""},
		{"zero slots", Request{Names: []string{"db"}, Slots: 0}, "slots", ""},
		{"negative slots", Request{Names: []string{"db"}, Slots: -1}, "slots", ""},
		{"too many slots", Request{Names: []string{"db"}, Slots: MaxSlots + 1}, "slots", ""},
		{"bad name", Request{Names: []string{"db", "a/b"}, Slots: 1}, "names", ""},
		{"control name", Request{Names: []string{"a\x01"}, Slots: 1}, "names", ""},
		{"template name", Request{Names: []string{"resource:*"}, Slots: 1}, "", "template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "db", 5)
			b.create(t0, "resource:*", 5)
			b.m.Drain()
			_, err := b.m.Acquire(t0, tt.req)
			if tt.wantField != "" {
				var ie *InvalidError
				if !errors.As(err, &ie) || ie.Field != tt.wantField {
					t.Fatalf("Acquire: %v, want *InvalidError on %q", err, tt.wantField)
				}
			} else {
				var ne *NeverError
				if !errors.As(err, &ne) || ne.Reason != tt.wantNever {
					t.Fatalf("Acquire: %v, want *NeverError %q", err, tt.wantNever)
				}
			}
			if v := b.view(t0, "db"); v.Held != 0 {
				t.Errorf("db held %d after a refused acquire, want 0", v.Held)
			}
			if l, w := b.m.Counts(); l != 0 || w != 0 {
				t.Errorf("Counts = %d leases %d waiters, want 0 0", l, w)
			}
		})
	}
}

func TestAcquireNever(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		req        Request
		wantReason string
		wantNames  []string
	}{
		{"slots over limit", Request{Names: []string{"ten"}, Slots: 11}, "slots_exceed_limit", []string{"ten"}},
		{"limit zero", Request{Names: []string{"zero"}, Slots: 1}, "slots_exceed_limit", []string{"zero"}},
		{"only the offending names", Request{Names: []string{"ten", "two", "zero"}, Slots: 3}, "slots_exceed_limit", []string{"two", "zero"}},
		{"waiting does not help", Request{Names: []string{"two"}, Slots: 3, Wait: true}, "slots_exceed_limit", []string{"two"}},
		{"rate limit without decay", Request{Names: []string{"ten", "decay", "two"}, Slots: 1, Mode: ModeRateLimit}, "no_decay", []string{"ten", "two"}},
		{"rate limit waiting without decay", Request{Names: []string{"ten"}, Slots: 1, Mode: ModeRateLimit, Wait: true}, "no_decay", []string{"ten"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "ten", 10)
			b.create(t0, "two", 2)
			b.create(t0, "zero", 0)
			b.createSpec(t0, LimitSpec{Name: "decay", Limit: 10, Active: true, SlotDecayPerSecond: 1})
			b.createSpec(t0, LimitSpec{Name: "off", Limit: 0, Active: false})
			tt.req.Names = append(tt.req.Names, "off", "unknown") // neither matters
			tt.req.LeaseID, tt.req.LeaseDuration = leaseID(1), time.Minute
			_, err := b.m.Acquire(t0, tt.req)
			var ne *NeverError
			if !errors.As(err, &ne) {
				t.Fatalf("Acquire: %v, want *NeverError", err)
			}
			if ne.Reason != tt.wantReason {
				t.Errorf("Reason = %q, want %q", ne.Reason, tt.wantReason)
			}
			if d := cmp.Diff(tt.wantNames, ne.Names); d != "" {
				t.Errorf("Names (-want +got):\n%s", d)
			}
			if tt.wantReason == "no_decay" && !strings.Contains(ne.Error(), "'"+strings.Join(tt.wantNames, ",")+"'") {
				t.Errorf("Error() = %q, want it to list %v", ne.Error(), tt.wantNames)
			}
			if l, w := b.m.Counts(); l != 0 || w != 0 {
				t.Errorf("Counts = %d leases %d waiters, want 0 0", l, w)
			}
		})
	}
}

func TestAcquireAllOrNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "a", 1)
	b.create(t0, "b", 5)
	first := b.mustGrant(t0, b.req(1, "a"))
	_, err := b.m.Acquire(t0, b.req(1, "b", "a"))
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("Acquire(b, a) with a full: %v, want *LockedError", err)
	}
	if got, want := err.Error(), `Concurrency limit "a" is full (1/1 slots in use)`; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	if v := b.view(t0, "b"); v.Held != 0 || v.ActiveSlots != 0 {
		t.Errorf("b held %d active %d after a refused multi-name acquire, want 0 0", v.Held, v.ActiveSlots)
	}
	b.m.Release(t0, first.ID)
	lease := b.mustGrant(t0, b.req(1, "b", "a", "b"))
	want := []Hold{{LimitID: limitID(2), Slots: 1}, {LimitID: limitID(1), Slots: 1}}
	if d := cmp.Diff(want, lease.Holds); d != "" {
		t.Errorf("Holds (-want +got):\n%s", d)
	}
	for _, n := range []string{"a", "b"} {
		if v := b.view(t0, n); v.Held != 1 {
			t.Errorf("%s held %d, want 1", n, v.Held)
		}
	}
}

func TestAcquireUnknownNamesSkipped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		names     []string
		wantNames []string
	}{
		{"only unknown", []string{"nope", "never"}, []string{}},
		{"known and unknown", []string{"nope", "db"}, []string{"db"}},
		{"duplicates", []string{"db", "nope", "db"}, []string{"db"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "db", 1)
			o := b.acquire(t0, b.req(1, tt.names...))
			if !o.Granted {
				t.Fatal("not granted")
			}
			if d := cmp.Diff(tt.wantNames, names(o.Limits)); d != "" {
				t.Errorf("Limits (-want +got):\n%s", d)
			}
			if len(o.Lease.Holds) != len(tt.wantNames) {
				t.Errorf("lease holds %d limits, want %d", len(o.Lease.Holds), len(tt.wantNames))
			}
			if _, err := b.m.LimitByName(t0, "nope", Summary); !errors.Is(err, ErrLimitNotFound) {
				t.Errorf("unknown name was created: %v", err)
			}
		})
	}
}

func TestAcquireInactiveLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "off", Limit: 1, Active: false})
	b.createSpec(t0, LimitSpec{Name: "off-zero", Limit: 0, Active: false})
	b.create(t0, "on", 15)
	for i := range 3 {
		o := b.acquire(t0, b.req(5, "off", "off-zero", "on"))
		if !o.Granted {
			t.Fatalf("acquire %d with inactive limits: not granted", i)
		}
		if d := cmp.Diff([]string{"off", "off-zero", "on"}, names(o.Limits)); d != "" {
			t.Errorf("Limits (-want +got):\n%s", d)
		}
	}
	for _, n := range []string{"off", "off-zero"} {
		if v := b.view(t0, n); v.ActiveSlots != 0 {
			t.Errorf("inactive %s: ActiveSlots %d, want 0 (inactive limits are not counted)", n, v.ActiveSlots)
		}
	}
	if v := b.view(t0, "on"); v.ActiveSlots != 15 {
		t.Errorf("on: ActiveSlots %d, want 15", v.ActiveSlots)
	}
	// Rate limiting through an inactive limit without decay is fine too.
	o := b.acquire(t0, Request{Names: []string{"off"}, Slots: 1, Mode: ModeRateLimit, NoLease: true})
	if !o.Granted {
		t.Errorf("rate-limit acquire on an inactive limit: not granted")
	}
}

func TestActivatingLimitCountsOnlyLaterGrants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	off := b.createSpec(t0, LimitSpec{Name: "x", Limit: 1, Active: false})
	early := b.mustGrant(t0, b.req(1, "x"))
	on := true
	if _, err := b.m.UpdateLimit(t0, off.ID, LimitPatch{Active: &on}); err != nil {
		t.Fatal(err)
	}
	b.mustGrant(t0, b.req(1, "x"))
	if v := b.view(t0, "x"); v.ActiveSlots != 1 {
		t.Errorf("ActiveSlots %d, want 1", v.ActiveSlots)
	}
	// Releasing the lease taken while inactive must not free the slot
	// taken since.
	b.m.Release(t0, early.ID)
	if _, err := b.m.Acquire(t0, b.req(1, "x")); err == nil {
		t.Errorf("acquire after releasing the early lease granted; want the limit still full")
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		avg       float64 // the limits' avg_slot_occupancy_seconds
		specs     []LimitSpec
		slots     int
		want      time.Duration
		wantBlock string
	}{
		{"no decay (Prefect 2.2 s)", 2, []LimitSpec{{Name: "l", Limit: 10, ActiveSlots: 10, DeniedSlots: 10}}, 1, sec(2.2), "l"},
		{"decay 0.1 (Prefect 110 s)", 2, []LimitSpec{{Name: "l", Limit: 10, ActiveSlots: 10, DeniedSlots: 10, SlotDecayPerSecond: 0.1}}, 1, 110 * time.Second, "l"},
		{"tag limit capped at 10 s", 10800, []LimitSpec{{Name: "tag:long-running", Limit: 10, ActiveSlots: 10, DeniedSlots: 10}}, 1, 10 * time.Second, "tag:long-running"},
		{"quick tag limit", 2, []LimitSpec{{Name: "tag:quick-tasks", Limit: 10, ActiveSlots: 10, DeniedSlots: 10}}, 1, sec(2.2), "tag:quick-tasks"},
		{"non-tag limit capped at 30 s", 10, []LimitSpec{{Name: "l", Limit: 30, ActiveSlots: 30, DeniedSlots: 16000}}, 1, 30 * time.Second, "l"},
		{"nothing denied yet", 2, []LimitSpec{{Name: "l", Limit: 4, ActiveSlots: 4}}, 2, sec(1), "l"},
		{"the worst limit decides", 2, []LimitSpec{
			{Name: "a", Limit: 10, ActiveSlots: 10, DeniedSlots: 10},
			{Name: "b", Limit: 10, ActiveSlots: 10, DeniedSlots: 20, SlotDecayPerSecond: 1},
		}, 1, 21 * time.Second, "b"},
		{"a day at most", 2, []LimitSpec{{Name: "l", Limit: 10, ActiveSlots: 10, DeniedSlots: 1000000, SlotDecayPerSecond: 0.001}}, 1, 24 * time.Hour, "l"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.DefaultAvgOccupancy = tt.avg
			m := New(cfg)
			var ns []string
			for i, s := range tt.specs {
				s.Active = true
				if _, err := m.CreateLimit(t0, limitID(uint64(i+1)), s); err != nil {
					t.Fatal(err)
				}
				ns = append(ns, s.Name)
			}
			_, err := m.Acquire(t0, Request{Names: ns, Slots: tt.slots, LeaseID: leaseID(1), LeaseDuration: time.Minute})
			var le *LockedError
			if !errors.As(err, &le) {
				t.Fatalf("Acquire: %v, want *LockedError", err)
			}
			if d := le.RetryAfter - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("RetryAfter = %v, want %v", le.RetryAfter, tt.want)
			}
			if le.Blocking != tt.wantBlock {
				t.Errorf("Blocking = %q, want %q", le.Blocking, tt.wantBlock)
			}
			// The refusal counts the denied slots on every active limit.
			for _, s := range tt.specs {
				v, _ := m.LimitByName(t0, s.Name, Summary)
				if v.DeniedSlots != s.DeniedSlots+tt.slots {
					t.Errorf("%s: DeniedSlots %d after a refusal, want %d", s.Name, v.DeniedSlots, s.DeniedSlots+tt.slots)
				}
			}
		})
	}
}

func TestDeniedSlotsDecay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		spec  LimitSpec
		avg   float64
		after time.Duration
		want  int
	}{
		{"tag limit decays at the clamped occupancy", LimitSpec{Name: "tag:x", Limit: 10, DeniedSlots: 10}, 120, sec(30.5), 7},
		{"non-tag limit clamps at 30 s", LimitSpec{Name: "x", Limit: 10, DeniedSlots: 30}, 120, sec(30.5), 29},
		{"rate limits decay at their own rate", LimitSpec{Name: "x", Limit: 10, DeniedSlots: 20, SlotDecayPerSecond: 2}, 120, 5 * time.Second, 10},
		{"never below zero", LimitSpec{Name: "x", Limit: 10, DeniedSlots: 2, SlotDecayPerSecond: 2}, 2, time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.DefaultAvgOccupancy = tt.avg
			m := New(cfg)
			tt.spec.Active = true
			if _, err := m.CreateLimit(t0, limitID(1), tt.spec); err != nil {
				t.Fatal(err)
			}
			v, _ := m.LimitByName(at(tt.after), tt.spec.Name, Summary)
			if v.DeniedSlots != tt.want {
				t.Errorf("DeniedSlots after %v = %d, want %d", tt.after, v.DeniedSlots, tt.want)
			}
		})
	}
}

func TestDecayReads(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "rate", Limit: 10, Active: true, ActiveSlots: 10, SlotDecayPerSecond: 0.1})
	tests := []struct {
		after time.Duration
		want  int
	}{
		{0, 10},
		{sec(9.9), 10},
		{sec(10), 9},
		{sec(30.5), 7},
		{sec(99.99), 1},
		{sec(100), 0},
		{time.Hour, 0},
	}
	for _, tt := range tests {
		if v := b.view(at(tt.after), "rate"); v.ActiveSlots != tt.want {
			t.Errorf("ActiveSlots after %v = %d, want %d", tt.after, v.ActiveSlots, tt.want)
		}
		vs := b.m.Limits(at(tt.after), "", 0, 10, Summary)
		if len(vs) != 1 || vs[0].ActiveSlots != tt.want {
			t.Errorf("Limits after %v: %+v, want ActiveSlots %d", tt.after, vs, tt.want)
		}
	}
}

func rateReq(slots int, names ...string) Request {
	return Request{Names: names, Slots: slots, Mode: ModeRateLimit, NoLease: true}
}

func TestRateLimitDecayIsContinuous(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "api", Limit: 10, Active: true, SlotDecayPerSecond: 5})
	b.mustGrant(t0, rateReq(10, "api"))
	for _, d := range []time.Duration{0, sec(0.5), sec(0.99)} {
		if _, err := b.m.Acquire(at(d), rateReq(5, "api")); err == nil {
			t.Fatalf("5 more slots fit %v after filling, want refused", d)
		}
	}
	b.mustGrant(at(sec(1)), rateReq(5, "api"))
	if v := b.view(at(sec(1)), "api"); v.ActiveSlots != 10 {
		t.Errorf("ActiveSlots %d, want 10", v.ActiveSlots)
	}
}

func TestRateLimitDecayHasNoFloorDrift(t *testing.T) {
	t.Parallel()
	b := setup(t)
	api := b.createSpec(t0, LimitSpec{Name: "api", Limit: 10, Active: true, SlotDecayPerSecond: 1})
	b.mustGrant(t0, rateReq(10, "api"))
	active := true
	// Writes every 50 ms (refusals, no-op updates) must not slow the drain:
	// Prefect's floor(decay·Δ) would be 0 on every one of them.
	step := 50 * time.Millisecond
	now := t0
	for now.Before(at(5*time.Second - step)) {
		now = now.Add(step)
		if _, err := b.m.Acquire(now, rateReq(6, "api")); err == nil {
			t.Fatalf("6 slots fit at %v, want refused until 6 s", now.Sub(t0))
		}
		now = now.Add(step)
		if _, err := b.m.UpdateLimit(now, api.ID, LimitPatch{Active: &active}); err != nil {
			t.Fatal(err)
		}
	}
	if v := b.view(at(5*time.Second), "api"); v.ActiveSlots != 5 {
		t.Errorf("ActiveSlots after 5 s = %d, want 5", v.ActiveSlots)
	}
	b.mustGrant(at(5*time.Second), rateReq(5, "api"))
}

func TestUpdateLimitKeepsDecay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.createSpec(t0, LimitSpec{Name: "decaying", Limit: 10, Active: true, ActiveSlots: 10, SlotDecayPerSecond: 0.1})
	name := "renamed-limit"
	if _, err := b.m.UpdateLimit(at(sec(30.5)), l.ID, LimitPatch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if v := b.view(at(sec(30.5)), name); v.ActiveSlots != 7 {
		t.Errorf("ActiveSlots right after the rename = %d, want 7", v.ActiveSlots)
	}
	if v := b.view(at(sec(40.5)), name); v.ActiveSlots != 6 {
		t.Errorf("ActiveSlots 10 s after the rename = %d, want 6", v.ActiveSlots)
	}
	// Changing the rate applies from the moment of the change.
	rate := 1.0
	if _, err := b.m.UpdateLimit(at(sec(40.5)), l.ID, LimitPatch{SlotDecayPerSecond: &rate}); err != nil {
		t.Fatal(err)
	}
	if v := b.view(at(sec(45.5)), name); v.ActiveSlots != 1 {
		t.Errorf("ActiveSlots 5 s after decay 1/s = %d, want 1", v.ActiveSlots)
	}
}

func TestDecayWakesRateWaiter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createSpec(t0, LimitSpec{Name: "api", Limit: 2, Active: true, SlotDecayPerSecond: 2})
	b.mustGrant(t0, rateReq(2, "api"))
	r := rateReq(1, "api")
	r.Wait = true
	o := b.acquire(t0, r)
	if o.Granted {
		t.Fatal("granted at once, want queued")
	}
	b.events()
	due, ok := b.m.NextDeadline()
	if !ok || due.Before(at(sec(0.5))) || due.After(at(sec(0.5)+time.Millisecond)) {
		t.Fatalf("NextDeadline = %v, %v; want about 0.5 s", due.Sub(t0), ok)
	}
	b.m.Tick(due)
	if d := cmp.Diff([]uint64{o.WaiterID}, grantedWaiters(b.events())); d != "" {
		t.Errorf("granted waiters at the deadline (-want +got):\n%s", d)
	}
}

func TestFIFOArrivalQueuesBehindWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 2)
	held := b.mustGrant(t0, b.req(1, "db"))
	big := b.mustWait(t0, b.req(2, "db"))
	// One slot is free, but a waiter is ahead.
	_, err := b.m.Acquire(t0, b.req(1, "db"))
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("Acquire(1) behind a waiter: %v, want *LockedError", err)
	}
	if got, want := err.Error(), `Concurrency limit "db" has 1 waiting in line (1/2 slots in use)`; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	r := b.req(1, "db")
	r.Wait = true
	o := b.acquire(t0, r)
	if o.Granted || o.Position != 2 {
		t.Fatalf("waiting Acquire(1) behind a waiter: granted %v position %d, want queued at 2", o.Granted, o.Position)
	}
	b.events()
	b.m.Release(at(time.Second), held.ID)
	if d := cmp.Diff([]uint64{big}, grantedWaiters(b.events())); d != "" {
		t.Errorf("granted (-want +got):\n%s", d)
	}
	v := b.view(at(time.Second), "db")
	if len(v.Waiters) != 1 || v.Waiters[0].ID != o.WaiterID || v.Waiters[0].Position != 1 {
		t.Errorf("waiters %+v, want only %d at position 1", v.Waiters, o.WaiterID)
	}
}

func TestFIFOGrantOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	lease := b.mustGrant(t0, b.req(1, "db"))
	var ws []uint64
	for i := range 4 {
		r := b.req(1, "db")
		r.Wait = true
		o := b.acquire(t0, r)
		if o.Position != i+1 {
			t.Errorf("waiter %d position %d, want %d", i, o.Position, i+1)
		}
		ws = append(ws, o.WaiterID)
	}
	b.events()
	var got []uint64
	for range ws {
		b.m.Release(t0, lease.ID)
		es := b.events()
		gw := grantedWaiters(es)
		if len(gw) != 1 {
			t.Fatalf("a release granted %v, want exactly one waiter", gw)
		}
		got = append(got, gw[0])
		for _, e := range es {
			if e.Kind == Granted {
				lease = e.Lease
			}
		}
	}
	if d := cmp.Diff(ws, got); d != "" {
		t.Errorf("grant order (-want +got):\n%s", d)
	}
}

func TestFIFOMultiLimitNoDeadlock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "a", 1)
	b.create(t0, "b", 1)
	la := b.mustGrant(t0, b.req(1, "a"))
	lb := b.mustGrant(t0, b.req(1, "b"))
	w1 := b.mustWait(t0, b.req(1, "a", "b"))
	w2 := b.mustWait(t0, b.req(1, "b", "a"))
	w3 := b.mustWait(t0, b.req(1, "b"))
	b.events()
	b.m.Release(t0, la.ID)
	if g := grantedWaiters(b.events()); len(g) != 0 {
		t.Fatalf("granted %v with b still held, want none", g)
	}
	b.m.Release(t0, lb.ID)
	es := b.events()
	if d := cmp.Diff([]uint64{w1}, grantedWaiters(es)); d != "" {
		t.Fatalf("granted (-want +got):\n%s", d)
	}
	b.m.Release(t0, es[len(es)-1].Lease.ID)
	es = b.events()
	if d := cmp.Diff([]uint64{w2}, grantedWaiters(es)); d != "" {
		t.Fatalf("granted (-want +got):\n%s", d)
	}
	b.m.Release(t0, es[len(es)-1].Lease.ID)
	if d := cmp.Diff([]uint64{w3}, grantedWaiters(b.events())); d != "" {
		t.Fatalf("granted (-want +got):\n%s", d)
	}
}

func TestCancelWaiter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 2)
	b.mustGrant(t0, b.req(1, "db"))
	head := b.mustWait(t0, b.req(2, "db"))
	next := b.mustWait(t0, b.req(1, "db"))
	b.events()
	if !b.m.CancelWaiter(t0, head) {
		t.Fatal("CancelWaiter(head) = false, want true")
	}
	if d := cmp.Diff([]uint64{next}, grantedWaiters(b.events())); d != "" {
		t.Errorf("granted after cancelling the head (-want +got):\n%s", d)
	}
	tests := []struct {
		name string
		id   uint64
	}{
		{"cancelled twice", head},
		{"already granted", next},
		{"never existed", 999},
	}
	for _, tt := range tests {
		if b.m.CancelWaiter(t0, tt.id) {
			t.Errorf("%s: CancelWaiter = true, want false", tt.name)
		}
	}
	if _, w := b.m.Counts(); w != 0 {
		t.Errorf("%d waiters left, want 0", w)
	}
}

func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	lease := b.mustGrant(t0, b.req(1, "db"))
	w := b.mustWait(t0, b.req(1, "db"))
	b.events()
	if due, ok := b.m.NextDeadline(); !ok || !due.Equal(lease.Expires) {
		t.Errorf("NextDeadline = %v %v, want the lease's expiry %v", due, ok, lease.Expires)
	}
	b.m.Tick(lease.Expires.Add(-time.Nanosecond))
	if es := b.events(); len(es) != 0 {
		t.Fatalf("Tick just before expiry: events %v, want none", eventKinds(es))
	}
	if _, _, err := b.m.Lease(lease.Expires.Add(-time.Nanosecond), lease.ID); err != nil {
		t.Errorf("Lease just before expiry: %v", err)
	}
	b.m.Tick(lease.Expires)
	es := b.events()
	if d := cmp.Diff([]EventKind{Expired, Granted}, eventKinds(es)); d != "" {
		t.Fatalf("events at expiry (-want +got):\n%s", d)
	}
	if es[0].Lease.ID != lease.ID || es[1].WaiterID != w {
		t.Errorf("expired %v granted waiter %d, want %v and %d", es[0].Lease.ID, es[1].WaiterID, lease.ID, w)
	}
	if _, _, err := b.m.Lease(lease.Expires, lease.ID); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Lease after expiry: %v, want ErrLeaseNotFound", err)
	}
	if _, ok := b.store.leases[lease.ID]; ok {
		t.Error("store still has the expired lease")
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		renewAt     time.Duration
		d           time.Duration
		wantErr     error
		wantExpires time.Duration
	}{
		{"before expiry", 30 * time.Second, 10 * time.Minute, nil, 30*time.Second + 10*time.Minute},
		{"keeps duration when zero", 30 * time.Second, 0, nil, 90 * time.Second},
		{"just before expiry", time.Minute - time.Nanosecond, time.Minute, nil, 2*time.Minute - time.Nanosecond},
		{"at expiry", time.Minute, time.Minute, ErrLeaseNotFound, 0},
		{"after expiry", time.Hour, time.Minute, ErrLeaseNotFound, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "db", 1)
			lease := b.mustGrant(t0, b.req(1, "db"))
			w := b.mustWait(t0, b.req(1, "db"))
			b.events()
			got, err := b.m.Renew(at(tt.renewAt), lease.ID, tt.d)
			es := b.events()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Renew: %v, want %v", err, tt.wantErr)
				}
				if d := cmp.Diff([]EventKind{Expired, Granted}, eventKinds(es)); d != "" {
					t.Fatalf("events (-want +got):\n%s", d)
				}
				if es[1].WaiterID != w {
					t.Errorf("slots went to waiter %d, want %d", es[1].WaiterID, w)
				}
				return
			}
			if err != nil {
				t.Fatalf("Renew: %v", err)
			}
			if !got.Expires.Equal(at(tt.wantExpires)) {
				t.Errorf("Expires = %v, want %v", got.Expires.Sub(t0), tt.wantExpires)
			}
			if s := b.store.leases[lease.ID]; !s.Expires.Equal(got.Expires) {
				t.Errorf("stored expiry %v, want %v", s.Expires.Sub(t0), tt.wantExpires)
			}
			b.m.Tick(lease.Expires)
			if es := b.events(); len(es) != 0 {
				t.Errorf("Tick at the old expiry: %v, want nothing", eventKinds(es))
			}
			b.m.Tick(got.Expires)
			if d := cmp.Diff([]EventKind{Expired, Granted}, eventKinds(b.events())); d != "" {
				t.Errorf("events at the new expiry (-want +got):\n%s", d)
			}
		})
	}
}

func TestShorten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		d           time.Duration
		wantExpires time.Duration // from t0
		wantChange  bool
	}{
		{"sooner", 10 * time.Second, 40 * time.Second, true},
		{"later keeps expiry", 10 * time.Minute, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, "db", 1)
			lease := b.mustGrant(t0, b.req(1, "db"))
			b.m.Drain()
			if !b.m.Shorten(at(30*time.Second), lease.ID, tt.d) {
				t.Fatal("Shorten of a live lease: false")
			}
			changes, _ := b.m.Drain()
			if got := len(changes) == 1 && changes[0].Kind == PutLease; got != tt.wantChange {
				t.Errorf("PutLease recorded: %v, want %v (%v)", got, tt.wantChange, changes)
			}
			got, _, err := b.m.Lease(at(30*time.Second), lease.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Expires.Equal(at(tt.wantExpires)) || got.Duration != lease.Duration {
				t.Errorf("lease expires %v, duration %v; want %v, %v", got.Expires, got.Duration, at(tt.wantExpires), lease.Duration)
			}
			// A renewal without a duration gives it its full term again.
			r, err := b.m.Renew(at(35*time.Second), lease.ID, 0)
			if err != nil || !r.Expires.Equal(at(35*time.Second).Add(lease.Duration)) {
				t.Errorf("Renew after Shorten: %v, %v; want expiry %v", r.Expires, err, at(35*time.Second).Add(lease.Duration))
			}
		})
	}
}

func TestShortenExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	lease := b.mustGrant(t0, b.req(1, "db"))
	w := b.mustWait(t0, b.req(1, "db"))
	b.events()
	b.m.Shorten(t0, lease.ID, 10*time.Second)
	if d, ok := b.m.NextDeadline(); !ok || !d.Equal(at(10*time.Second)) {
		t.Errorf("next deadline %v, %v; want %v", d, ok, at(10*time.Second))
	}
	b.m.Tick(at(10 * time.Second))
	es := b.events()
	if d := cmp.Diff([]EventKind{Expired, Granted}, eventKinds(es)); d != "" {
		t.Fatalf("events (-want +got):\n%s", d)
	}
	if es[1].WaiterID != w {
		t.Errorf("slots went to waiter %d, want %d", es[1].WaiterID, w)
	}
	if b.m.Shorten(at(20*time.Second), lease.ID, time.Second) {
		t.Error("Shorten of an expired lease: true")
	}
}

func TestRenewUnknown(t *testing.T) {
	t.Parallel()
	m := New(DefaultConfig())
	if _, err := m.Renew(t0, leaseID(1), time.Minute); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Renew of unknown lease: %v, want ErrLeaseNotFound", err)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 1)
	lease := b.mustGrant(t0, b.req(1, "db"))
	tests := []struct {
		name string
		id   uuid.UUID
		now  time.Time
		want bool
	}{
		{"unknown", leaseID(999), t0, false},
		{"held", lease.ID, at(time.Second), true},
		{"twice", lease.ID, at(time.Second), false},
	}
	for _, tt := range tests {
		if got := b.m.Release(tt.now, tt.id); got != tt.want {
			t.Errorf("%s: Release = %v, want %v", tt.name, got, tt.want)
		}
	}
	if d := cmp.Diff([]EventKind{LimitChanged, Granted, Released}, eventKinds(b.events())); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	// Releasing at or after expiry expires the lease instead.
	late := b.mustGrant(t0, b.req(1, "db"))
	b.events()
	if b.m.Release(late.Expires, late.ID) {
		t.Error("Release at expiry = true, want false")
	}
	if d := cmp.Diff([]EventKind{Expired}, eventKinds(b.events())); d != "" {
		t.Errorf("events of a late release (-want +got):\n%s", d)
	}
	if v := b.view(late.Expires, "db"); v.Held != 0 {
		t.Errorf("held %d, want 0", v.Held)
	}
}

func TestFencingTokensIncrease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "a", 1)
	b.create(t0, "b", 2)
	b.createSpec(t0, LimitSpec{Name: "r", Limit: 100, Active: true, SlotDecayPerSecond: 1})
	var last uint64
	check := func(l Lease, limits ...string) {
		t.Helper()
		if l.Fence <= last {
			t.Errorf("fence %d after %d, want it to grow", l.Fence, last)
		}
		last = l.Fence
		for _, n := range limits {
			if v := b.view(t0, n); v.FencingToken != l.Fence {
				t.Errorf("%s FencingToken %d, want %d", n, v.FencingToken, l.Fence)
			}
		}
		if b.m.Fence() != l.Fence {
			t.Errorf("Fence() = %d, want %d", b.m.Fence(), l.Fence)
		}
	}
	l1 := b.mustGrant(t0, b.req(1, "a"))
	check(l1, "a")
	check(b.mustGrant(t0, b.req(1, "b")), "b")
	if l := b.mustGrant(t0, rateReq(1, "r")); l.Fence != 0 {
		t.Errorf("rate-limit grant without a lease took fencing token %d, want none", l.Fence)
	}
	rl := rateReq(1, "r")
	rl.NoLease = false
	check(b.mustGrant(t0, rl))
	w := b.mustWait(t0, b.req(1, "a", "b"))
	b.events()
	b.m.Release(t0, l1.ID)
	es := b.events()
	if len(es) != 2 || es[1].WaiterID != w {
		t.Fatalf("events %v, want the waiter granted", eventKinds(es))
	}
	check(es[1].Lease, "a", "b")
	check(b.mustGrant(t0, b.req(1, "unknown")))
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		templates []LimitSpec
		acquire   string
		wantLimit int // 0: no limit materialised
	}{
		{"materialises", []LimitSpec{{Name: "resource:*", Limit: 1}}, "resource:42", 1},
		{"no match", []LimitSpec{{Name: "resource:*", Limit: 1}}, "other:42", 0},
		{"empty star", []LimitSpec{{Name: "resource:*", Limit: 1}}, "resource:", 1},
		{"most specific wins", []LimitSpec{{Name: "*", Limit: 3}, {Name: "resource:*", Limit: 1}, {Name: "resource:4*", Limit: 2}}, "resource:42", 2},
		{"less specific when the specific one misses", []LimitSpec{{Name: "*", Limit: 3}, {Name: "resource:*", Limit: 1}, {Name: "resource:4*", Limit: 2}}, "resource:17", 1},
		{"catch-all", []LimitSpec{{Name: "*", Limit: 3}, {Name: "resource:*", Limit: 1}}, "db", 3},
		{"middle star", []LimitSpec{{Name: "tenant:*:db", Limit: 4}, {Name: "tenant:*", Limit: 5}}, "tenant:7:db", 4},
		{"tie goes to the smaller name", []LimitSpec{{Name: "ab*", Limit: 6}, {Name: "a*c", Limit: 7}}, "abc", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			for _, s := range tt.templates {
				s.Active = true
				s.SlotDecayPerSecond = float64(s.Limit) / 10
				b.createSpec(t0, s)
			}
			o := b.acquire(at(time.Second), b.req(1, tt.acquire))
			if !o.Granted {
				t.Fatal("not granted")
			}
			v, err := b.m.LimitByName(at(time.Second), tt.acquire, Summary)
			if tt.wantLimit == 0 {
				if !errors.Is(err, ErrLimitNotFound) || len(o.Limits) != 0 {
					t.Errorf("a limit was materialised: %v %+v", err, o.Limits)
				}
				return
			}
			if err != nil {
				t.Fatalf("LimitByName: %v", err)
			}
			want := Limit{ID: v.ID, Name: tt.acquire, Limit: tt.wantLimit, Active: true,
				SlotDecayPerSecond: float64(tt.wantLimit) / 10, AvgSlotOccupancySeconds: 2,
				Created: at(time.Second), Updated: at(time.Second), DecayAt: at(time.Second),
				Idle: DefaultTemplateIdle, FromTemplate: true}
			if d := cmp.Diff(want, v.Limit); d != "" {
				t.Errorf("materialised limit (-want +got):\n%s", d)
			}
			if v.Held != 1 || v.Template {
				t.Errorf("held %d template %v, want 1 false", v.Held, v.Template)
			}
			if d := cmp.Diff([]LimitRef{{ID: v.ID, Name: tt.acquire, Limit: tt.wantLimit}}, o.Limits); d != "" {
				t.Errorf("Limits (-want +got):\n%s", d)
			}
		})
	}
}

func TestTemplateLimitsEachName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tmpl := b.create(t0, "resource:*", 1)
	b.mustGrant(t0, b.req(1, "resource:42"))
	if _, err := b.m.Acquire(t0, b.req(1, "resource:42")); err == nil {
		t.Error("a second acquire of resource:42 was granted, want refused")
	}
	b.mustGrant(t0, b.req(1, "resource:43"))
	if v := b.view(t0, "resource:*"); !v.Template || v.Held != 0 {
		t.Errorf("template view: template %v held %d, want true 0", v.Template, v.Held)
	}
	// Changing the template does not change names already materialised.
	two := 2
	if _, err := b.m.UpdateLimit(t0, tmpl.ID, LimitPatch{Limit: &two}); err != nil {
		t.Fatal(err)
	}
	if v := b.view(t0, "resource:42"); v.Limit.Limit != 1 {
		t.Errorf("resource:42 limit %d after updating the template, want 1", v.Limit.Limit)
	}
	b.mustGrant(t0, b.req(2, "resource:44"))
	// Deleting the template stops materialising.
	if err := b.m.DeleteLimit(t0, tmpl.ID); err != nil {
		t.Fatal(err)
	}
	o := b.acquire(t0, b.req(1, "resource:45"))
	if !o.Granted || len(o.Limits) != 0 {
		t.Errorf("acquire after deleting the template: %+v, want granted with no limits", o)
	}
}

func TestTemplateNameReusedAfterDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "resource:*", 1)
	old := b.mustGrant(t0, b.req(1, "resource:42"))
	first := b.view(t0, "resource:42")
	if err := b.m.DeleteLimit(t0, first.ID); err != nil {
		t.Fatal(err)
	}
	b.mustGrant(at(time.Second), b.req(1, "resource:42"))
	b.events()
	// The old lease held the deleted limit; after a restart it must not
	// count against the new limit of the same name.
	r := b.store.restore(DefaultConfig(), at(time.Second))
	v, err := r.LimitByName(at(time.Second), "resource:42", Full)
	if err != nil {
		t.Fatal(err)
	}
	if v.Held != 1 || len(v.Holders) != 1 || v.Holders[0].LeaseID == old.ID {
		t.Errorf("restored resource:42: held %d holders %+v, want only the new lease", v.Held, v.Holders)
	}
	if d := diffRestored(b.m, b.store, at(time.Second)); d != "" {
		t.Error(d)
	}
}

func TestLoweringLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db := b.create(t0, "db", 5)
	var leases []Lease
	for range 4 {
		leases = append(leases, b.mustGrant(t0, b.req(1, "db")))
	}
	two := 2
	if _, err := b.m.UpdateLimit(t0, db.ID, LimitPatch{Limit: &two}); err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if _, _, err := b.m.Lease(t0, l.ID); err != nil {
			t.Errorf("lease %v revoked by lowering the limit: %v", l.ID, err)
		}
	}
	if v := b.view(t0, "db"); v.Held != 4 || v.ActiveSlots != 4 {
		t.Errorf("held %d active %d, want 4 4", v.Held, v.ActiveSlots)
	}
	w := b.mustWait(t0, b.req(1, "db"))
	b.events()
	for i, want := range []int{0, 0, 1} {
		b.m.Release(t0, leases[i].ID)
		if got := len(grantedWaiters(b.events())); got != want {
			t.Errorf("after release %d: %d grants, want %d", i+1, got, want)
		}
	}
	if v := b.view(t0, "db"); v.Held != 2 || len(v.Waiters) != 0 {
		t.Errorf("held %d waiters %v, want 2 and none (waiter %d granted)", v.Held, v.Waiters, w)
	}
}

func TestUpdateLimitFailsHopelessWaiters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		patch      func() LimitPatch
		wantReason string
	}{
		{"limit below slots", func() LimitPatch { n := 2; return LimitPatch{Limit: &n} }, "slots_exceed_limit"},
		{"limit zero", func() LimitPatch { n := 0; return LimitPatch{Limit: &n} }, "slots_exceed_limit"},
		{"decay removed", func() LimitPatch { f := 0.0; return LimitPatch{SlotDecayPerSecond: &f} }, "no_decay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			l := b.createSpec(t0, LimitSpec{Name: "db", Limit: 5, Active: true, ActiveSlots: 5, SlotDecayPerSecond: 0.001})
			r := rateReq(3, "db")
			r.Wait = true
			w := b.acquire(t0, r).WaiterID
			b.events()
			if _, err := b.m.UpdateLimit(t0, l.ID, tt.patch()); err != nil {
				t.Fatal(err)
			}
			es := b.events()
			var failed []Event
			for _, e := range es {
				if e.Kind == WaiterFailed {
					failed = append(failed, e)
				}
			}
			if len(failed) != 1 || failed[0].WaiterID != w {
				t.Fatalf("WaiterFailed events %+v, want one for waiter %d", failed, w)
			}
			var ne *NeverError
			if !errors.As(failed[0].Err, &ne) || ne.Reason != tt.wantReason {
				t.Errorf("Err = %v, want *NeverError %q", failed[0].Err, tt.wantReason)
			}
			if _, n := b.m.Counts(); n != 0 || b.m.CancelWaiter(t0, w) {
				t.Errorf("%d waiters left, want the failed one gone", n)
			}
		})
	}
}

func TestFailedWaiterUnblocksOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.create(t0, "a", 2)
	b.create(t0, "b", 5)
	b.mustGrant(t0, b.req(1, "a"))
	b.mustWait(t0, b.req(2, "a", "b")) // blocked on a
	w := b.mustWait(t0, b.req(1, "b")) // fits b, but queued behind
	b.events()
	one := 1
	if _, err := b.m.UpdateLimit(t0, a.ID, LimitPatch{Limit: &one}); err != nil {
		t.Fatal(err)
	}
	es := b.events()
	if d := cmp.Diff([]uint64{w}, grantedWaiters(es)); d != "" {
		t.Errorf("granted after the head of b failed (-want +got):\n%s", d)
	}
}

func TestDeactivatingLimitUnblocksWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.create(t0, "a", 1)
	b.create(t0, "c", 1)
	b.create(t0, "x", 1)
	b.mustGrant(t0, b.req(1, "a"))
	b.mustGrant(t0, b.req(1, "c"))
	stuck := b.mustWait(t0, b.req(1, "a", "c")) // head of a, blocked on c too
	w1 := b.mustWait(t0, b.req(1, "a", "x"))
	w2 := b.mustWait(t0, b.req(1, "a"))
	b.events()
	off := false
	if _, err := b.m.UpdateLimit(t0, a.ID, LimitPatch{Active: &off}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]uint64{w1, w2}, grantedWaiters(b.events())); d != "" {
		t.Errorf("granted after deactivating a (-want +got):\n%s", d)
	}
	if v := b.view(t0, "c"); len(v.Waiters) != 1 || v.Waiters[0].ID != stuck {
		t.Errorf("c waiters %+v, want only %d", v.Waiters, stuck)
	}
}

func TestDeleteLimitUnblocksWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.create(t0, "a", 1)
	b.create(t0, "b", 2)
	held := b.mustGrant(t0, b.req(1, "a"))
	w1 := b.mustWait(t0, b.req(1, "a"))
	w2 := b.mustWait(t0, b.req(1, "a", "b"))
	w3 := b.mustWait(t0, b.req(1, "b")) // fits b, queued behind w2
	b.events()
	if err := b.m.DeleteLimit(t0, a.ID); err != nil {
		t.Fatal(err)
	}
	es := b.events()
	got := grantedWaiters(es)
	if d := cmp.Diff([]uint64{w1, w2, w3}, got, cmpopts.SortSlices(func(a, b uint64) bool { return a < b })); d != "" {
		t.Fatalf("granted after deleting a (-want +got):\n%s", d)
	}
	for _, e := range es {
		if e.Kind != Granted {
			continue
		}
		for _, h := range e.Lease.Holds {
			if h.LimitID == a.ID {
				t.Errorf("waiter %d granted a hold on the deleted limit", e.WaiterID)
			}
		}
		for _, r := range e.Limits {
			if r.ID == a.ID {
				t.Errorf("waiter %d granted with the deleted limit in Limits", e.WaiterID)
			}
		}
	}
	if v := b.view(t0, "b"); v.Held != 2 {
		t.Errorf("b held %d, want 2", v.Held)
	}
	if !b.m.Release(t0, held.ID) {
		t.Error("the lease on the deleted limit could not be released")
	}
	b.events()
	if d := diffRestored(b.m, b.store, t0); d != "" {
		t.Error(d)
	}
}

func TestHolderValidate(t *testing.T) {
	t.Parallel()
	many := map[string]string{}
	for i := range MaxMetadataEntries + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name      string
		holder    Holder
		wantField string // "" means valid
	}{
		{"none", Holder{}, ""},
		{"process", Holder{Type: "process", ID: "host:1"}, ""},
		{"task run", Holder{Type: "task_run", ID: "x"}, ""},
		{"flow run", Holder{Type: "flow_run", ID: "x"}, ""},
		{"deployment", Holder{Type: "deployment", ID: "x", Metadata: map[string]string{"host": "h"}}, ""},
		{"longest id", Holder{Type: "process", ID: strings.Repeat("a", MaxHolderID)}, ""},
		{"unknown type", Holder{Type: "robot", ID: "x"}, "holder.type"},
		{"no type", Holder{ID: "x"}, "holder.type"},
		{"no id", Holder{Type: "process"}, "holder.id"},
		{"long id", Holder{Type: "process", ID: strings.Repeat("a", MaxHolderID+1)}, "holder.id"},
		{"too many metadata", Holder{Type: "process", ID: "x", Metadata: many}, "holder.metadata"},
		{"empty key", Holder{Type: "process", ID: "x", Metadata: map[string]string{"": "v"}}, "holder.metadata"},
		{"long key", Holder{Type: "process", ID: "x", Metadata: map[string]string{strings.Repeat("k", MaxMetadataKey+1): "v"}}, "holder.metadata"},
		{"long value", Holder{Type: "process", ID: "x", Metadata: map[string]string{"k": strings.Repeat("v", MaxMetadataValue+1)}}, "holder.metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.holder.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("Validate: %v, want *InvalidError for %q", err, tt.wantField)
			}
			// Acquire refuses it too, before anything changes.
			b := setup(t)
			b.create(t0, "db", 1)
			b.events()
			r := b.req(1, "db")
			r.Holder = tt.holder
			_, err = b.m.Acquire(t0, r)
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("Acquire: %v, want *InvalidError for %q", err, tt.wantField)
			}
			if c, e := b.m.Drain(); len(c) != 0 || len(e) != 0 {
				t.Errorf("a refused acquire recorded %d changes and %d events, want none", len(c), len(e))
			}
		})
	}
}

func TestPlainIncrement(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mode                   Mode
		wantNoLease, wantAnony bool
	}{
		{ModeConcurrency, false, true},
		{ModeRateLimit, true, false},
	} {
		noLease, anon := PlainIncrement(tt.mode)
		if noLease != tt.wantNoLease || anon != tt.wantAnony {
			t.Errorf("PlainIncrement(%v) = (%v, %v), want (%v, %v)", tt.mode, noLease, anon, tt.wantNoLease, tt.wantAnony)
		}
	}
}
