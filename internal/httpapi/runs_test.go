package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

const runsPath = "/api/runs"

type stateDoc struct {
	State     string `json:"state"`
	Timestamp string `json:"timestamp"`
	Message   string `json:"message"`
}

// runDoc is a run as the runs API returns it.
type runDoc struct {
	ID                string     `json:"id"`
	Kind              string     `json:"kind"`
	Name              string     `json:"name"`
	Tags              []string   `json:"tags"`
	Limits            []string   `json:"limits"`
	Slots             int        `json:"slots"`
	ParentID          *string    `json:"parent_id"`
	State             string     `json:"state"`
	StateHistory      []stateDoc `json:"state_history"`
	CollisionStrategy string     `json:"collision_strategy"`
	LeaseDuration     float64    `json:"lease_duration"`
	LeaseID           *string    `json:"lease_id"`
	FencingToken      uint64     `json:"fencing_token"`
	Created           string     `json:"created"`
	Updated           string     `json:"updated"`
}

func (r runDoc) last() stateDoc { return r.StateHistory[len(r.StateHistory)-1] }

func (b *testBundle) newRun(t testing.TB, body map[string]any) runDoc {
	t.Helper()
	return decode[runDoc](t, b.do(t, "POST", runsPath+"/", body).want(t, http.StatusCreated))
}

func (b *testBundle) setState(t testing.TB, id, state string) runDoc {
	t.Helper()
	return decode[runDoc](t, b.do(t, "POST", runsPath+"/"+id+"/set_state", map[string]any{"state": state}).want(t, http.StatusOK))
}

func (b *testBundle) readRun(t testing.TB, id string) runDoc {
	t.Helper()
	return decode[runDoc](t, b.do(t, "GET", runsPath+"/"+id, nil).want(t, http.StatusOK))
}

func (b *testBundle) waitRun(t testing.TB, id, state string, timeout float64) runDoc {
	t.Helper()
	return decode[runDoc](t, b.do(t, "GET", fmt.Sprintf("%s/%s/wait?state=%s&timeout_seconds=%g", runsPath, id, state, timeout), nil).want(t, http.StatusOK))
}

// startRun creates a run of kind with tags under parent (empty: none), asks
// it to run and waits until it is Running.
func (b *testBundle) startRun(t testing.TB, kind, parent string, tags []string) runDoc {
	t.Helper()
	body := map[string]any{"kind": kind, "tags": tags}
	if parent != "" {
		body["parent_id"] = parent
	}
	r := b.newRun(t, body)
	b.setState(t, r.ID, "Running")
	got := b.waitRun(t, r.ID, "Running", 10)
	if got.State != "Running" {
		t.Fatalf("run %v: %s, want Running (%+v)", tags, got.State, got.StateHistory)
	}
	return got
}

// maxRunning computes, from the recorded state histories alone, the most
// runs that were Running at the same moment.
func maxRunning(t testing.TB, runs []runDoc) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, r := range runs {
		for i, e := range r.StateHistory {
			if e.State != "Running" {
				continue
			}
			es = append(es, edge{parseTime(t, e.Timestamp), 1})
			if i+1 < len(r.StateHistory) {
				es = append(es, edge{parseTime(t, r.StateHistory[i+1].Timestamp), -1})
			}
		}
	}
	// A slot handed on in one step ends and starts at the same moment.
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

