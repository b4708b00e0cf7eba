package sema

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func runID(n uint64) uuid.UUID { return testID('r', n) }

// newRun creates a run of kind with tags under parent (zero: none), with a
// one-minute lease, and fails the test on error.
func (b *bundle) newRun(now time.Time, kind RunKind, parent uuid.UUID, tags ...string) Run {
	b.t.Helper()
	b.next++
	r, err := b.m.CreateRun(now, RunSpec{ID: runID(b.next), Kind: kind, Name: fmt.Sprintf("run-%d", b.next),
		Tags: tags, ParentID: parent, LeaseDuration: time.Minute})
	if err != nil {
		b.t.Fatalf("CreateRun(%v): %v", tags, err)
	}
	return r
}

// task creates a task run with tags.
func (b *bundle) task(now time.Time, parent uuid.UUID, tags ...string) Run {
	b.t.Helper()
	return b.newRun(now, KindTask, parent, tags...)
}

// set moves a run to state and fails the test on error.
func (b *bundle) set(now time.Time, id uuid.UUID, s RunState) Run {
	b.t.Helper()
	r, err := b.m.SetRunState(now, id, s, "")
	if err != nil {
		b.t.Fatalf("SetRunState(%s, %v): %v", id, s, err)
	}
	return r
}

// start asks a run to run and fails the test unless it ends in want.
func (b *bundle) start(now time.Time, id uuid.UUID, want RunState) Run {
	b.t.Helper()
	r := b.set(now, id, Running)
	if r.State != want {
		b.t.Fatalf("run %s: state %v after asking to run, want %v (history %+v)", id, r.State, want, r.History)
	}
	return r
}

// state returns a run's state now.
func (b *bundle) state(id uuid.UUID) RunState {
	b.t.Helper()
	r, err := b.m.Run(id)
	if err != nil {
		b.t.Fatalf("Run(%s): %v", id, err)
	}
	return r.State
}

func states(h []StateEntry) []RunState {
	out := []RunState{}
	for _, e := range h {
		out = append(out, e.State)
	}
	return out
}

func TestRunLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 2)
	r := b.task(t0, uuid.Nil, "db", "untagged-limit", "db")
	if d := cmp.Diff([]string{"db", "untagged-limit"}, r.Tags); d != "" {
		t.Errorf("tags are deduplicated (-want +got):\n%s", d)
	}
	running := b.start(at(time.Second), r.ID, Running)
	lease, refs, err := b.m.Lease(at(time.Second), running.LeaseID)
	if err != nil {
		t.Fatalf("the Running run's lease: %v", err)
	}
	if d := cmp.Diff(Holder{Type: "task_run", ID: r.ID.String()}, lease.Holder); d != "" {
		t.Errorf("lease holder (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"tag:db"}, names(refs)); d != "" {
		t.Errorf("lease limits (-want +got):\n%s", d)
	}
	if running.Fence != lease.Fence || running.Fence == 0 {
		t.Errorf("run fence %d, lease fence %d", running.Fence, lease.Fence)
	}
	done := b.set(at(3*time.Second), r.ID, Completed)
	if d := cmp.Diff([]RunState{Pending, Running, Completed}, states(done.History)); d != "" {
		t.Errorf("history (-want +got):\n%s", d)
	}
	if !done.History[2].At.Equal(at(3*time.Second)) || !done.Updated.Equal(at(3*time.Second)) {
		t.Errorf("completed at %v, updated %v", done.History[2].At, done.Updated)
	}
	if v := b.view(at(3*time.Second), "tag:db"); v.Held != 0 {
		t.Errorf("tag:db held %d after the run completed, want 0", v.Held)
	}
	b.events()
	if _, ok := b.store.leases[running.LeaseID]; ok {
		t.Error("the completed run's lease is still stored")
	}
	if d := cmp.Diff(done, b.store.runs[r.ID]); d != "" {
		t.Errorf("stored run (-want +got):\n%s", d)
	}
}

// TestRunsNeverExceedTagLimit is the first scenario: ten task runs
// tagged database under a limit of 3 never have more than 3 Running, as
// their recorded state histories show, and all complete in the order they
// asked.
func TestRunsNeverExceedTagLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:database", 3)
	var ids []uuid.UUID
	for i := range 10 {
		r := b.task(t0, uuid.Nil, "database")
		want := Running
		if i >= 3 {
			want = AwaitingConcurrencySlot
		}
		b.start(at(time.Duration(i)*time.Millisecond), r.ID, want)
		ids = append(ids, r.ID)
	}
	// Complete the oldest Running run each second.
	var order []uuid.UUID
	for step := 1; len(order) < 10; step++ {
		now := at(time.Duration(step) * time.Second)
		for _, id := range ids {
			if b.state(id) == Running {
				b.set(now, id, Completed)
				order = append(order, id)
				break
			}
		}
	}
	if d := cmp.Diff(ids, order); d != "" {
		t.Errorf("runs completed out of the order they asked (-want +got):\n%s", d)
	}
	var hs [][]StateEntry
	for _, id := range ids {
		r, _ := b.m.Run(id)
		hs = append(hs, r.History)
	}
	if n := maxRunning(hs); n != 3 {
		t.Errorf("at most %d runs were Running at once, want 3", n)
	}
}

