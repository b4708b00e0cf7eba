package sema

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestViewFull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 3)
	holder := Holder{Type: "task_run", ID: "r1", Metadata: map[string]string{"k": "v"}}
	r1 := b.req(1, "db")
	r1.Holder = holder
	l1 := b.mustGrant(at(2*time.Second), r1)
	l2 := b.mustGrant(at(time.Second), b.req(2, "db"))
	w := b.req(2, "db")
	w.Holder = Holder{Type: "flow_run", ID: "f1"}
	w1 := b.mustWait(at(3*time.Second), w)
	w2 := b.mustWait(at(4*time.Second), b.req(1, "db"))
	v := b.view(at(5*time.Second), "db")
	wantHolders := []HolderView{
		{LeaseID: l2.ID, Slots: 2, Since: at(time.Second), Expires: l2.Expires, FencingToken: l2.Fence},
		{LeaseID: l1.ID, Holder: holder, Slots: 1, Since: at(2 * time.Second), Expires: l1.Expires, FencingToken: l1.Fence},
	}
	if d := cmp.Diff(wantHolders, v.Holders); d != "" {
		t.Errorf("Holders (-want +got):\n%s", d)
	}
	wantWaiters := []WaiterView{
		{ID: w1, Position: 1, Slots: 2, Holder: w.Holder, Since: at(3 * time.Second)},
		{ID: w2, Position: 2, Slots: 1, Since: at(4 * time.Second)},
	}
	if d := cmp.Diff(wantWaiters, v.Waiters); d != "" {
		t.Errorf("Waiters (-want +got):\n%s", d)
	}
	if v.Waiting != 2 || v.Held != 3 || v.ActiveSlots != 3 || v.FencingToken != l2.Fence {
		t.Errorf("Waiting %d Held %d ActiveSlots %d FencingToken %d, want 2 3 3 %d", v.Waiting, v.Held, v.ActiveSlots, v.FencingToken, l2.Fence)
	}
	s, _ := b.m.LimitByName(at(5*time.Second), "db", Summary)
	if s.Holders != nil || s.Waiters != nil || s.Waiting != 2 {
		t.Errorf("Summary view has holders %v waiters %v waiting %d, want counts only", s.Holders, s.Waiters, s.Waiting)
	}
	if l, ws := b.m.Counts(); l != 2 || ws != 2 {
		t.Errorf("Counts = %d %d, want 2 2", l, ws)
	}
}

func TestLimitsNeverPanics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "a", 1)
	b.create(t0, "b", 1)
	tests := []struct {
		name      string
		offset, n int
		want      int
	}{
		{"negative offset", -5, 10, 2},
		{"negative count", 0, -1, 0},
		{"offset past the end", 10, 10, 0},
	}
	for _, tt := range tests {
		if got := len(b.m.Limits(t0, "", tt.offset, tt.n, Summary)); got != tt.want {
			t.Errorf("%s: %d limits, want %d", tt.name, got, tt.want)
		}
	}
}

func TestNextDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, ok := b.m.NextDeadline(); ok {
		t.Error("NextDeadline of an empty machine: ok, want none")
	}
	b.createSpec(t0, LimitSpec{Name: "api", Limit: 1, Active: true, SlotDecayPerSecond: 0.1})
	b.create(t0, "db", 1)
	l := b.mustGrant(t0, b.req(1, "db")) // expires at 60 s
	b.mustGrant(t0, rateReq(1, "api"))
	if d, ok := b.m.NextDeadline(); !ok || !d.Equal(l.Expires) {
		t.Errorf("NextDeadline = %v %v, want the lease expiry", d.Sub(t0), ok)
	}
	b.mustWait(t0, rateReq(1, "api")) // fits after 10 s
	d, ok := b.m.NextDeadline()
	if !ok || d.Before(at(10*time.Second)) || d.After(at(10*time.Second+time.Millisecond)) {
		t.Errorf("NextDeadline = %v %v, want about 10 s", d.Sub(t0), ok)
	}
}