// TestTenDatabaseRunsUnderALimitOfThree is the first scenario: ten
// task runs tagged database under a limit of 3 never have more than 3
// Running, by their recorded state histories, and all complete.
func TestTenDatabaseRunsUnderALimitOfThree(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "database", 3)
	var ids []string
	for range 10 {
		r := b.newRun(t, map[string]any{"kind": "task", "name": "query", "tags": []string{"database"}})
		b.setState(t, r.ID, "Running")
		ids = append(ids, r.ID)
	}
	if l := b.readTag(t, "database"); len(l.ActiveSlots) != 3 || l.Waiting != 7 {
		t.Fatalf("database: %d running, %d waiting; want 3 and 7", len(l.ActiveSlots), l.Waiting)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.send(context.Background(), runsPath+"/"+id+"/wait", map[string]any{"state": "Running", "timeout_seconds": 30})
			if err != nil || r.status != 200 || !strings.Contains(string(r.body), `"state":"Running"`) {
				errs <- fmt.Errorf("wait for %s: %v %d %s", id, err, r.status, r.body)
				return
			}
			time.Sleep(20 * time.Millisecond) // the work
			if r, err := b.send(context.Background(), runsPath+"/"+id+"/heartbeat", map[string]any{}); err != nil || r.status != 204 {
				errs <- fmt.Errorf("heartbeat %s: %v %d", id, err, r.status)
			}
			if r, err := b.send(context.Background(), runsPath+"/"+id+"/set_state", map[string]any{"state": "Completed"}); err != nil || r.status != 200 {
				errs <- fmt.Errorf("complete %s: %v %d %s", id, err, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	runs := decode[[]runDoc](t, b.do(t, "POST", runsPath+"/filter", map[string]any{"tag": "database"}).want(t, 200))
	if len(runs) != 10 {
		t.Fatalf("filter by tag: %d runs, want 10", len(runs))
	}
	for _, r := range runs {
		var got []string
		for _, e := range r.StateHistory {
			got = append(got, e.State)
		}
		if r.State != "Completed" || got[0] != "Pending" || got[len(got)-1] != "Completed" || !slices.Contains(got, "Running") {
			t.Errorf("run %s: history %v, want Pending … Running, Completed", r.ID, got)
		}
	}
	if n := maxRunning(t, runs); n != 3 {
		t.Errorf("at most %d runs were Running at once, want 3", n)
	}
}

func TestRunNeedsRoomOnBothTags(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "database", 1)
	b.createTag(t, "analytics", 1)
	db := b.startRun(t, "task", "", []string{"database"})
	an := b.startRun(t, "task", "", []string{"analytics"})
	both := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"database", "analytics"}})
	if r := b.setState(t, both.ID, "Running"); r.State != "AwaitingConcurrencySlot" || r.last().Message != `waiting for a slot of tags "database", "analytics"` {
		t.Fatalf("both tags full: %s %q", r.State, r.last().Message)
	}
	b.setState(t, db.ID, "Completed")
	if r := b.waitRun(t, both.ID, "Running", 0.2); r.State != "AwaitingConcurrencySlot" {
		t.Fatalf("analytics still full: %s, want AwaitingConcurrencySlot", r.State)
	}
	if l := b.readTag(t, "database"); len(l.ActiveSlots) != 0 {
		t.Errorf("database held by %v while the run waits for analytics (all or nothing)", l.ActiveSlots)
	}
	b.setState(t, an.ID, "Completed")
	if r := b.waitRun(t, both.ID, "Running", 10); r.State != "Running" {
		t.Fatalf("both free: %s, want Running", r.State)
	}
}

// TestNestedRunsShareTheParentsSlot is the deadlock Prefect users hit: a
// parent and a child task under the same tag with a limit of 1.
func TestNestedRunsShareTheParentsSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "x", 1)
	flow := b.startRun(t, "flow", "", nil)
	parent := b.startRun(t, "task", flow.ID, []string{"x"})
	child := b.startRun(t, "task", parent.ID, []string{"x"})
	if msg := child.last().Message; !strings.Contains(msg, parent.ID) {
		t.Errorf("child's Running message %q does not name the parent", msg)
	}
	otherFlow := b.startRun(t, "flow", "", nil)
	other := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"x"}, "parent_id": otherFlow.ID})
	if r := b.setState(t, other.ID, "Running"); r.State != "AwaitingConcurrencySlot" {
		t.Fatalf("another flow's task: %s, want AwaitingConcurrencySlot", r.State)
	}
	b.setState(t, child.ID, "Completed")
	if r := b.waitRun(t, other.ID, "Running", 0.2); r.State != "AwaitingConcurrencySlot" {
		t.Fatalf("after the child completed: %s, want still waiting for the parent", r.State)
	}
	b.setState(t, parent.ID, "Completed")
	if r := b.waitRun(t, other.ID, "Running", 10); r.State != "Running" {
		t.Fatalf("after the parent completed: %s, want Running", r.State)
	}
	inFlow := decode[[]runDoc](t, b.do(t, "POST", runsPath+"/filter", map[string]any{"flow_run_id": flow.ID}).want(t, 200))
	if len(inFlow) != 2 || inFlow[0].ID != parent.ID || inFlow[1].ID != child.ID {
		t.Errorf("runs of the flow: %+v, want the parent and the child", inFlow)
	}
}