// maxRunning computes, from state histories alone, the most runs that were
// Running at the same moment.
func maxRunning(hs [][]StateEntry) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, h := range hs {
		for i, e := range h {
			if e.State == Running {
				es = append(es, edge{e.At, 1})
				if i+1 < len(h) {
					es = append(es, edge{h[i+1].At, -1})
				}
			}
		}
	}
	// At equal times, ends come before starts: a slot handed on in one step.
	slices.SortFunc(es, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d
	})
	n, most := 0, 0
	for _, e := range es {
		n += e.d
		most = max(most, n)
	}
	return most
}

func TestRunNeedsRoomOnEveryTag(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:database", 1)
	b.create(t0, "tag:analytics", 1)
	db := b.task(t0, uuid.Nil, "database")
	an := b.task(t0, uuid.Nil, "analytics")
	both := b.task(t0, uuid.Nil, "database", "analytics")
	b.start(t0, db.ID, Running)
	b.start(t0, an.ID, Running)
	w := b.start(t0, both.ID, AwaitingConcurrencySlot)
	if msg := w.History[len(w.History)-1].Message; msg != `waiting for a slot of tags "database", "analytics"` {
		t.Errorf("waiting message %q", msg)
	}
	b.set(at(time.Second), db.ID, Completed)
	if s := b.state(both.ID); s != AwaitingConcurrencySlot {
		t.Fatalf("with analytics still held: %v, want AwaitingConcurrencySlot", s)
	}
	if v := b.view(at(time.Second), "tag:database"); v.Held != 0 {
		t.Errorf("database held %d while the run waits for analytics, want 0 (all or nothing)", v.Held)
	}
	b.set(at(2*time.Second), an.ID, Completed)
	if s := b.state(both.ID); s != Running {
		t.Fatalf("with both free: %v, want Running", s)
	}
	for _, n := range []string{"tag:database", "tag:analytics"} {
		if v := b.view(at(2*time.Second), n); v.Held != 1 {
			t.Errorf("%s held %d, want 1", n, v.Held)
		}
	}
}

// TestNestedRunSharesAncestorSlot is the self-deadlock Prefect users hit: a
// parent task and a child task under the same tag with a limit of 1.
func TestNestedRunSharesAncestorSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:x", 1)
	b.create(t0, "tag:y", 1)
	flow := b.newRun(t0, KindFlow, uuid.Nil, "x") // labels are other limits
	b.start(t0, flow.ID, Running)
	parent := b.task(t0, flow.ID, "x")
	b.start(t0, parent.ID, Running)
	child := b.task(t0, parent.ID, "x")
	c := b.start(at(time.Second), child.ID, Running)
	if msg := c.History[len(c.History)-1].Message; !strings.Contains(msg, `tag "x" of run `+parent.ID.String()) {
		t.Errorf("Running message %q does not say whose slot it shares", msg)
	}
	grandchild := b.task(t0, child.ID, "x")
	b.start(at(time.Second), grandchild.ID, Running)
	// A child with another tag waits for that one only.
	other := b.task(t0, uuid.Nil, "y")
	b.start(t0, other.ID, Running)
	mixed := b.task(t0, parent.ID, "x", "y")
	b.start(at(time.Second), mixed.ID, AwaitingConcurrencySlot)
	if v := b.view(at(time.Second), "tag:x"); v.Held != 1 || v.Waiting != 0 {
		t.Errorf("tag:x held %d with %d waiting, want 1 and 0: descendants share the parent's slot", v.Held, v.Waiting)
	}
	// Another flow's task with the tag waits for the parent.
	stranger := b.task(t0, uuid.Nil, "x")
	b.start(at(time.Second), stranger.ID, AwaitingConcurrencySlot)
	b.set(at(2*time.Second), grandchild.ID, Completed)
	b.set(at(2*time.Second), child.ID, Completed)
	if s := b.state(stranger.ID); s != AwaitingConcurrencySlot {
		t.Fatalf("stranger %v after the children completed, want still waiting for the parent", s)
	}
	b.set(at(3*time.Second), other.ID, Completed)
	if s := b.state(mixed.ID); s != Running {
		t.Fatalf("mixed child %v once y is free, want Running", s)
	}
	b.set(at(3*time.Second), mixed.ID, Completed)
	b.set(at(4*time.Second), parent.ID, Completed)
	if s := b.state(stranger.ID); s != Running {
		t.Fatalf("stranger %v after the parent completed, want Running", s)
	}
}

func TestNestedRunDoesNotShareAWaitingAncestor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:x", 1)
	holder := b.task(t0, uuid.Nil, "x")
	b.start(t0, holder.ID, Running)
	parent := b.task(t0, uuid.Nil, "x")
	b.start(t0, parent.ID, AwaitingConcurrencySlot)
	child := b.task(t0, parent.ID, "x")
	b.start(t0, child.ID, AwaitingConcurrencySlot)
	b.set(at(time.Second), holder.ID, Completed)
	if p, c := b.state(parent.ID), b.state(child.ID); p != Running || c != AwaitingConcurrencySlot {
		t.Errorf("parent %v child %v, want Running and AwaitingConcurrencySlot", p, c)
	}
}

func TestRunZeroLimitFailsAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind RunKind
		want string
	}{
		{KindTask, `The concurrency limit on tag "zero" is 0 and will deadlock if the task tries to run again.`},
		{KindFlow, `The concurrency limit on label "zero" is 0 and will deadlock if the flow run tries to run again.`},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.create(t0, tt.kind.LimitPrefix()+"zero", 0)
			b.create(t0, tt.kind.LimitPrefix()+"ok", 5)
			r := b.newRun(t0, tt.kind, uuid.Nil, "ok", "zero")
			got := b.start(t0, r.ID, Failed)
			if msg := got.History[len(got.History)-1].Message; msg != tt.want {
				t.Errorf("message %q, want %q", msg, tt.want)
			}
			if l, w := b.m.Counts(); l != 0 || w != 0 {
				t.Errorf("Counts = %d leases %d waiters, want none", l, w)
			}
		})
	}
}

