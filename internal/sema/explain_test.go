package sema

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHeadSentence checks the one sentence that says why the head of a
// line waits, in each of its cases.
func TestHeadSentence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 2)
	b.create(t0, "gpu", 1)
	b.createSpec(t0, LimitSpec{Name: "api", Limit: 2, Active: true, SlotDecayPerSecond: 0.5})

	// Nobody waits: no explanation.
	if h := b.view(t0, "db").Head; h != nil {
		t.Errorf("db with nobody waiting: got head %+v, want nil", h)
	}

	first := b.req(1, "db")
	first.Holder = Holder{Type: "process", ID: "etl-7"}
	first.LeaseDuration = 41 * time.Second
	l1 := b.mustGrant(t0, first)
	b.mustGrant(at(time.Second), b.req(1, "db"))
	w := b.req(2, "db")
	b.mustWait(at(2*time.Second), w)
	// A second waiter needs gpu too: it stands behind the first on db.
	b.mustWait(at(2*time.Second), b.req(1, "gpu", "db"))

	got := map[string]string{
		"db":  b.view(t0, "db").Head.Sentence(),
		"gpu": b.view(t0, "gpu").Head.Sentence(),
	}
	want := map[string]string{
		"db": "needs 2 slots of `db`, 0 free; `db` frees next when lease " + ShortID(l1.ID) +
			" held by process etl-7 is released or expires in 41s",
		"gpu": "waits behind 1 earlier request in the line of `db`, which it needs too",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sentences (-want +got):\n%s", diff)
	}

	// A rate limit: decay makes the room.
	r := b.req(2, "api")
	r.Mode, r.NoLease = ModeRateLimit, true
	b.mustGrant(t0, r)
	b.mustWait(t0, b.req(1, "api"))
	if got, want := b.view(t0, "api").Head.Sentence(), "needs 1 slot of `api`, 0 free; decay makes room in 2s"; got != want {
		t.Errorf("rate limit: got %q, want %q", got, want)
	}
}

// TestWaiterViewOthersAndDeadline checks that a waiter shows the other
// limits it waits for and its deadline.
func TestWaiterViewOthersAndDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "a", 1)
	b.create(t0, "b", 1)
	b.mustGrant(t0, b.req(1, "a"))
	r := b.req(1, "a", "b")
	r.Deadline = at(30 * time.Second)
	b.mustWait(t0, r)
	v := b.view(at(time.Second), "a")
	if len(v.Waiters) != 1 {
		t.Fatalf("waiters: got %d, want 1", len(v.Waiters))
	}
	if diff := cmp.Diff([]string{"b"}, v.Waiters[0].Others); diff != "" {
		t.Errorf("others (-want +got):\n%s", diff)
	}
	if !v.Waiters[0].Deadline.Equal(at(30 * time.Second)) {
		t.Errorf("deadline: got %v, want %v", v.Waiters[0].Deadline, at(30*time.Second))
	}
	if !v.HeadSince.Equal(t0) {
		t.Errorf("HeadSince: got %v, want %v", v.HeadSince, t0)
	}
}

// TestFindLimits checks the UI's search by kind and substring, paged.
func TestFindLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, n := range []string{"db", "db-replica", "tag:db", "label:gpu", "tenant:*", "web"} {
		b.create(t0, n, 1)
	}
	names := func(vs []LimitView) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return out
	}
	for _, tc := range []struct {
		kind      LimitKind
		q         string
		off, n    int
		want      []string
		wantTotal int
	}{
		{AnyKind, "db", 0, 10, []string{"db", "db-replica", "tag:db"}, 3},
		{AnyKind, "db", 1, 1, []string{"db-replica"}, 3},
		{GlobalKind, "", 0, 10, []string{"db", "db-replica", "web"}, 3},
		{TagKind, "", 0, 10, []string{"tag:db"}, 1},
		{LabelKind, "", 0, 10, []string{"label:gpu"}, 1},
		{TemplateKind, "", 0, 10, []string{"tenant:*"}, 1},
	} {
		got, total := b.m.FindLimits(t0, tc.kind, tc.q, tc.off, tc.n)
		if diff := cmp.Diff(tc.want, names(got)); diff != "" || total != tc.wantTotal {
			t.Errorf("FindLimits(%v, %q, %d, %d): total %d (want %d), names (-want +got):\n%s", tc.kind, tc.q, tc.off, tc.n, total, tc.wantTotal, diff)
		}
	}
}

