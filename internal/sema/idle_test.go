package sema

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func durationPtr(d time.Duration) *time.Duration { return &d }

// idleTemplate creates the template resource:* with the given idle time.
func (b *bundle) idleTemplate(idle time.Duration, decay float64) Limit {
	b.t.Helper()
	return b.createSpec(t0, LimitSpec{Name: "resource:*", Limit: 2, Active: true, SlotDecayPerSecond: decay, Idle: durationPtr(idle)})
}

func (b *bundle) exists(now time.Time, name string) bool {
	b.t.Helper()
	_, err := b.m.LimitByName(now, name, Summary)
	if err != nil && !errors.Is(err, ErrLimitNotFound) {
		b.t.Fatal(err)
	}
	return err == nil
}

// idleDeletions returns the names of the limits that events report deleted
// as idle.
func idleDeletions(es []Event) []string {
	out := []string{}
	for _, e := range es {
		if e.Kind == LimitChanged && e.Deleted && e.Reason == "idle" {
			out = append(out, e.Limits[0].Name)
		}
	}
	return out
}

func TestIdleRemovalAtTheDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Minute, 0)
	l := b.mustGrant(t0, b.req(1, "resource:1"))
	b.m.Release(at(time.Second), l.ID)
	b.events()
	// The entry queued at the first use comes due at 60 s and moves to 61 s.
	b.m.Tick(at(60 * time.Second))
	if d, ok := b.m.NextDeadline(); !ok || !d.Equal(at(61*time.Second)) {
		t.Errorf("NextDeadline %v %v, want the idle deadline %v", d, ok, at(61*time.Second))
	}
	b.m.Tick(at(61*time.Second - time.Nanosecond))
	if !b.exists(at(61*time.Second), "resource:1") {
		t.Fatal("removed before its idle time had passed")
	}
	b.m.Tick(at(61 * time.Second))
	if b.exists(at(61*time.Second), "resource:1") {
		t.Fatal("still there at its idle deadline")
	}
	if got := idleDeletions(b.events()); !cmp.Equal(got, []string{"resource:1"}) {
		t.Errorf("idle deletions %v, want [resource:1]", got)
	}
	if _, ok := b.store.limits[l.Holds[0].LimitID]; ok {
		t.Error("the removal was not a durable DeleteLimit")
	}
	if !b.exists(at(61*time.Second), "resource:*") {
		t.Error("the template itself was removed")
	}
	if _, ok := b.m.NextDeadline(); ok {
		t.Error("a deadline is left after the removal")
	}
}

func TestIdleRemovalWaitsWhileHeldOrWaitedOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Minute, 0)
	r := b.req(2, "resource:1")
	r.LeaseDuration = 24 * time.Hour
	l1 := b.mustGrant(t0, r)
	wr := b.req(1, "resource:1")
	wr.LeaseDuration = 24 * time.Hour
	w := b.mustWait(t0, wr)
	b.m.Tick(at(time.Hour))
	if !b.exists(at(time.Hour), "resource:1") {
		t.Fatal("removed while held and waited on")
	}
	// The holder goes; the waiter gets its slot and holds it.
	b.m.Release(at(time.Hour), l1.ID)
	if got := grantedWaiters(b.events()); !cmp.Equal(got, []uint64{w}) {
		t.Fatalf("granted waiters %v, want [%d]", got, w)
	}
	b.m.Tick(at(3 * time.Hour))
	if !b.exists(at(3*time.Hour), "resource:1") {
		t.Fatal("removed while held")
	}
}

func TestIdleRemovalNotWhileOnlyWaitedOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Minute, 0)
	b.create(t0, "other", 1)
	r := b.req(1, "other")
	r.LeaseDuration = 24 * time.Hour
	other := b.mustGrant(t0, r)
	// Waits on resource:1 only because "other" is full: resource:1 has no
	// holder, only a waiter.
	w := b.mustWait(t0, b.req(1, "other", "resource:1"))
	b.m.Tick(at(time.Hour))
	if !b.exists(at(time.Hour), "resource:1") {
		t.Fatal("removed while waited on")
	}
	if !b.m.CancelWaiter(at(time.Hour), w) {
		t.Fatal("waiter was not waiting")
	}
	b.m.Release(at(time.Hour), other.ID)
	b.m.Tick(at(time.Hour + time.Minute - time.Nanosecond))
	if !b.exists(at(time.Hour), "resource:1") {
		t.Fatal("removed less than its idle time after the waiter left")
	}
	b.m.Tick(at(time.Hour + time.Minute))
	if b.exists(at(time.Hour+time.Minute), "resource:1") {
		t.Fatal("still there one idle time after the waiter left")
	}
}

func TestIdleRemovalTimerResetByUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Minute, 0)
	for i := range 5 { // a use every 50 s, each within the idle time
		now := at(time.Duration(i) * 50 * time.Second)
		b.m.Tick(now)
		l := b.mustGrant(now, b.req(1, "resource:1"))
		b.m.Release(now, l.ID)
	}
	last := at(200 * time.Second)
	b.m.Tick(last.Add(time.Minute - time.Nanosecond))
	if !b.exists(last, "resource:1") {
		t.Fatal("removed within the idle time of its last use")
	}
	b.m.Tick(last.Add(time.Minute))
	if b.exists(last, "resource:1") {
		t.Fatal("still there one idle time after its last use")
	}
	if got := idleDeletions(b.events()); len(got) != 1 {
		t.Errorf("idle deletions %v, want one", got)
	}
}