func TestRunWaiterFailsWhenLimitDropsToZero(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.create(t0, "tag:x", 1)
	holder := b.task(t0, uuid.Nil, "x")
	b.start(t0, holder.ID, Running)
	w := b.task(t0, uuid.Nil, "x")
	b.start(t0, w.ID, AwaitingConcurrencySlot)
	zero := 0
	if _, err := b.m.UpdateLimit(at(time.Second), l.ID, LimitPatch{Limit: &zero}); err != nil {
		t.Fatal(err)
	}
	r, _ := b.m.Run(w.ID)
	if r.State != Failed || !strings.Contains(r.History[len(r.History)-1].Message, `tag "x" is 0`) {
		t.Errorf("waiting run after its limit fell to 0: %v %q, want Failed naming the tag", r.State, r.History[len(r.History)-1].Message)
	}
	if _, w := b.m.Counts(); w != 0 {
		t.Errorf("%d waiters left", w)
	}
}

func TestRunCancelNew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "label:gpu", 1)
	first := b.newRun(t0, KindFlow, uuid.Nil, "gpu")
	b.start(t0, first.ID, Running)
	b.next++
	r, err := b.m.CreateRun(t0, RunSpec{ID: runID(b.next), Kind: KindFlow, Tags: []string{"gpu"}, CollisionStrategy: CancelNew, LeaseDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got := b.start(t0, r.ID, Cancelled)
	if msg := got.History[len(got.History)-1].Message; msg != `collision strategy cancel_new: the concurrency limit on label "gpu" is full` {
		t.Errorf("message %q", msg)
	}
	if _, w := b.m.Counts(); w != 0 {
		t.Errorf("%d waiters, want none", w)
	}
	// With room it runs.
	b.set(at(time.Second), first.ID, Completed)
	b.next++
	r2, _ := b.m.CreateRun(t0, RunSpec{ID: runID(b.next), Kind: KindFlow, Tags: []string{"gpu"}, CollisionStrategy: CancelNew, LeaseDuration: time.Minute})
	b.start(at(time.Second), r2.ID, Running)
}

func TestRunLeaseExpiryCrashesAndHandsOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	b.next++
	dead, err := b.m.CreateRun(t0, RunSpec{ID: runID(b.next), Kind: KindTask, Tags: []string{"db"}, LeaseDuration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.start(t0, dead.ID, Running)
	next := b.task(t0, uuid.Nil, "db")
	b.start(t0, next.ID, AwaitingConcurrencySlot)
	// A heartbeat keeps it alive.
	exp, err := b.m.HeartbeatRun(at(time.Second), dead.ID)
	if err != nil || !exp.Equal(at(3*time.Second)) {
		t.Fatalf("HeartbeatRun = %v, %v; want expiry at 3s", exp.Sub(t0), err)
	}
	b.m.Tick(at(2 * time.Second))
	if s := b.state(dead.ID); s != Running {
		t.Fatalf("after a heartbeat: %v at the old expiry, want Running", s)
	}
	b.events()
	if d, ok := b.m.NextDeadline(); !ok || !d.Equal(at(3*time.Second)) {
		t.Errorf("NextDeadline %v %v, want 3s", d.Sub(t0), ok)
	}
	b.m.Tick(at(3 * time.Second))
	r, _ := b.m.Run(dead.ID)
	if r.State != Crashed || r.History[len(r.History)-1].Message != "lease expired: no heartbeat for 2s" {
		t.Errorf("after its lease expired: %v %q, want Crashed", r.State, r.History[len(r.History)-1].Message)
	}
	if s := b.state(next.ID); s != Running {
		t.Errorf("next run %v, want Running in the same step", s)
	}
	kinds := eventKinds(b.events())
	if d := cmp.Diff([]EventKind{Expired, RunChanged, Granted, RunChanged}, kinds); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if _, err := b.m.HeartbeatRun(at(3*time.Second), dead.ID); !errors.Is(err, ErrRunFinished) {
		t.Errorf("heartbeat of the crashed run: %v, want ErrRunFinished", err)
	}
	// Completing after the crash is refused with the reason.
	_, err = b.m.SetRunState(at(4*time.Second), dead.ID, Completed, "")
	var te *TransitionError
	if !errors.As(err, &te) || te.From != Crashed || !strings.Contains(te.Detail, "no heartbeat") {
		t.Errorf("complete a crashed run: %v, want a *TransitionError from Crashed", err)
	}
}

func TestRunCompletedAtItsExpiryIsCrashed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	r := b.task(t0, uuid.Nil, "db")
	b.start(t0, r.ID, Running)
	// The reaper has not run yet, but the lease's time is up.
	_, err := b.m.SetRunState(at(time.Minute), r.ID, Completed, "")
	var te *TransitionError
	if !errors.As(err, &te) || te.From != Crashed {
		t.Fatalf("SetRunState at expiry: %v, want a *TransitionError from Crashed", err)
	}
}

func TestRunHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	pending := b.task(t0, uuid.Nil, "db")
	if exp, err := b.m.HeartbeatRun(t0, pending.ID); err != nil || !exp.IsZero() {
		t.Errorf("heartbeat of a pending run: %v %v, want zero time and no error", exp, err)
	}
	if _, err := b.m.HeartbeatRun(t0, runID(999)); !errors.Is(err, ErrRunNotFound) {
		t.Errorf("heartbeat of an unknown run: %v", err)
	}
	b.set(t0, pending.ID, Cancelled)
	if _, err := b.m.HeartbeatRun(t0, pending.ID); !errors.Is(err, ErrRunFinished) {
		t.Errorf("heartbeat of a cancelled run: %v, want ErrRunFinished", err)
	}
}