// TestActivity checks the bounded history: counts by minute over the last
// hour, the last events newest first, and that the least recently touched
// limit is forgotten first.
func TestActivity(t *testing.T) {
	t.Parallel()
	a := NewActivity(2)
	now := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	a.Record("db", ActivityEvent{At: now.Add(-90 * time.Minute), Kind: ActDenied}, 1, 0) // older than the hour
	a.Record("db", ActivityEvent{At: now.Add(-5 * time.Minute), Kind: ActGranted, Slots: 1}, 1, 0)
	a.Record("db", ActivityEvent{At: now.Add(-5 * time.Minute), Kind: ActDenied}, 1, 0)
	a.Record("db", ActivityEvent{At: now.Add(-time.Minute), Kind: ActTimedOut}, 1, 2)
	a.Record("db", ActivityEvent{At: now, Kind: ActReleased, Slots: 1}, 0, 2)

	if d, to := a.Counts(now, "db"); d != 1 || to != 1 {
		t.Errorf("Counts: got denied %d, timed out %d; want 1, 1", d, to)
	}
	v := a.View(now, "db")
	if len(v.Minutes) != HistoryMinutes {
		t.Fatalf("minutes: got %d, want %d", len(v.Minutes), HistoryMinutes)
	}
	last := v.Minutes[HistoryMinutes-1]
	if last.Released != 1 || last.Held != 0 || last.Waiting != 2 {
		t.Errorf("last minute: got %+v, want 1 released, 0 held, 2 waiting", last)
	}
	// Minutes without events carry the last held and waiting forward.
	if m := v.Minutes[HistoryMinutes-3]; m.Held != 1 || m.Waiting != 0 {
		t.Errorf("a quiet minute after the grant: got held %d waiting %d, want 1 and 0", m.Held, m.Waiting)
	}
	kinds := []ActivityKind{}
	for _, e := range v.Events {
		kinds = append(kinds, e.Kind)
	}
	if diff := cmp.Diff([]ActivityKind{ActReleased, ActTimedOut, ActDenied, ActGranted, ActDenied}, kinds); diff != "" {
		t.Errorf("events, newest first (-want +got):\n%s", diff)
	}

	// Two limits at most: touching a third forgets the least recent.
	a.Record("web", ActivityEvent{At: now, Kind: ActGranted}, 1, 0)
	a.Watch("db")
	a.Record("gpu", ActivityEvent{At: now, Kind: ActGranted}, 1, 0)
	if v := a.View(now, "web"); v.Minutes != nil {
		t.Errorf("web should have been forgotten, got %d minutes", len(v.Minutes))
	}
	if v := a.View(now, "db"); v.Minutes == nil {
		t.Errorf("db, watched last, was forgotten")
	}
	// The ring of events keeps the last EventMemory.
	for i := range EventMemory + 7 {
		a.Record("gpu", ActivityEvent{At: now, Kind: ActGranted, Slots: i}, 1, 0)
	}
	ev := a.View(now, "gpu").Events
	if len(ev) != EventMemory || ev[0].Slots != EventMemory+6 {
		t.Errorf("events: got %d, newest slots %d; want %d, %d", len(ev), ev[0].Slots, EventMemory, EventMemory+6)
	}
	a.Forget("gpu")
	if v := a.View(now, "gpu"); v.Minutes != nil {
		t.Errorf("gpu forgotten: still has a history")
	}
}

// BenchmarkFindLimits100k searches 100,000 limits by name, as the web
// UI's limits page does on every load (it must stay fast at that size).
func BenchmarkFindLimits100k(b *testing.B) {
	m := New(DefaultConfig())
	for i := range 100_000 {
		if _, err := m.CreateLimit(t0, limitID(uint64(i+1)), LimitSpec{Name: fmt.Sprintf("resource:%06d", i), Limit: 1, Active: true}); err != nil {
			b.Fatal(err)
		}
	}
	m.Drain()
	b.ReportAllocs()
	for b.Loop() {
		if _, total := m.FindLimits(t0, AnyKind, "004217", 0, 50); total != 1 {
			b.Fatalf("total %d, want 1", total)
		}
	}
}
