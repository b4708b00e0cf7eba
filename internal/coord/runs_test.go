package coord_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
)

// newRun creates a task run (or a flow run, for labels) and fails the test
// on error.
func newRun(t *testing.T, c *coord.Coordinator, s sema.RunSpec) sema.Run {
	t.Helper()
	if s.Kind == 0 {
		s.Kind = sema.KindTask
	}
	r, _, err := c.CreateRun(t.Context(), s)
	if err != nil {
		t.Fatalf("CreateRun(%v): %v", s.Tags, err)
	}
	return r
}

func setState(t *testing.T, c *coord.Coordinator, id uuid.UUID, s sema.RunState) sema.Run {
	t.Helper()
	r, err := c.SetRunState(t.Context(), id, s, "")
	if err != nil {
		t.Fatalf("SetRunState(%v): %v", s, err)
	}
	return r
}

// runTask creates a task run with tags, asks it to run and waits until it
// is Running; it returns the run and when it started.
func runTask(t *testing.T, c *coord.Coordinator, parent uuid.UUID, tags ...string) sema.Run {
	t.Helper()
	r := newRun(t, c, sema.RunSpec{Tags: tags, ParentID: parent})
	setState(t, c, r.ID, sema.Running)
	got, err := c.WaitRun(t.Context(), r.ID, sema.Running, time.Hour)
	if err != nil || got.State != sema.Running {
		t.Fatalf("run %v: %v %v, want Running", tags, got.State, err)
	}
	return got
}

func TestRunCrashesWhenHeartbeatsStop(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 1)
		start := time.Now()
		dying := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}, LeaseDuration: 2 * time.Second})
		setState(t, b.c, dying.ID, sema.Running)
		next := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
		if got := setState(t, b.c, next.ID, sema.Running); got.State != sema.AwaitingConcurrencySlot {
			t.Fatalf("second run: %v, want AwaitingConcurrencySlot", got.State)
		}
		// The process heartbeats once, then dies.
		time.Sleep(time.Second)
		if _, err := b.c.HeartbeatRun(t.Context(), dying.ID); err != nil {
			t.Fatal(err)
		}
		got, err := b.c.WaitRun(t.Context(), next.ID, sema.Running, time.Hour)
		if err != nil || got.State != sema.Running {
			t.Fatalf("next run: %v %v, want Running", got.State, err)
		}
		if waited := time.Since(start); waited != 3*time.Second {
			t.Errorf("next run started after %v, want 3s (last heartbeat + lease duration)", waited)
		}
		dead, _ := b.c.ReadRun(t.Context(), dying.ID)
		last := dead.History[len(dead.History)-1]
		if dead.State != sema.Crashed || last.Message != "lease expired: no heartbeat for 2s" || !last.At.Equal(start.Add(3*time.Second)) {
			t.Errorf("dead run: %v %q at %v, want Crashed at 3s", dead.State, last.Message, last.At.Sub(start))
		}
		if _, err := b.c.HeartbeatRun(t.Context(), dying.ID); !errors.Is(err, sema.ErrRunFinished) {
			t.Errorf("heartbeat after the crash: %v, want ErrRunFinished", err)
		}
	})
}

func TestRunsStartInArrivalOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 1)
		first := runTask(t, b.c, uuid.Nil, "db")
		const n = 5
		order := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			r := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
			setState(t, b.c, r.ID, sema.Running)
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := b.c.WaitRun(context.Background(), r.ID, sema.Running, time.Hour)
				if err != nil || got.State != sema.Running {
					t.Errorf("run %d: %v %v", i, got.State, err)
					return
				}
				order <- i
				time.Sleep(time.Second)
				if _, err := b.c.SetRunState(context.Background(), r.ID, sema.Completed, ""); err != nil {
					t.Errorf("complete %d: %v", i, err)
				}
			}()
		}
		synctest.Wait()
		setState(t, b.c, first.ID, sema.Completed)
		wg.Wait()
		close(order)
		want := 0
		for got := range order {
			if got != want {
				t.Fatalf("start order: got run %d, want %d", got, want)
			}
			want++
		}
	})
}

func TestNestedRunsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:x", 1)
		flow := newRun(t, b.c, sema.RunSpec{Kind: sema.KindFlow})
		setState(t, b.c, flow.ID, sema.Running)
		parent := runTask(t, b.c, flow.ID, "x")
		child := runTask(t, b.c, parent.ID, "x") // would deadlock if it waited for its parent
		other := newRun(t, b.c, sema.RunSpec{Tags: []string{"x"}})
		if got := setState(t, b.c, other.ID, sema.Running); got.State != sema.AwaitingConcurrencySlot {
			t.Fatalf("another flow's task: %v, want AwaitingConcurrencySlot", got.State)
		}
		setState(t, b.c, child.ID, sema.Completed)
		if got, _ := b.c.WaitRun(t.Context(), other.ID, sema.Running, time.Second); got.State != sema.AwaitingConcurrencySlot {
			t.Fatalf("other task after the child completed: %v, want still waiting for the parent", got.State)
		}
		setState(t, b.c, parent.ID, sema.Completed)
		if got, _ := b.c.WaitRun(t.Context(), other.ID, sema.Running, time.Second); got.State != sema.Running {
			t.Fatalf("other task after the parent completed: %v, want Running", got.State)
		}
		runs, err := b.c.ListRuns(t.Context(), sema.RunFilter{Ancestor: flow.ID}, 0, 10)
		if err != nil || len(runs) != 2 {
			t.Errorf("runs of the flow: %d %v, want 2", len(runs), err)
		}
	})
}

func TestRunCancelNewAndZeroLimit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "label:gpu", 1)
		mustLimit(t, b.c, "label:off", 0)
		runTask(t, b.c, uuid.Nil) // an untagged task runs at once
		first := newRun(t, b.c, sema.RunSpec{Kind: sema.KindFlow, Tags: []string{"gpu"}})
		setState(t, b.c, first.ID, sema.Running)
		late := newRun(t, b.c, sema.RunSpec{Kind: sema.KindFlow, Tags: []string{"gpu"}, CollisionStrategy: sema.CancelNew})
		if got := setState(t, b.c, late.ID, sema.Running); got.State != sema.Cancelled {
			t.Errorf("cancel_new run with the label full: %v, want Cancelled", got.State)
		}
		zero := newRun(t, b.c, sema.RunSpec{Kind: sema.KindFlow, Tags: []string{"off"}})
		got := setState(t, b.c, zero.ID, sema.Running)
		if msg := got.History[len(got.History)-1].Message; got.State != sema.Failed || !strings.Contains(msg, `label "off" is 0`) {
			t.Errorf("run on a label limited to 0: %v %q, want Failed naming the label", got.State, msg)
		}
	})
}

func TestRestartRequeuesWaitingRunsInOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 1)
		holder := runTask(t, b.c, uuid.Nil, "db")
		var waiting []uuid.UUID
		for range 4 {
			r := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
			setState(t, b.c, r.ID, sema.Running)
			waiting = append(waiting, r.ID)
			time.Sleep(time.Millisecond)
		}
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		b2 := setup(t, b.st.Reopen())
		v, err := b2.c.ReadLimit(t.Context(), "tag:db", sema.Full)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Holders) != 1 || v.Holders[0].Holder.ID != holder.ID.String() || len(v.Waiters) != 4 {
			t.Fatalf("after restart: holders %+v, %d waiters; want the holder and 4 in line", v.Holders, len(v.Waiters))
		}
		var order []uuid.UUID
		cur := holder.ID
		for range waiting {
			setState(t, b2.c, cur, sema.Completed)
			for _, id := range waiting {
				if r, _ := b2.c.ReadRun(t.Context(), id); r.State == sema.Running {
					cur = id
					order = append(order, id)
				}
			}
		}
		if d := cmp.Diff(waiting, order); d != "" {
			t.Errorf("start order after a restart (-want +got):\n%s", d)
		}
	})
}

func TestRestartCrashesRunsWhoseLeaseExpiredMeanwhile(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 1)
		r := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}, LeaseDuration: 5 * time.Second})
		setState(t, b.c, r.ID, sema.Running)
		w := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
		setState(t, b.c, w.ID, sema.Running)
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute) // the server is down
		b2 := setup(t, b.st.Reopen())
		got, err := b2.c.WaitRun(t.Context(), w.ID, sema.Running, time.Second)
		if err != nil || got.State != sema.Running {
			t.Fatalf("waiting run after a restart past the holder's expiry: %v %v, want Running", got.State, err)
		}
		if dead, _ := b2.c.ReadRun(t.Context(), r.ID); dead.State != sema.Crashed {
			t.Errorf("holder: %v, want Crashed", dead.State)
		}
	})
}

func TestWaitRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		mustLimit(t, b.c, "tag:db", 1)
		holder := runTask(t, b.c, uuid.Nil, "db")
		r := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
		setState(t, b.c, r.ID, sema.Running)
		start := time.Now()
		got, err := b.c.WaitRun(t.Context(), r.ID, sema.Running, 3*time.Second)
		if err != nil || got.State != sema.AwaitingConcurrencySlot || time.Since(start) != 3*time.Second {
			t.Errorf("WaitRun timed out: %v %v after %v, want the waiting run after 3s", got.State, err, time.Since(start))
		}
		if _, err := b.c.WaitRun(t.Context(), uuid.New(), sema.Running, time.Second); !errors.Is(err, sema.ErrRunNotFound) {
			t.Errorf("WaitRun of an unknown run: %v", err)
		}
		// A final state ends the wait too.
		done := make(chan sema.Run, 1)
		go func() {
			got, _ := b.c.WaitRun(context.Background(), r.ID, sema.Running, time.Hour)
			done <- got
		}()
		synctest.Wait()
		setState(t, b.c, r.ID, sema.Cancelled)
		if got := <-done; got.State != sema.Cancelled {
			t.Errorf("WaitRun ended by cancellation: %v", got.State)
		}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := b.c.WaitRun(ctx, holder.ID, sema.Completed, time.Hour)
			errc <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("WaitRun after its caller left: %v", err)
		}
	})
}