func TestRunTransitions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		from    []RunState // the states to drive the run through first
		to      RunState
		want    RunState
		wantErr string // "transition", "invalid" or ""
	}{
		{"pending to running", nil, Running, Running, ""},
		{"pending to cancelled", nil, Cancelled, Cancelled, ""},
		{"pending to failed", nil, Failed, Failed, ""},
		{"running again changes nothing", []RunState{Running}, Running, Running, ""},
		{"running to crashed", []RunState{Running}, Crashed, Crashed, ""},
		{"completed again changes nothing", []RunState{Running, Completed}, Completed, Completed, ""},
		{"completed to failed", []RunState{Running, Completed}, Failed, Completed, "transition"},
		{"cancelled to running", []RunState{Cancelled}, Running, Cancelled, "transition"},
		{"to pending", nil, Pending, Pending, "invalid"},
		{"to awaiting", nil, AwaitingConcurrencySlot, Pending, "invalid"},
		{"to an unknown state", nil, RunState(99), Pending, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := b.task(t0, uuid.Nil)
			for _, s := range tt.from {
				b.set(t0, r.ID, s)
			}
			n := len(b.runHistory(r.ID))
			_, err := b.m.SetRunState(at(time.Second), r.ID, tt.to, "")
			var te *TransitionError
			var ie *InvalidError
			switch tt.wantErr {
			case "transition":
				if !errors.As(err, &te) {
					t.Errorf("got %v, want a *TransitionError", err)
				}
			case "invalid":
				if !errors.As(err, &ie) || ie.Field != "state" {
					t.Errorf("got %v, want an *InvalidError on state", err)
				}
			default:
				if err != nil {
					t.Errorf("got %v", err)
				}
			}
			if s := b.state(r.ID); s != tt.want {
				t.Errorf("state %v, want %v", s, tt.want)
			}
			if got := len(b.runHistory(r.ID)); tt.wantErr != "" && got != n {
				t.Errorf("history grew from %d to %d entries on a refused change", n, got)
			}
		})
	}
	t.Run("unknown run", func(t *testing.T) {
		t.Parallel()
		m := New(DefaultConfig())
		if _, err := m.SetRunState(t0, runID(1), Running, ""); !errors.Is(err, ErrRunNotFound) {
			t.Errorf("got %v, want ErrRunNotFound", err)
		}
	})
}

func (b *bundle) runHistory(id uuid.UUID) []StateEntry {
	r, _ := b.m.Run(id)
	return r.History
}

func TestCancelWaitingRunUnblocksOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:a", 1)
	b.create(t0, "tag:b", 1)
	ha := b.task(t0, uuid.Nil, "a")
	b.start(t0, ha.ID, Running)
	both := b.task(t0, uuid.Nil, "a", "b") // first in line on b, blocked by a
	b.start(t0, both.ID, AwaitingConcurrencySlot)
	onlyB := b.task(t0, uuid.Nil, "b")
	b.start(t0, onlyB.ID, AwaitingConcurrencySlot) // behind both on b
	b.set(at(time.Second), both.ID, Cancelled)
	if s := b.state(onlyB.ID); s != Running {
		t.Errorf("run behind a cancelled waiter: %v, want Running", s)
	}
	if _, w := b.m.Counts(); w != 0 {
		t.Errorf("%d waiters, want 0", w)
	}
}

func TestCreateRunValidation(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("t", MaxNameLength)
	tests := []struct {
		name      string
		spec      func(s *RunSpec)
		wantField string
		wantErr   error
	}{
		{"nil id", func(s *RunSpec) { s.ID = uuid.Nil }, "id", nil},
		{"no kind", func(s *RunSpec) { s.Kind = 0 }, "kind", nil},
		{"long name", func(s *RunSpec) { s.Name = strings.Repeat("n", MaxRunName+1) }, "name", nil},
		{"bad UTF-8 name", func(s *RunSpec) { s.Name = "\xff" }, "name", nil},
		{"too many tags", func(s *RunSpec) { s.Tags = make([]string, MaxRunTags+1) }, "tags", nil},
		{"empty tag", func(s *RunSpec) { s.Tags = []string{"a", ""} }, "tags", nil},
		{"tag with a slash", func(s *RunSpec) { s.Tags = []string{"a/b"} }, "tags", nil},
		{"tag with a star", func(s *RunSpec) { s.Tags = []string{"a*"} }, "tags", nil},
		{"tag too long with its prefix", func(s *RunSpec) { s.Tags = []string{long[:MaxNameLength-3]} }, "tags", nil},
		{"bad strategy", func(s *RunSpec) { s.CollisionStrategy = 7 }, "collision_strategy", nil},
		{"no lease duration", func(s *RunSpec) { s.LeaseDuration = 0 }, "lease_duration", nil},
		{"unknown parent", func(s *RunSpec) { s.ParentID = runID(77) }, "parent_id", nil},
		{"own parent", func(s *RunSpec) { s.ParentID = s.ID }, "parent_id", nil},
		{"id taken", func(s *RunSpec) { s.ID = runID(1) }, "", ErrRunExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := New(DefaultConfig())
			if _, err := m.CreateRun(t0, RunSpec{ID: runID(1), Kind: KindTask, LeaseDuration: time.Minute}); err != nil {
				t.Fatal(err)
			}
			s := RunSpec{ID: runID(2), Kind: KindTask, Tags: []string{"ok"}, LeaseDuration: time.Minute}
			tt.spec(&s)
			_, err := m.CreateRun(t0, s)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("got %v, want an *InvalidError on %q", err, tt.wantField)
			}
			if m.RunCount() != 1 {
				t.Errorf("RunCount %d after a refused create, want 1", m.RunCount())
			}
		})
	}
	// A tag as long as the prefix leaves room for is fine.
	m := New(DefaultConfig())
	if _, err := m.CreateRun(t0, RunSpec{ID: runID(1), Kind: KindFlow, Tags: []string{long[:MaxNameLength-len("label:")]}, LeaseDuration: time.Minute}); err != nil {
		t.Errorf("longest label: %v", err)
	}
}

