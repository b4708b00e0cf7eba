package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/store/memstore"
)

// send posts body without touching t, for use from other goroutines.
func (b *testBundle) send(ctx context.Context, path string, body any) (response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return response{}, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", b.srv.URL+path, bytes.NewReader(data))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: out}, err
}

type sent struct {
	r   response
	err error
}

// waitInLine starts a waiting increment-with-lease for holder id and
// returns where its answer will arrive.
func (b *testBundle) waitInLine(name, id string, slots int) <-chan sent {
	ch := make(chan sent, 1)
	go func() {
		r, err := b.send(context.Background(), v2+"/increment-with-lease", map[string]any{"names": []string{name}, "slots": slots,
			"timeout_seconds": 30, "holder": map[string]any{"type": "process", "id": id}})
		ch <- sent{r, err}
	}()
	return ch
}

func granted(t *testing.T, ch <-chan sent) grantDoc {
	t.Helper()
	select {
	case s := <-ch:
		if s.err != nil {
			t.Fatalf("waiting request: %v", s.err)
		}
		return decode[grantDoc](t, s.r.want(t, http.StatusOK))
	case <-time.After(10 * time.Second):
		t.Fatal("waiter was not granted")
	}
	return grantDoc{}
}

func TestWaitersAreServedFirstInFirstOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "one", "limit": 3})
	a := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"one"}, "slots": 2}).want(t, 200))

	first := b.waitInLine("one", "first", 2)
	poll(t, "first in line", func() bool { return b.read(t, "one").Waiting == 1 })
	second := b.waitInLine("one", "second", 1)
	poll(t, "second in line", func() bool { return b.read(t, "one").Waiting == 2 })

	l := b.read(t, "one")
	var line []string
	for i, w := range l.Waiters {
		if w.Position != i+1 || w.Holder == nil {
			t.Fatalf("waiter %d: %+v", i, w)
		}
		line = append(line, w.Holder.ID)
	}
	if diff := cmp.Diff([]string{"first", "second"}, line); diff != "" {
		t.Fatalf("line (-want +got):\n%s", diff)
	}
	// One slot is free, but a newcomer does not pass the people in line.
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"one"}, "slots": 1}).wantProblem(t, http.StatusLocked, "locked", "")

	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": a.LeaseID}).want(t, http.StatusNoContent)
	g1 := granted(t, first)
	g2 := granted(t, second) // 2 + 1 fit in 3: both are let in, in order
	if g1.WaitedSeconds <= 0 || !(a.FencingToken < g1.FencingToken && g1.FencingToken < g2.FencingToken) {
		t.Errorf("got grants %+v then %+v after %+v; want waits > 0 and growing fencing tokens", g1, g2, a)
	}
	if l := b.read(t, "one"); l.Waiting != 0 || l.ActiveSlots != 3 {
		t.Errorf("got waiting %d active %d, want 0 and 3", l.Waiting, l.ActiveSlots)
	}
}

func TestReleaseHandsOffToTheHeadWaiterOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "mutex", "limit": 1})
	a := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"mutex"}, "slots": 1}).want(t, 200))
	first := b.waitInLine("mutex", "first", 1)
	poll(t, "first in line", func() bool { return b.read(t, "mutex").Waiting == 1 })
	second := b.waitInLine("mutex", "second", 1)
	poll(t, "second in line", func() bool { return b.read(t, "mutex").Waiting == 2 })

	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": a.LeaseID}).want(t, http.StatusNoContent)
	g1 := granted(t, first)
	select {
	case s := <-second:
		t.Fatalf("second waiter answered while the first holds the slot: %+v", s)
	default:
	}
	if l := b.read(t, "mutex"); l.Waiting != 1 || l.Waiters[0].Holder.ID != "second" {
		t.Fatalf("got line %+v, want second alone", l.Waiters)
	}
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": g1.LeaseID}).want(t, http.StatusNoContent)
	g2 := granted(t, second)
	if g2.FencingToken <= g1.FencingToken {
		t.Errorf("got fencing token %d after %d", g2.FencingToken, g1.FencingToken)
	}
}

func TestAWaiterThatLeavesGivesUpItsPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "mutex", "limit": 1})
	a := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"mutex"}, "slots": 1}).want(t, 200))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.send(ctx, v2+"/increment-with-lease", map[string]any{"names": []string{"mutex"}, "slots": 1, "timeout_seconds": 30})
		done <- err
	}()
	poll(t, "waiter in line", func() bool { return b.read(t, "mutex").Waiting == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want the request cancelled", err)
	}
	poll(t, "line empty", func() bool { return b.read(t, "mutex").Waiting == 0 })
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": a.LeaseID}).want(t, http.StatusNoContent)
	if got := b.read(t, "mutex").ActiveSlots; got != 0 {
		t.Errorf("got active_slots %d, want 0: the slot went to a caller that left", got)
	}
}

func TestTemplatesCreateLimitsOnFirstUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tpl := b.create(t, map[string]any{"name": "resource:*", "limit": 2})
	if !tpl.Template {
		t.Errorf("got template false for %q", tpl.Name)
	}
	g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"resource:42"}, "slots": 2}).want(t, 200))
	if len(g.Limits) != 1 || g.Limits[0].Name != "resource:42" || g.Limits[0].Limit != 2 {
		t.Errorf("got limits %+v, want resource:42 with limit 2", g.Limits)
	}
	if l := b.read(t, "resource:42"); l.Template || l.ActiveSlots != 2 || len(l.Holders) != 1 || l.Holders[0].LeaseID != g.LeaseID {
		t.Errorf("got %+v", l)
	}
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"resource:*"}, "slots": 1}).wantProblem(t, 422, "template_not_acquirable", "")
}

func TestOperationsRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if got := decode[map[string]string](t, b.do(t, "GET", "/api/health", nil).want(t, 200)); got["status"] != "ok" {
		t.Errorf("health: got %v", got)
	}
	if got := decode[map[string]string](t, b.do(t, "GET", "/api/ready", nil).want(t, 200)); got["status"] != "ok" {
		t.Errorf("ready: got %v", got)
	}
	b.create(t, map[string]any{"name": "l", "limit": 1})
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"l"}, "slots": 1}).want(t, 200)
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"l"}, "slots": 1}).want(t, http.StatusLocked)
	b.do(t, "GET", "/api/nope", nil).want(t, 404)
	b.do(t, "GET", "/api/nope", nil).want(t, 404)
	m := b.do(t, "GET", "/metrics", nil).want(t, 200)
	for _, want := range []string{"allot_grants_total 1",
		`allot_http_requests_total{code="201",route="POST /api/v2/concurrency_limits/{$}"} 1`,
		`allot_http_requests_total{code="200",route="POST /api/v2/concurrency_limits/increment"} 1`,
		`allot_http_requests_total{code="423",route="POST /api/v2/concurrency_limits/increment"} 1`,
		`allot_http_requests_total{code="404",route="unmatched"} 2`,
		`allot_http_request_seconds_count{route="POST /api/v2/concurrency_limits/increment"} 2`,
	} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.body)
		}
	}
	doc := b.do(t, "GET", "/api/openapi.json", nil).want(t, 200)
	if !bytes.Equal(doc.body, httpapi.OpenAPI()) || doc.header.Get("Content-Type") != "application/json" {
		t.Errorf("openapi.json is not the embedded document")
	}
	y := b.do(t, "GET", "/api/openapi.yaml", nil).want(t, 200)
	if !strings.HasPrefix(string(y.body), "openapi: \"3.0.3\"\n") || y.header.Get("Content-Type") != "application/yaml" {
		t.Errorf("openapi.yaml starts %q with Content-Type %q", y.body[:min(40, len(y.body))], y.header.Get("Content-Type"))
	}
}

func TestUnknownRoutesAndMethodsAreProblems(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "GET", "/api/nope", nil).wantProblem(t, 404, "not_found", "")
	b.do(t, "GET", v2+"/a/b", nil).wantProblem(t, 404, "not_found", "")
	r := b.do(t, "POST", v2+"/x", "{}")
	r.wantProblem(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "PATCH") || !strings.Contains(allow, "DELETE") {
		t.Errorf("got Allow %q", allow)
	}
	b.do(t, "GET", v2+"/", nil).wantProblem(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
	// Without the trailing slash the create route answers too.
	b.do(t, "POST", v2, map[string]any{"name": "no-slash", "limit": 1}).want(t, http.StatusCreated)
	b.do(t, "GET", "/metricsx", nil).wantProblem(t, 404, "not_found", "")
}

func TestNotReadyWhenTheStoreFails(t *testing.T) {
	t.Parallel()
	st := memstore.New()
	b := setupWith(t, setupOpts{store: st, runErr: true})
	b.create(t, map[string]any{"name": "l", "limit": 1})
	st.Fail(errors.New("disk on fire"))
	b.do(t, "POST", v2+"/", map[string]any{"name": "m", "limit": 1}).wantProblem(t, http.StatusServiceUnavailable, "unavailable", "")
	b.do(t, "GET", "/api/ready", nil).wantProblem(t, http.StatusServiceUnavailable, "unavailable", "")
	b.do(t, "GET", v2+"/l", nil).wantProblem(t, http.StatusServiceUnavailable, "unavailable", "")
	b.do(t, "GET", "/api/health", nil).want(t, 200)
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data map[string]any
}

// readEvents parses a stream into events and heartbeats until it ends.
func readEvents(r io.Reader, events chan<- sseEvent, beats chan<- struct{}) {
	defer close(events)
	sc := bufio.NewScanner(r)
	var name, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == ": heartbeat":
			select {
			case beats <- struct{}{}:
			default:
			}
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && name != "":
			var m map[string]any
			_ = json.Unmarshal([]byte(data), &m)
			events <- sseEvent{name, m}
			name, data = "", ""
		}
	}
}

