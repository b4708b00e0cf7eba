package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

type stateEntry struct {
	State     string    `json:"state"`
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message"`
}

type runView struct {
	ID           string       `json:"id"`
	State        string       `json:"state"`
	Tags         []string     `json:"tags"`
	StateHistory []stateEntry `json:"state_history"`
}

type tagLimitView struct {
	ID          string   `json:"id"`
	Tag         string   `json:"tag"`
	ActiveSlots []string `json:"active_slots"`
	Waiting     int      `json:"waiting"`
}

// runClient drives the runs API of one server.
type runClient struct {
	t      *testing.T
	srv    *server
	client *http.Client
}

func (c runClient) create(tags []string, leaseDuration float64) runView {
	c.t.Helper()
	var r runView
	mustCall(c.t, c.client, "POST", c.srv.url("/runs/"), map[string]any{"kind": "task", "tags": tags, "lease_duration": leaseDuration}, &r, 201)
	return r
}

// set moves a run to a state; it is safe from any goroutine.
func (c runClient) set(ctx context.Context, id, state string) (runView, error) {
	var r runView
	code, _, err := call(ctx, c.client, "POST", c.srv.url("/runs/"+id+"/set_state"), map[string]any{"state": state}, &r)
	if err == nil && code != 200 {
		err = fmt.Errorf("set_state %s of %s: got %d", state, id, code)
	}
	return r, err
}

// wait long-polls until the run is Running or done.
func (c runClient) wait(ctx context.Context, id string, seconds float64) (runView, error) {
	var r runView
	code, _, err := call(ctx, c.client, "GET", c.srv.url(fmt.Sprintf("/runs/%s/wait?state=Running&timeout_seconds=%g", id, seconds)), nil, &r)
	if err == nil && code != 200 {
		err = fmt.Errorf("wait for %s: got %d", id, code)
	}
	return r, err
}

func (c runClient) heartbeat(ctx context.Context, id string) (int, error) {
	code, _, err := call(ctx, c.client, "POST", c.srv.url("/runs/"+id+"/heartbeat"), nil, nil)
	return code, err
}

func (c runClient) read(id string) runView {
	c.t.Helper()
	var r runView
	mustCall(c.t, c.client, "GET", c.srv.url("/runs/"+id), nil, &r, 200)
	return r
}

// maxRunning computes, from the recorded state histories alone, the most
// runs that were Running at the same moment. A slot handed on in one step
// ends one run's Running and starts the next's at the same moment.
func maxRunning(runs []runView) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, r := range runs {
		for i, e := range r.StateHistory {
			if e.State == "Running" {
				es = append(es, edge{e.Timestamp, 1})
				if i+1 < len(r.StateHistory) {
					es = append(es, edge{r.StateHistory[i+1].Timestamp, -1})
				}
			}
		}
	}
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