func TestRunsFilterAndPrune(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flow := b.newRun(t0, KindFlow, uuid.Nil, "nightly")
	parent := b.task(at(1), flow.ID, "db")
	child := b.task(at(2), parent.ID, "db", "api")
	loose := b.task(at(3), uuid.Nil, "api")
	b.set(at(time.Second), loose.ID, Completed)
	ids := func(rs []Run) []uuid.UUID {
		out := []uuid.UUID{}
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	tests := []struct {
		name   string
		f      RunFilter
		offset int
		n      int
		want   []uuid.UUID
	}{
		{"all, oldest first", RunFilter{}, 0, 10, []uuid.UUID{flow.ID, parent.ID, child.ID, loose.ID}},
		{"page", RunFilter{}, 1, 2, []uuid.UUID{parent.ID, child.ID}},
		{"tag", RunFilter{Tag: "api"}, 0, 10, []uuid.UUID{child.ID, loose.ID}},
		{"kind", RunFilter{Kind: KindFlow}, 0, 10, []uuid.UUID{flow.ID}},
		{"state", RunFilter{State: Pending, Kind: KindTask}, 0, 10, []uuid.UUID{parent.ID, child.ID}},
		{"inside a flow", RunFilter{Ancestor: flow.ID}, 0, 10, []uuid.UUID{parent.ID, child.ID}},
		{"nothing", RunFilter{Tag: "nope"}, 0, 10, []uuid.UUID{}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, ids(b.m.Runs(tt.f, tt.offset, tt.n))); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
	b.events()
	b.set(at(2*time.Second), flow.ID, Completed)
	if n := b.m.PruneRuns(at(2 * time.Second)); n != 1 {
		t.Errorf("PruneRuns(2s) = %d, want 1 (only the run finished at 1s)", n)
	}
	if n := b.m.PruneRuns(at(3 * time.Second)); n != 1 {
		t.Errorf("PruneRuns(3s) = %d, want 1", n)
	}
	b.events()
	if d := cmp.Diff([]uuid.UUID{parent.ID, child.ID}, ids(b.m.Runs(RunFilter{}, 0, 10))); d != "" {
		t.Errorf("after pruning (-want +got):\n%s", d)
	}
	if _, ok := b.store.runs[loose.ID]; ok {
		t.Error("the pruned run is still stored")
	}
	// Runs still name the pruned flow as their parent.
	if d := cmp.Diff([]uuid.UUID{parent.ID, child.ID}, ids(b.m.Runs(RunFilter{Ancestor: flow.ID}, 0, 10))); d != "" {
		t.Errorf("runs inside a pruned flow (-want +got):\n%s", d)
	}
	b.start(at(3*time.Second), parent.ID, Running)
}

func TestRunRestoreRequeuesInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	holder := b.task(t0, uuid.Nil, "db")
	b.start(t0, holder.ID, Running)
	var waiting []uuid.UUID
	for i := range 4 {
		r := b.task(t0, uuid.Nil, "db")
		b.start(at(time.Duration(3-i)*time.Second), r.ID, AwaitingConcurrencySlot) // times out of order on purpose
		waiting = append(waiting, r.ID)
	}
	b.events()
	now := at(5 * time.Second)
	if d := diffRestored(b.m, b.store, now); d != "" {
		t.Fatal(d)
	}
	r := b.store.restore(DefaultConfig(), now)
	if _, w := r.Counts(); w != 4 {
		t.Fatalf("restored %d waiters, want 4", w)
	}
	var order []uuid.UUID
	cur := holder.ID
	for i := range 5 {
		if _, err := r.SetRunState(at(time.Duration(6+i)*time.Second), cur, Completed, ""); err != nil {
			t.Fatal(err)
		}
		cur = uuid.Nil
		for _, id := range waiting {
			if run, _ := r.Run(id); run.State == Running {
				cur = id
				order = append(order, id)
			}
		}
		if cur == uuid.Nil {
			break
		}
	}
	if d := cmp.Diff(waiting, order); d != "" {
		t.Errorf("restored runs granted out of the order they joined the line (-want +got):\n%s", d)
	}
}

func TestRunRestoreKeepsLeasesAndExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	run := b.task(t0, uuid.Nil, "db")
	b.start(t0, run.ID, Running)
	b.events()
	r := b.store.restore(DefaultConfig(), at(time.Second))
	r.Drain()
	if _, err := r.HeartbeatRun(at(30*time.Second), run.ID); err != nil {
		t.Fatalf("heartbeat after restore: %v", err)
	}
	r.Tick(at(90 * time.Second))
	got, _ := r.Run(run.ID)
	if got.State != Crashed {
		t.Errorf("after its restored lease expired: %v, want Crashed", got.State)
	}
	// A Running run whose lease is missing is Crashed at restore.
	s := newMapStore()
	lost := run
	lost.State, lost.LeaseID = Running, leaseID(42)
	s.runs[lost.ID] = lost
	m := s.restore(DefaultConfig(), t0)
	if got, _ := m.Run(lost.ID); got.State != Crashed {
		t.Errorf("run without its lease after restore: %v, want Crashed", got.State)
	}
}