func TestEventsStream(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{options: func(o *httpapi.Options) { o.EventHeartbeat = 20 * time.Millisecond }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+"/api/events", nil)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("got Content-Type %q", ct)
	}
	events, beats := make(chan sseEvent, 16), make(chan struct{}, 1)
	go readEvents(resp.Body, events, beats)
	next := func(want string) map[string]any {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("stream ended, want %s", want)
			}
			if e.name != want {
				t.Fatalf("got event %s %v, want %s", e.name, e.data, want)
			}
			return e.data
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event", want)
		}
		return nil
	}

	b.create(t, map[string]any{"name": "l", "limit": 2})
	if d := next("limit"); !cmp.Equal(d["limits"], []any{"l"}) {
		t.Errorf("limit event %v", d)
	}
	g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1,
		"holder": map[string]any{"type": "task_run", "id": "t1"}}).want(t, 200))
	d := next("granted")
	if d["lease_id"] != g.LeaseID || d["fencing_token"] != float64(g.FencingToken) || !cmp.Equal(d["limits"], []any{"l"}) ||
		!cmp.Equal(d["holder"], map[string]any{"type": "task_run", "id": "t1"}) {
		t.Errorf("granted event %v for grant %+v", d, g)
	}
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": g.LeaseID}).want(t, 204)
	if d := next("released"); d["lease_id"] != g.LeaseID {
		t.Errorf("released event %v", d)
	}
	g = decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1, "lease_duration": 1}).want(t, 200))
	next("granted")
	if d := next("expired"); d["lease_id"] != g.LeaseID {
		t.Errorf("expired event %v", d)
	}
	select {
	case <-beats:
	case <-time.After(10 * time.Second):
		t.Error("no heartbeat")
	}
}

// PUT /v2/concurrency_limits/{name} creates a limit (201), changes the
// settings that differ (200) and leaves one that agrees as it is (200),
// refusing a bad request whole.
func TestEnsureLimitRoute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	created := decode[limitDoc](t, b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 2}).want(t, http.StatusCreated))
	if created.Name != "ensured" || created.Limit != 2 || !created.Active {
		t.Fatalf("created %+v, want ensured, limit 2, active", created)
	}
	same := decode[limitDoc](t, b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 2, "name": "ensured"}).want(t, http.StatusOK))
	if diff := cmp.Diff(created, same); diff != "" {
		t.Errorf("an ensure that agrees changed the limit (-before +after):\n%s", diff)
	}
	changed := decode[limitDoc](t, b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 5, "active": false}).want(t, http.StatusOK))
	if changed.ID != created.ID || changed.Limit != 5 || changed.Active {
		t.Errorf("changed %+v, want id %s, limit 5, inactive", changed, created.ID)
	}
	if got := b.read(t, "ensured"); got.Limit != 5 || got.Active {
		t.Errorf("read back %+v, want limit 5, inactive", got)
	}
	b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 1, "name": "other"}).wantProblem(t, 422, "invalid_field", "name")
	b.do(t, "PUT", v2+"/ensured", map[string]any{"active": true}).wantProblem(t, 422, "invalid_field", "limit")
	b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 1, "denied_slots": 1}).wantProblem(t, 422, "unknown_field", "denied_slots")
	b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 1, "idle_seconds": 60}).wantProblem(t, 422, "invalid_field", "idle_seconds")
	if got := b.read(t, "ensured"); got.Limit != 5 {
		t.Errorf("a refused ensure changed the limit to %d", got.Limit)
	}
}

// TestEventsFilterAndRuns checks ?name= and the run events: a stream
// filtered to one limit sees its grants and the runs that take it, and
// nothing of another limit.
func TestEventsFilterAndRuns(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.create(t, map[string]any{"name": "a", "limit": 2})
	b.create(t, map[string]any{"name": "other", "limit": 2})
	req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+"/api/events?name=a&name=tag:etl", nil)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, beats := make(chan sseEvent, 16), make(chan struct{}, 1)
	go readEvents(resp.Body, events, beats)
	next := func() sseEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return sseEvent{}
	}
	b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"other"}, "slots": 1}).want(t, 200)
	b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"a"}, "slots": 1}).want(t, 200)
	if e := next(); e.name != "granted" || !cmp.Equal(e.data["limits"], []any{"a"}) || e.data["at"] == nil {
		t.Errorf("first event %s %v, want the grant on a (the one on other filtered out)", e.name, e.data)
	}
	b.do(t, "POST", "/api/runs/", map[string]any{"kind": "task", "name": "nightly", "tags": []string{"etl"}}).want(t, 201)
	e := next()
	run, _ := e.data["run"].(map[string]any)
	if e.name != "run" || run == nil || run["name"] != "nightly" || run["state"] != "Pending" || !cmp.Equal(e.data["limits"], []any{"tag:etl"}) {
		t.Errorf("run event %s %v", e.name, e.data)
	}
	resp2 := b.do(t, "GET", "/api/events?name=", nil)
	resp2.want(t, 422)
}