// TestTaskRunsUnderATagLimit runs ten task runs tagged database under a tag
// limit of 3 set with Prefect's v1 API: all ten ask to run at once (3 start,
// 7 wait in line), then each works in its own goroutine as its own worker
// would. No more than 3 are ever Running, as their recorded state histories
// show, and all complete.
func TestTaskRunsUnderATagLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir(), "")
	rc := runClient{t: t, srv: srv, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	mustCall(t, rc.client, "POST", srv.url("/concurrency_limits/"), map[string]any{"tag": "database", "concurrency_limit": 3}, nil, 201)

	var ids []string
	waiting := 0
	for range 10 {
		id := rc.create([]string{"database"}, 30).ID
		r, err := rc.set(t.Context(), id, "Running")
		if err != nil {
			t.Fatal(err)
		}
		if r.State == "AwaitingConcurrencySlot" {
			waiting++
		}
		ids = append(ids, id)
	}
	if waiting != 7 {
		t.Fatalf("%d of 10 runs wait in line, want 7", waiting)
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			r, err := rc.wait(ctx, id, 60)
			if err != nil || r.State != "Running" {
				t.Errorf("run %s: %s (%v), want Running", id, r.State, err)
				return
			}
			for range 3 { // the work, heartbeating
				time.Sleep(20 * time.Millisecond)
				if code, err := rc.heartbeat(ctx, id); err != nil || code != 204 {
					t.Errorf("heartbeat %s: %d (%v)", id, code, err)
				}
			}
			if _, err := rc.set(ctx, id, "Completed"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	var runs []runView
	mustCall(t, rc.client, "POST", srv.url("/runs/filter"), map[string]any{"tag": "database"}, &runs, 200)
	if len(runs) != 10 {
		t.Fatalf("%d runs tagged database, want 10", len(runs))
	}
	for _, r := range runs {
		if r.State != "Completed" {
			t.Errorf("run %s ended %s, want Completed (%+v)", r.ID, r.State, r.StateHistory)
		}
	}
	if n := maxRunning(runs); n != 3 {
		t.Errorf("at most %d runs were Running at once, want 3", n)
	}
	var l tagLimitView
	mustCall(t, rc.client, "GET", srv.url("/concurrency_limits/tag/database"), nil, &l, 200)
	if len(l.ActiveSlots) != 0 || l.Waiting != 0 {
		t.Errorf("after all completed: %+v, want no slots held and nobody waiting", l)
	}
}

// TestKilledRunCrashesAndHandsOn: a run whose process dies mid-run (here, a
// goroutine that stops heartbeating) is Crashed one lease duration after
// its last heartbeat, and its slot goes to the next run at that moment.
func TestKilledRunCrashesAndHandsOn(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir(), "")
	rc := runClient{t: t, srv: srv, client: &http.Client{}}
	mustCall(t, rc.client, "POST", srv.url("/concurrency_limits/"), map[string]any{"tag": "db", "concurrency_limit": 1}, nil, 201)

	dying := rc.create([]string{"db"}, 2)
	next := rc.create([]string{"db"}, 30)
	if r, err := rc.set(t.Context(), dying.ID, "Running"); err != nil || r.State != "Running" {
		t.Fatalf("first run: %s (%v), want Running", r.State, err)
	}
	lastBeat := make(chan time.Time, 1)
	go func() { // the worker process: heartbeats a while, is killed
		ctx := context.Background()
		var last time.Time
		for range 3 {
			time.Sleep(300 * time.Millisecond)
			if code, err := rc.heartbeat(ctx, dying.ID); err != nil || code != 204 {
				t.Errorf("heartbeat: %d (%v)", code, err)
			}
			last = time.Now()
		}
		lastBeat <- last // killed: no more heartbeats, no final state
	}()
	if r, err := rc.set(t.Context(), next.ID, "Running"); err != nil || r.State != "AwaitingConcurrencySlot" {
		t.Fatalf("next run: %s (%v), want AwaitingConcurrencySlot", r.State, err)
	}
	got, err := rc.wait(t.Context(), next.ID, 30)
	if err != nil || got.State != "Running" {
		t.Fatalf("next run: %s (%v), want Running", got.State, err)
	}
	started := time.Now()
	last := <-lastBeat
	if d := started.Sub(last); d > 2500*time.Millisecond {
		t.Errorf("the slot came back %v after the last heartbeat, want about the 2 s lease", d)
	}
	dead := rc.read(dying.ID)
	final := dead.StateHistory[len(dead.StateHistory)-1]
	if dead.State != "Crashed" || final.Message != "lease expired: no heartbeat for 2s" {
		t.Errorf("killed run: %s %q, want Crashed", dead.State, final.Message)
	}
	if !final.Timestamp.Equal(got.StateHistory[len(got.StateHistory)-1].Timestamp) {
		t.Errorf("crash at %v, next run started at %v: want the same moment", final.Timestamp, got.StateHistory[len(got.StateHistory)-1].Timestamp)
	}
	if code, _ := rc.heartbeat(t.Context(), dying.ID); code != http.StatusGone {
		t.Errorf("heartbeat of the crashed run: %d, want 410", code)
	}
}

// TestWaitingRunsSurviveACrash kills the server (SIGKILL) while runs wait
// for a tag: after the restart they are still in line, in the order they
// joined it, and the run holding the slot still holds it.
func TestWaitingRunsSurviveACrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, dir, "")
	rc := runClient{t: t, srv: srv, client: &http.Client{}}
	mustCall(t, rc.client, "POST", srv.url("/concurrency_limits/"), map[string]any{"tag": "db", "concurrency_limit": 1}, nil, 201)
	holder := rc.create([]string{"db"}, 600)
	if r, err := rc.set(t.Context(), holder.ID, "Running"); err != nil || r.State != "Running" {
		t.Fatalf("holder: %s (%v)", r.State, err)
	}
	var waiting []string
	for range 3 {
		r := rc.create([]string{"db"}, 600)
		if r, err := rc.set(t.Context(), r.ID, "Running"); err != nil || r.State != "AwaitingConcurrencySlot" {
			t.Fatalf("waiting run: %s (%v)", r.State, err)
		}
		waiting = append(waiting, r.ID)
	}
	srv.kill()
	srv = startServer(t, dir, srv.addr)
	rc.srv = srv

	var l tagLimitView
	mustCall(t, rc.client, "GET", srv.url("/concurrency_limits/tag/db"), nil, &l, 200)
	if !slices.Equal(l.ActiveSlots, []string{holder.ID}) || l.Waiting != 3 {
		t.Fatalf("after the restart: %+v, want the holder and 3 waiting", l)
	}
	cur := holder.ID
	for i, id := range waiting {
		if _, err := rc.set(t.Context(), cur, "Completed"); err != nil {
			t.Fatal(err)
		}
		r, err := rc.wait(t.Context(), id, 10)
		if err != nil || r.State != "Running" {
			t.Fatalf("waiting run %d after the one before it completed: %s (%v), want Running", i, r.State, err)
		}
		for _, later := range waiting[i+1:] {
			if s := rc.read(later).State; s != "AwaitingConcurrencySlot" {
				t.Errorf("run %s jumped the line: %s", later, s)
			}
		}
		cur = id
	}
}