func TestRevokeLimitLeases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.create(t0, "tag:db", 2)
	b.create(t0, "tag:other", 1)
	run := b.task(t0, uuid.Nil, "db", "other")
	b.start(t0, run.ID, Running)
	plain := b.req(1, "tag:db")
	plain.Holder = Holder{Type: "task_run", ID: "v1"}
	b.mustGrant(t0, plain)
	waiter := b.task(t0, uuid.Nil, "other")
	b.start(t0, waiter.ID, AwaitingConcurrencySlot)
	b.events()
	n, err := b.m.RevokeLimitLeases(at(time.Second), l.ID, "slot revoked by reset")
	if err != nil || n != 2 {
		t.Fatalf("RevokeLimitLeases = %d, %v; want 2", n, err)
	}
	got, _ := b.m.Run(run.ID)
	if got.State != Crashed || got.History[len(got.History)-1].Message != "slot revoked by reset" {
		t.Errorf("run with a revoked lease: %v %q", got.State, got.History[len(got.History)-1].Message)
	}
	if s := b.state(waiter.ID); s != Running {
		t.Errorf("waiter on the run's other limit: %v, want Running", s)
	}
	if v := b.view(at(time.Second), "tag:db"); v.Held != 0 || len(v.Holders) != 0 {
		t.Errorf("tag:db held %d by %d leases after the revocation, want none", v.Held, len(v.Holders))
	}
	kinds := eventKinds(b.events())
	if c := slices.Index(kinds, Revoked); c < 0 || slices.Index(kinds[c+1:], Revoked) < 0 {
		t.Errorf("events %v, want two Revoked", kinds)
	}
	if _, err := b.m.RevokeLimitLeases(t0, limitID(99), ""); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("revoke on an unknown limit: %v", err)
	}
}

func TestRevokeLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	run := b.task(t0, uuid.Nil, "db")
	b.start(t0, run.ID, Running)
	waiter := b.task(t0, uuid.Nil, "db")
	b.start(t0, waiter.ID, AwaitingConcurrencySlot)
	b.events()
	held, _ := b.m.Run(run.ID)
	l, err := b.m.RevokeLease(at(time.Second), held.LeaseID, "revoked by an operator")
	if err != nil || l.ID != held.LeaseID {
		t.Fatalf("RevokeLease = %v, %v; want the run's lease", l.ID, err)
	}
	got, _ := b.m.Run(run.ID)
	if got.State != Crashed || got.History[len(got.History)-1].Message != "revoked by an operator" {
		t.Errorf("run with a revoked lease: %v %q, want Crashed with the reason", got.State, got.History[len(got.History)-1].Message)
	}
	if s := b.state(waiter.ID); s != Running {
		t.Errorf("waiter: %v, want Running with the freed slot", s)
	}
	es := b.events()
	i := slices.IndexFunc(es, func(e Event) bool { return e.Kind == Revoked })
	if i < 0 || es[i].Lease.ID != held.LeaseID || es[i].Reason != "revoked by an operator" {
		t.Errorf("events %v, want Revoked of the run's lease with the reason", eventKinds(es))
	}
	if _, err := b.m.RevokeLease(at(time.Second), held.LeaseID, ""); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("second revoke: %v, want ErrLeaseNotFound", err)
	}
	// A lease past its expiry is expired, not revoked.
	b.create(t0, "other", 1)
	plain := b.mustGrant(at(time.Second), b.req(1, "other"))
	b.events()
	if _, err := b.m.RevokeLease(plain.Expires, plain.ID, ""); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("revoke after expiry: %v, want ErrLeaseNotFound", err)
	}
	if kinds := eventKinds(b.events()); !slices.Contains(kinds, Expired) || slices.Contains(kinds, Revoked) {
		t.Errorf("events of a revoke after expiry %v, want Expired only", kinds)
	}
}

func TestReleaseHolderLeases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:a", 5)
	b.create(t0, "tag:b", 5)
	x := Holder{Type: "task_run", ID: "x"}
	both := b.req(1, "tag:a", "tag:b")
	both.Holder = x
	b.mustGrant(t0, both)
	onlyB := b.req(1, "tag:b")
	onlyB.Holder = x
	b.mustGrant(t0, onlyB)
	other := b.req(1, "tag:a")
	other.Holder = Holder{Type: "task_run", ID: "y"}
	b.mustGrant(t0, other)
	flowX := b.req(1, "tag:a")
	flowX.Holder = Holder{Type: "flow_run", ID: "x"}
	b.mustGrant(t0, flowX)
	refs, n := b.m.ReleaseHolderLeases(at(time.Second), []string{"tag:a", "nope", "tag:a"}, x)
	if n != 1 {
		t.Errorf("released %d leases, want 1", n)
	}
	if d := cmp.Diff([]string{"tag:a"}, names(refs)); d != "" {
		t.Errorf("limits (-want +got):\n%s", d)
	}
	// Releasing tag a released the lease's hold on b too, as in Prefect.
	if a, bv := b.view(at(time.Second), "tag:a"), b.view(at(time.Second), "tag:b"); a.Held != 2 || bv.Held != 1 {
		t.Errorf("held a %d b %d, want 2 and 1", a.Held, bv.Held)
	}
}