func TestIdleRemovalWaitsForTheLevelToDecay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Second, 0.01) // 2 slots decay in 200 s
	r := b.req(2, "resource:1")
	r.Mode, r.NoLease = ModeRateLimit, true
	b.mustGrant(t0, r)
	b.m.Tick(at(time.Minute))
	if !b.exists(at(time.Minute), "resource:1") {
		t.Fatal("removed while its level had not decayed")
	}
	if d, ok := b.m.NextDeadline(); !ok || d.After(at(200*time.Second)) {
		t.Errorf("NextDeadline %v %v, want at the end of the decay %v", d, ok, at(200*time.Second))
	}
	b.m.Tick(at(200 * time.Second))
	if b.exists(at(200*time.Second), "resource:1") {
		t.Fatal("still there once its level decayed")
	}
}

func TestIdleZeroKeepsLimitsAndOnlyTemplatesHaveIdle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(0, 0)
	l := b.mustGrant(t0, b.req(1, "resource:1"))
	b.m.Release(t0, l.ID)
	if _, ok := b.m.NextDeadline(); ok {
		t.Error("a deadline for a template with idle 0")
	}
	b.m.Tick(at(1000 * time.Hour))
	if !b.exists(at(time.Hour), "resource:1") {
		t.Error("idle 0 removed a limit")
	}
	_, err := b.m.CreateLimit(t0, limitID(99), LimitSpec{Name: "plain", Limit: 1, Idle: durationPtr(time.Second)})
	var ie *InvalidError
	if !errors.As(err, &ie) || ie.Field != "idle_seconds" {
		t.Errorf("idle on a non-template: %v, want invalid idle_seconds", err)
	}
	v := b.view(t0, "resource:1")
	if _, err := b.m.UpdateLimit(t0, v.ID, LimitPatch{Idle: durationPtr(time.Second)}); !errors.As(err, &ie) || ie.Field != "idle_seconds" {
		t.Errorf("PATCH idle on a created limit: %v, want invalid idle_seconds", err)
	}
	if tmpl := b.createSpec(t0, LimitSpec{Name: "x:*", Limit: 1}); tmpl.Idle != DefaultTemplateIdle {
		t.Errorf("template idle %v, want the default %v", tmpl.Idle, DefaultTemplateIdle)
	}
}

func TestIdleRemovalSurvivesRestore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.idleTemplate(time.Minute, 0)
	l := b.mustGrant(t0, b.req(1, "resource:1"))
	b.m.Release(t0, l.ID)
	b.events()
	if v := b.store.limits[l.Holds[0].LimitID]; !v.FromTemplate || v.Idle != time.Minute {
		t.Fatalf("stored limit %+v, want FromTemplate with the template's idle", v)
	}
	r := b.store.restore(DefaultConfig(), at(time.Second))
	r.Tick(at(time.Minute - time.Nanosecond))
	if _, err := r.LimitByName(at(time.Second), "resource:1", Summary); err != nil {
		t.Fatalf("removed early after a restore: %v", err)
	}
	r.Tick(at(time.Minute))
	if _, err := r.LimitByName(at(time.Minute), "resource:1", Summary); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("after its idle time since restore: %v, want removed", err)
	}
}

func TestDeleteMatching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "resource:*", 1)
	b.create(t0, "resource", 1)
	held := b.mustGrant(t0, b.req(1, "resource:1", "resource"))
	b.mustGrant(t0, b.req(1, "resource:2"))
	b.create(t0, "other:1", 1)
	b.events()

	for _, d := range []DeleteMatch{{Pattern: ""}, {Pattern: "*"}, {Pattern: "**"}, {Pattern: "a/b"}} {
		var ie *InvalidError
		if _, err := b.m.DeleteMatching(t0, d); !errors.As(err, &ie) || ie.Field != "pattern" {
			t.Errorf("DeleteMatching(%+v): %v, want invalid pattern", d, err)
		}
	}
	if n, err := b.m.DeleteMatching(t0, DeleteMatch{Pattern: "resource:*", DryRun: true}); err != nil || n != 2 {
		t.Errorf("dry run: %d, %v, want 2", n, err)
	}
	if n, err := b.m.DeleteMatching(t0, DeleteMatch{Pattern: "resource:*"}); err != nil || n != 2 {
		t.Errorf("delete: %d, %v, want 2", n, err)
	}
	for name, want := range map[string]bool{"resource:*": true, "resource": true, "other:1": true, "resource:1": false, "resource:2": false} {
		if got := b.exists(t0, name); got != want {
			t.Errorf("%s exists %v, want %v", name, got, want)
		}
	}
	// The lease that held resource:1 keeps its other hold.
	if v := b.view(t0, "resource"); v.Held != 1 || v.Holders[0].LeaseID != held.ID {
		t.Errorf("resource after the delete: held %d, want 1 by the lease", v.Held)
	}
	deleted := 0
	for _, e := range b.events() {
		if e.Kind == LimitChanged && e.Deleted {
			deleted++
		}
	}
	if deleted != 2 {
		t.Errorf("%d deletion events, want 2", deleted)
	}
	if n, _ := b.m.DeleteMatching(t0, DeleteMatch{Pattern: "resource*", Templates: true}); n != 2 {
		t.Errorf("with templates: %d, want 2 (resource and resource:*)", n)
	}
	if n, _ := b.m.DeleteMatching(t0, DeleteMatch{All: true}); n != 1 {
		t.Errorf("all: %d, want 1 (other:1)", n)
	}
}