// TestWaitRunAnswersAfterCommit shows that WaitRun returns a run in its new
// state only once that state is durable.
func TestWaitRunAnswersAfterCommit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := &blockingStore{Store: memstore.New(), gate: make(chan struct{}, 1)}
		st.gate <- struct{}{} // for the create
		c, err := coord.New(t.Context(), st, coord.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		r, _, err := c.CreateRun(t.Context(), sema.RunSpec{Kind: sema.KindTask})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan sema.Run, 1)
		go func() {
			r, _ := c.WaitRun(context.Background(), r.ID, sema.Running, time.Hour)
			got <- r
		}()
		synctest.Wait()
		go func() { _, _ = c.SetRunState(context.Background(), r.ID, sema.Running, "") }()
		synctest.Wait()
		select {
		case r := <-got:
			t.Fatalf("WaitRun answered %v before the change was committed", r.State)
		default:
		}
		st.gate <- struct{}{}
		if r := <-got; r.State != sema.Running {
			t.Errorf("WaitRun: %v, want Running", r.State)
		}
		cancel()
		close(st.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestTagAndLabelLimits(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		v, created, err := b.c.UpsertTagLimit(t.Context(), sema.KindTask, "db", 1)
		if err != nil || !created || v.Name != "tag:db" || v.Limit.Limit != 1 {
			t.Fatalf("UpsertTagLimit new: %+v %v %v", v, created, err)
		}
		v2, created, err := b.c.UpsertTagLimit(t.Context(), sema.KindTask, "db", 2)
		if err != nil || created || v2.ID != v.ID || v2.Limit.Limit != 2 {
			t.Fatalf("UpsertTagLimit existing: %+v %v %v", v2, created, err)
		}
		var ie *sema.InvalidError
		if _, _, err := b.c.UpsertTagLimit(t.Context(), sema.KindTask, "a/b", 1); !errors.As(err, &ie) || ie.Field != "tag" {
			t.Errorf("UpsertTagLimit with a bad tag: %v, want *InvalidError on tag", err)
		}
		mustLimit(t, b.c, "plain", 1)
		plain, _ := b.c.ReadLimit(t.Context(), "plain", sema.Summary)
		if _, err := b.c.ReadTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{ID: plain.ID}); !errors.Is(err, sema.ErrLimitNotFound) {
			t.Errorf("ReadTagLimit of a limit that is not a tag's: %v, want ErrLimitNotFound", err)
		}
		if _, err := b.c.ReadTagLimit(t.Context(), sema.KindFlow, coord.TagLimitRef{ID: v.ID}); !errors.Is(err, sema.ErrLimitNotFound) {
			t.Errorf("ReadTagLimit of a tag limit as a label limit: %v, want ErrLimitNotFound", err)
		}

		// Increment is all or nothing and refuses with the tag wait.
		if _, err := b.c.IncrementTagLimits(t.Context(), sema.KindTask, []string{"db", "nope"}, "t1"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.c.IncrementTagLimits(t.Context(), sema.KindTask, []string{"db"}, "t2"); err != nil {
			t.Fatal(err)
		}
		_, err = b.c.IncrementTagLimits(t.Context(), sema.KindTask, []string{"db"}, "t3")
		var le *sema.LockedError
		if !errors.As(err, &le) || le.RetryAfter != 10*time.Second || !cmp.Equal(le.Full, []string{"tag:db"}) {
			t.Fatalf("increment on a full tag: %v, want *LockedError of 10s naming tag:db", err)
		}
		// A waiting run is served before reset's overrides.
		waiting := newRun(t, b.c, sema.RunSpec{Tags: []string{"db"}})
		setState(t, b.c, waiting.ID, sema.Running)
		res, err := b.c.ResetTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{Key: "db"}, []string{"o1", "o2", "o1"})
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(coord.ResetResult{Revoked: 2, Granted: []string{"o1"}, Refused: []string{"o2"}}, res); d != "" {
			t.Errorf("reset (-want +got):\n%s", d)
		}
		if r, _ := b.c.ReadRun(t.Context(), waiting.ID); r.State != sema.Running {
			t.Errorf("run waiting at the reset: %v, want Running", r.State)
		}
		v3, _ := b.c.ReadTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{Key: "db"})
		var holders []string
		for _, h := range v3.Holders {
			holders = append(holders, h.Holder.ID)
		}
		if d := cmp.Diff([]string{waiting.ID.String(), "o1"}, holders); d != "" {
			t.Errorf("holders after the reset (-want +got):\n%s", d)
		}
		refs, err := b.c.DecrementTagLimits(t.Context(), sema.KindTask, []string{"db", "nope"}, "o1")
		if err != nil || len(refs) != 1 {
			t.Fatalf("DecrementTagLimits: %v %v", refs, err)
		}
		if v4, _ := b.c.ReadTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{Key: "db"}); v4.Held != 1 {
			t.Errorf("held %d after the decrement, want 1", v4.Held)
		}
		if err := b.c.DeleteTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{ID: v.ID}); err != nil {
			t.Fatal(err)
		}
		if r, _ := b.c.ReadRun(t.Context(), waiting.ID); r.State != sema.Running {
			t.Errorf("run holding a deleted tag limit: %v, want still Running", r.State)
		}
		if err := b.c.DeleteTagLimit(t.Context(), sema.KindTask, coord.TagLimitRef{Key: "db"}); !errors.Is(err, sema.ErrLimitNotFound) {
			t.Errorf("second delete: %v, want ErrLimitNotFound", err)
		}
	})
}

func TestFinishedRunsAreForgottenAfterRetention(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		r := runTask(t, b.c, uuid.Nil)
		setState(t, b.c, r.ID, sema.Completed)
		kept := newRun(t, b.c, sema.RunSpec{}) // Pending runs are kept
		time.Sleep(coord.DefaultConfig().RunRetention - time.Second)
		synctest.Wait() // the pruning tick due now has run
		if _, err := b.c.ReadRun(t.Context(), r.ID); err != nil {
			t.Fatalf("run within its retention: %v", err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if _, err := b.c.ReadRun(t.Context(), r.ID); !errors.Is(err, sema.ErrRunNotFound) {
			t.Errorf("run past its retention: %v, want ErrRunNotFound", err)
		}
		if _, err := b.c.ReadRun(t.Context(), kept.ID); err != nil {
			t.Errorf("pending run: %v", err)
		}
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		if st, _ := b.st.Reopen().Load(t.Context()); len(st.Runs) != 1 {
			t.Errorf("stored runs %d, want only the pending one", len(st.Runs))
		}
	})
}