func TestReleasingARunLeaseByIDCrashesTheRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:a", 1)
	r := b.task(t0, uuid.Nil, "a")
	got := b.start(t0, r.ID, Running)
	if !b.m.Release(at(time.Second), got.LeaseID) {
		t.Fatal("Release of the run's lease: not held")
	}
	if s := b.state(r.ID); s != Crashed {
		t.Errorf("run whose lease was released by id: %v, want Crashed", s)
	}
}

func TestRunTagTemplates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:customer-*", 1)
	a := b.task(t0, uuid.Nil, "customer-1")
	b.start(t0, a.ID, Running)
	other := b.task(t0, uuid.Nil, "customer-2")
	b.start(t0, other.ID, Running)
	same := b.task(t0, uuid.Nil, "customer-1")
	b.start(t0, same.ID, AwaitingConcurrencySlot)
}

func TestRunWithoutLimitedTagsHoldsALease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.task(t0, uuid.Nil, "nobody-limits-this")
	got := b.start(t0, r.ID, Running)
	lease, refs, err := b.m.Lease(t0, got.LeaseID)
	if err != nil || len(refs) != 0 || len(lease.Holds) != 0 {
		t.Fatalf("lease of an unlimited run: %+v %v %v, want one that holds nothing", lease, refs, err)
	}
	b.m.Tick(lease.Expires)
	if s := b.state(r.ID); s != Crashed {
		t.Errorf("unlimited run without heartbeats: %v, want Crashed", s)
	}
}

// runWithLimits creates a task run with tags that also takes slots of each
// of limits, and fails the test on error.
func (b *bundle) runWithLimits(now time.Time, parent uuid.UUID, tags, limits []string, slots int) Run {
	b.t.Helper()
	b.next++
	r, err := b.m.CreateRun(now, RunSpec{ID: runID(b.next), Kind: KindTask, Name: fmt.Sprintf("run-%d", b.next),
		Tags: tags, Limits: limits, Slots: slots, ParentID: parent, LeaseDuration: time.Minute})
	if err != nil {
		b.t.Fatalf("CreateRun(%v, limits %v): %v", tags, limits, err)
	}
	return r
}

// TestRunLimitsOneWait checks that a run's own limits are taken with its
// tags' limits in one all-or-nothing wait: while the limit is full the run
// holds no slot of its free tag; once both have room it holds both, Slots
// of the limit and one of the tag.
func TestRunLimitsOneWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:db", 1)
	b.create(t0, "warehouse", 3)
	blocker := b.mustGrant(t0, b.req(2, "warehouse"))
	r := b.runWithLimits(t0, uuid.Nil, []string{"db"}, []string{"warehouse"}, 2)
	if r.Slots != 2 || !slices.Equal(r.Limits, []string{"warehouse"}) {
		t.Fatalf("run limits %v slots %d, want [warehouse] and 2", r.Limits, r.Slots)
	}
	got := b.start(t0, r.ID, AwaitingConcurrencySlot)
	if msg := got.History[len(got.History)-1].Message; msg != `waiting for a slot of limit "warehouse"` {
		t.Errorf("waiting message %q, want it to name the full limit", msg)
	}
	if v := b.view(t0, "tag:db"); v.Held != 0 {
		t.Fatalf("tag:db held %d while the run waits for warehouse, want 0: one wait for both", v.Held)
	}
	if v := b.view(t0, "warehouse"); v.Held != 2 || len(v.Waiters) != 1 || v.Waiters[0].Slots != 2 {
		t.Fatalf("warehouse: held %d, waiters %+v; want 2 held and the run waiting for 2 slots", v.Held, v.Waiters)
	}
	// Nobody holds the tag's slot meanwhile; a later run with the tag
	// queues behind the run, first in first out, as any request does
	// behind a waiter on one of its limits (docs/semantics.md, fairness).
	other := b.task(t0, uuid.Nil, "db")
	b.start(t0, other.ID, AwaitingConcurrencySlot)
	if !b.m.Release(at(2*time.Second), blocker.ID) {
		t.Fatal("release of the blocker: not held")
	}
	if s := b.state(r.ID); s != Running {
		t.Fatalf("run %v once both have room, want Running", s)
	}
	if v := b.view(at(2*time.Second), "tag:db"); v.Held != 1 {
		t.Errorf("tag:db held %d, want the run's 1", v.Held)
	}
	if v := b.view(at(2*time.Second), "warehouse"); v.Held != 2 {
		t.Errorf("warehouse held %d, want the run's 2", v.Held)
	}
	b.set(at(3*time.Second), r.ID, Completed)
	if v := b.view(at(3*time.Second), "warehouse"); v.Held != 0 {
		t.Errorf("warehouse held %d after the run completed, want 0", v.Held)
	}
	if s := b.state(other.ID); s != Running {
		t.Errorf("the later run with the tag %v once the run completed, want Running", s)
	}
}