// TestRunWhoseHeartbeatsStopCrashes: a process killed mid-run stops
// heartbeating; its run is Crashed within its lease duration and its slot
// goes to the next run.
func TestRunWhoseHeartbeatsStopCrashes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "db", 1)
	dying := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"db"}, "lease_duration": 1})
	b.setState(t, dying.ID, "Running")
	b.do(t, "POST", runsPath+"/"+dying.ID+"/heartbeat", nil).want(t, http.StatusNoContent)
	killed := time.Now()
	next := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"db"}})
	b.setState(t, next.ID, "Running")
	got := b.waitRun(t, next.ID, "Running", 10)
	if got.State != "Running" {
		t.Fatalf("next run: %s, want Running", got.State)
	}
	if waited := time.Since(killed); waited > 1500*time.Millisecond {
		t.Errorf("the slot came back after %v, want within the 1 s lease", waited)
	}
	dead := b.readRun(t, dying.ID)
	if dead.State != "Crashed" || dead.last().Message != "lease expired: no heartbeat for 1s" {
		t.Errorf("dead run: %s %q, want Crashed", dead.State, dead.last().Message)
	}
	if !parseTime(t, dead.last().Timestamp).Equal(parseTime(t, got.StateHistory[len(got.StateHistory)-1].Timestamp)) {
		t.Errorf("crash at %s, next run started at %s: want the same moment", dead.last().Timestamp, got.last().Timestamp)
	}
	p := b.do(t, "POST", runsPath+"/"+dying.ID+"/heartbeat", nil).wantProblem(t, http.StatusGone, "run_finished", "")
	if !strings.Contains(p.Detail, "Crashed") {
		t.Errorf("detail %q does not say the run crashed", p.Detail)
	}
	b.do(t, "POST", runsPath+"/"+dying.ID+"/set_state", map[string]any{"state": "Completed"}).wantProblem(t, http.StatusConflict, "invalid_transition", "")
}

func TestRunAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := uuid.NewString()
	created := b.newRun(t, map[string]any{"id": id, "kind": "task", "name": "etl", "tags": []string{"a", "b", "a"},
		"collision_strategy": "enqueue", "lease_duration": 30})
	want := runDoc{ID: id, Kind: "task", Name: "etl", Tags: []string{"a", "b"}, Limits: []string{}, Slots: 1, State: "Pending",
		StateHistory: []stateDoc{{State: "Pending"}}, CollisionStrategy: "enqueue", LeaseDuration: 30}
	ignore := func(r runDoc) runDoc {
		r.Created, r.Updated = "", ""
		r.StateHistory = slices.Clone(r.StateHistory)
		for i := range r.StateHistory {
			r.StateHistory[i].Timestamp = ""
		}
		return r
	}
	if d := cmp.Diff(want, ignore(created)); d != "" {
		t.Errorf("created run (-want +got):\n%s", d)
	}
	if d := cmp.Diff(created, b.readRun(t, id)); d != "" {
		t.Errorf("read run (-want +got):\n%s", d)
	}
	b.do(t, "POST", runsPath+"/", map[string]any{"id": id, "kind": "task"}).wantProblem(t, http.StatusConflict, "run_exists", "")
	running := b.setState(t, id, "Running")
	if running.LeaseID == nil || running.FencingToken == 0 || running.State != "Running" {
		t.Errorf("running run %+v, want a lease and a fencing token", running)
	}
	lease := decode[leaseDoc](t, b.do(t, "GET", v2+"/leases/"+*running.LeaseID, nil).want(t, 200))
	if lease.Holder == nil || lease.Holder.Type != "task_run" || lease.Holder.ID != id {
		t.Errorf("the run's lease holder %+v", lease.Holder)
	}
	b.do(t, "POST", runsPath+"/"+id+"/heartbeat", nil).want(t, http.StatusNoContent)
	r := decode[runDoc](t, b.do(t, "POST", runsPath+"/"+id+"/set_state", map[string]any{"state": "Failed", "message": "boom"}).want(t, 200))
	if r.State != "Failed" || r.last().Message != "boom" {
		t.Errorf("failed run %s %q", r.State, r.last().Message)
	}
	b.do(t, "POST", runsPath+"/"+id+"/set_state", map[string]any{"state": "Failed"}).want(t, 200) // same state: nothing changes
	b.do(t, "GET", v2+"/leases/"+*running.LeaseID, nil).want(t, http.StatusGone)

	cancelNew := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"one"}, "collision_strategy": "cancel_new"})
	b.createTag(t, "one", 1)
	b.startRun(t, "task", "", []string{"one"})
	if r := b.setState(t, cancelNew.ID, "Running"); r.State != "Cancelled" {
		t.Errorf("cancel_new run with its tag full: %s", r.State)
	}
	b.createTag(t, "zero", 0)
	zero := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"zero"}})
	if r := b.setState(t, zero.ID, "Running"); r.State != "Failed" || !strings.Contains(r.last().Message, `tag "zero" is 0`) {
		t.Errorf("run on a tag limited to 0: %s %q", r.State, r.last().Message)
	}

	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		code, field  string
	}{
		{"GET", runsPath + "/" + uuid.NewString(), nil, 404, "run_not_found", ""},
		{"GET", runsPath + "/nope", nil, 422, "invalid_field", "id"},
		{"POST", runsPath + "/", map[string]any{"kind": "job"}, 422, "invalid_field", "kind"},
		{"POST", runsPath + "/", map[string]any{"name": "x"}, 422, "invalid_field", "kind"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "tags": []string{"a/b"}}, 422, "invalid_field", "tags"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "tags": []string{"a*"}}, 422, "invalid_field", "tags"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "parent_id": uuid.NewString()}, 422, "invalid_field", "parent_id"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "lease_duration": 0.5}, 422, "invalid_field", "lease_duration"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "collision_strategy": "queue"}, 422, "invalid_field", "collision_strategy"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "state": "Running"}, 422, "unknown_field", "state"},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "name": strings.Repeat("n", 513)}, 422, "invalid_field", "name"},
		{"POST", runsPath + "/" + id + "/set_state", map[string]any{"state": "Pending"}, 422, "invalid_field", "state"},
		{"POST", runsPath + "/" + id + "/set_state", map[string]any{"state": "Completed"}, 409, "invalid_transition", ""},
		{"POST", runsPath + "/" + uuid.NewString() + "/set_state", map[string]any{"state": "Running"}, 404, "run_not_found", ""},
		{"POST", runsPath + "/" + id + "/heartbeat", nil, 410, "run_finished", ""},
		{"POST", runsPath + "/" + uuid.NewString() + "/heartbeat", nil, 404, "run_not_found", ""},
		{"GET", runsPath + "/" + id + "/wait?state=Pending", nil, 422, "invalid_field", "state"},
		{"GET", runsPath + "/" + id + "/wait?timeout_seconds=NaN", nil, 422, "invalid_field", "timeout_seconds"},
		{"GET", runsPath + "/" + id + "/wait?timeout_seconds=4000", nil, 422, "invalid_field", "timeout_seconds"},
		{"GET", runsPath + "/" + id + "/wait?until=Running", nil, 422, "unknown_field", "until"},
		{"POST", runsPath + "/" + id + "/wait", map[string]any{"timeout_seconds": -1}, 422, "invalid_field", "timeout_seconds"},
		{"POST", runsPath + "/filter", map[string]any{"state": "Sleeping"}, 422, "invalid_field", "state"},
		{"POST", runsPath + "/filter", map[string]any{"limit": 201}, 422, "invalid_field", "limit"},
	} {
		b.do(t, tc.method, tc.path, tc.body).wantProblem(t, tc.status, tc.code, tc.field)
	}

	// Filters.
	failed := decode[[]runDoc](t, b.do(t, "POST", runsPath+"/filter", map[string]any{"state": "Failed", "kind": "task"}).want(t, 200))
	if len(failed) != 2 || failed[0].ID != id || failed[1].ID != zero.ID {
		t.Errorf("failed runs %+v, want the two", failed)
	}
	page := decode[[]runDoc](t, b.do(t, "POST", runsPath+"/filter", map[string]any{"limit": 1, "offset": 1}).want(t, 200))
	if len(page) != 1 || page[0].ID != cancelNew.ID {
		t.Errorf("second run: %+v", page)
	}
}

// TestRunEndsWithAnOverLongMessage: a state message over 2,048 bytes, from
// any client, is cut between characters and the run ends; refusing it left
// the run Running until it crashed.
func TestRunEndsWithAnOverLongMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ name, message, want string }{
		{"two-byte characters", strings.Repeat("é", 2000), strings.Repeat("é", 1022) + "…"},
		{"ASCII", strings.Repeat("m", 3000), strings.Repeat("m", 2045) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := b.startRun(t, "task", "", nil)
			got := decode[runDoc](t, b.do(t, "POST", runsPath+"/"+r.ID+"/set_state",
				map[string]any{"state": "Failed", "message": tc.message}).want(t, http.StatusOK))
			if got.State != "Failed" || got.last().Message != tc.want {
				t.Errorf("run %s with a message of %d bytes, want Failed with %d bytes", got.State, len(got.last().Message), len(tc.want))
			}
			if read := b.readRun(t, r.ID); read.last().Message != tc.want {
				t.Errorf("read back a message of %d bytes, want %d", len(read.last().Message), len(tc.want))
			}
		})
	}
}

func TestRunWaitTimesOutWithTheRunAsItIs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "db", 1)
	holder := b.startRun(t, "task", "", []string{"db"})
	r := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"db"}})
	b.setState(t, r.ID, "Running")
	start := time.Now()
	got := decode[runDoc](t, b.do(t, "POST", runsPath+"/"+r.ID+"/wait", map[string]any{"timeout_seconds": 0.2}).want(t, 200))
	if got.State != "AwaitingConcurrencySlot" || time.Since(start) < 200*time.Millisecond {
		t.Errorf("wait that timed out after %v: %s", time.Since(start), got.State)
	}
	// A wait for Completed ends at any final state.
	done := make(chan string, 1)
	go func() {
		resp, err := b.send(context.Background(), runsPath+"/"+holder.ID+"/wait", map[string]any{"state": "Completed", "timeout_seconds": 30})
		var got runDoc
		if err == nil {
			err = json.Unmarshal(resp.body, &got)
		}
		done <- fmt.Sprint(got.State, err)
	}()
	b.setState(t, holder.ID, "Cancelled")
	if got := <-done; got != "Cancelled<nil>" {
		t.Errorf("wait for Completed ended with %s, want Cancelled (a final state)", got)
	}
}

// TestRunTakesLimitsWithItsTags checks, over HTTP, a run that names global
// limits: it waits for its tag's limit and its own limit in one line, holds
// neither while one is full, then holds both (slots of its limit), and a
// name that does not exist is refused when it asks to run.
func TestRunTakesLimitsWithItsTags(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createTag(t, "db", 1)
	b.create(t, map[string]any{"name": "warehouse", "limit": 3})
	g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease",
		map[string]any{"names": []string{"warehouse"}, "slots": 2}).want(t, http.StatusOK))
	r := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"db"}, "limits": []string{"warehouse", "warehouse"}, "slots": 2})
	if !slices.Equal(r.Limits, []string{"warehouse"}) || r.Slots != 2 {
		t.Fatalf("created run: limits %v slots %d, want [warehouse] and 2", r.Limits, r.Slots)
	}
	if got := b.setState(t, r.ID, "Running"); got.State != "AwaitingConcurrencySlot" || got.last().Message != `waiting for a slot of limit "warehouse"` {
		t.Fatalf("warehouse full: %s %q, want waiting for it", got.State, got.last().Message)
	}
	if l := b.readTag(t, "db"); len(l.ActiveSlots) != 0 {
		t.Errorf("db held by %v while the run waits for warehouse: want one wait for both", l.ActiveSlots)
	}
	if w := b.read(t, "warehouse").Waiters; len(w) != 1 || w[0].Slots != 2 {
		t.Errorf("warehouse waiters %+v, want the run for 2 slots", w)
	}
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": g.LeaseID}).want(t, http.StatusNoContent)
	got := b.waitRun(t, r.ID, "Running", 10)
	if got.State != "Running" {
		t.Fatalf("both free: %s, want Running", got.State)
	}
	if l := b.readTag(t, "db"); !slices.Equal(l.ActiveSlots, []string{r.ID}) {
		t.Errorf("db active slots %v, want the run", l.ActiveSlots)
	}
	if w := b.read(t, "warehouse"); w.ActiveSlots != 2 || len(w.Holders) != 1 || w.Holders[0].LeaseID != *got.LeaseID {
		t.Errorf("warehouse: %d active, holders %+v; want the run's lease %s with 2 slots", w.ActiveSlots, w.Holders, *got.LeaseID)
	}

	missing := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"no-limit"}, "limits": []string{"wharehouse"}})
	b.do(t, "POST", runsPath+"/"+missing.ID+"/set_state", map[string]any{"state": "Running"}).wantProblem(t, http.StatusNotFound, "limit_not_found", "")
	if got := b.readRun(t, missing.ID); got.State != "Pending" {
		t.Errorf("run with a missing limit: %s, want still Pending", got.State)
	}
	b.do(t, "POST", runsPath+"/", map[string]any{"kind": "task", "limits": []string{"resource:*"}}).wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "limits")
	b.do(t, "POST", runsPath+"/", map[string]any{"kind": "task", "limits": []string{"x"}, "slots": 0}).wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "slots")
}