// TestRunLimitsMustExist checks that a run's own limit must exist or match
// a template (unlike a tag), and that a template makes it.
func TestRunLimitsMustExist(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runWithLimits(t0, uuid.Nil, []string{"no-limit-tag"}, []string{"wharehouse"}, 1)
	if _, err := b.m.SetRunState(t0, r.ID, Running, ""); !errors.Is(err, ErrLimitNotFound) || !strings.Contains(err.Error(), `"wharehouse"`) {
		t.Fatalf("SetRunState(Running) with a missing limit: %v, want ErrLimitNotFound naming it", err)
	}
	if s := b.state(r.ID); s != Pending {
		t.Errorf("run %v after the refusal, want still Pending", s)
	}
	b.create(t0, "resource:*", 1)
	r2 := b.runWithLimits(t0, uuid.Nil, nil, []string{"resource:42"}, 1)
	b.start(t0, r2.ID, Running)
	if v := b.view(t0, "resource:42"); v.Held != 1 {
		t.Errorf("resource:42 held %d, want the run's slot", v.Held)
	}
	for _, tc := range []struct {
		name   string
		limits []string
		slots  int
		field  string
	}{
		{"template name", []string{"resource:*"}, 1, "limits"},
		{"bad name", []string{"a/b"}, 1, "limits"},
		{"negative slots", []string{"x"}, -1, "slots"},
	} {
		_, err := b.m.CreateRun(t0, RunSpec{ID: runID(900), Kind: KindTask, Limits: tc.limits, Slots: tc.slots, LeaseDuration: time.Minute})
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != tc.field {
			t.Errorf("%s: CreateRun: %v, want an InvalidError on %s", tc.name, err, tc.field)
		}
	}
}

// TestRunLimitsNotShared checks that only tags are shared with ancestors:
// a child's own limit is taken again, even one its parent holds.
func TestRunLimitsNotShared(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "tag:x", 1)
	b.create(t0, "warehouse", 1)
	parent := b.runWithLimits(t0, uuid.Nil, []string{"x"}, []string{"warehouse"}, 1)
	b.start(t0, parent.ID, Running)
	child := b.runWithLimits(t0, parent.ID, []string{"x"}, []string{"warehouse"}, 1)
	b.start(t0, child.ID, AwaitingConcurrencySlot)
	b.set(at(time.Second), parent.ID, Completed)
	if s := b.state(child.ID); s != Running {
		t.Fatalf("child %v once the parent completed, want Running", s)
	}
}

// TestRunLimitsSurviveRestart checks that a waiting run's own limits are
// durable: restored, it still waits for them and takes them when free.
func TestRunLimitsSurviveRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "warehouse", 1)
	blocker := b.mustGrant(t0, b.req(1, "warehouse"))
	r := b.runWithLimits(t0, uuid.Nil, nil, []string{"warehouse"}, 1)
	b.start(t0, r.ID, AwaitingConcurrencySlot)
	b.events()
	m := b.store.restore(DefaultConfig(), at(time.Second))
	if !m.Release(at(2*time.Second), blocker.ID) {
		t.Fatal("release of the blocker after the restart: not held")
	}
	got, err := m.Run(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Running || !slices.Equal(got.Limits, []string{"warehouse"}) {
		t.Fatalf("restored run: %v with limits %v, want Running with [warehouse]", got.State, got.Limits)
	}
}

func TestTruncateRunMessage(t *testing.T) {
	t.Parallel()
	const limit = MaxRunMessage
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "boom", "boom"},
		{"exactly the limit", strings.Repeat("a", limit), strings.Repeat("a", limit)},
		{"one byte over", strings.Repeat("a", limit+1), strings.Repeat("a", limit-3) + "…"},
		// 2,000 two-byte characters: the cut at 2,045 bytes falls inside
		// one, so 1,022 characters are kept.
		{"two-byte characters", strings.Repeat("é", 2000), strings.Repeat("é", 1022) + "…"},
		{"three-byte characters", strings.Repeat("€", 1000), strings.Repeat("€", 681) + "…"},
		{"four-byte characters", strings.Repeat("𝄞", 1000), strings.Repeat("𝄞", 511) + "…"},
		{"cut after a one-byte character", "a" + strings.Repeat("é", 2000), "a" + strings.Repeat("é", 1022) + "…"},
		{"not UTF-8", "a\xffb", "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := TruncateRunMessage(tt.in)
			if got != tt.want {
				t.Errorf("TruncateRunMessage: got %d bytes ending %q, want %d bytes ending %q",
					len(got), got[max(0, len(got)-12):], len(tt.want), tt.want[max(0, len(tt.want)-12):])
			}
			if len(got) > MaxRunMessage {
				t.Errorf("TruncateRunMessage kept %d bytes, more than %d", len(got), MaxRunMessage)
			}
		})
	}
}

// TestRunEndsWithAnOverLongMessage: a message over MaxRunMessage bytes is
// cut, not refused, so the run still ends.
func TestRunEndsWithAnOverLongMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.task(t0, uuid.Nil, "db")
	b.start(at(time.Second), r.ID, Running)
	long := strings.Repeat("é", 2000)
	got, err := b.m.SetRunState(at(2*time.Second), r.ID, Failed, long)
	if err != nil {
		t.Fatalf("SetRunState(Failed, %d bytes): %v", len(long), err)
	}
	last := got.History[len(got.History)-1]
	if d := cmp.Diff(StateEntry{State: Failed, At: at(2 * time.Second), Message: TruncateRunMessage(long)}, last); d != "" {
		t.Errorf("last state (-want +got):\n%s", d)
	}
}
