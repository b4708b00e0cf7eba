package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestTemplateCreatedLimitsDoNotPileUp: 2,000 resource:N acquired and
// released over HTTP leave only their template once its idle time (1 s
// here) has passed.
func TestTemplateCreatedLimitsDoNotPileUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tmpl := b.create(t, map[string]any{"name": "resource:*", "limit": 1, "idle_seconds": 1})
	if tmpl.IdleSeconds == nil || *tmpl.IdleSeconds != 1 {
		t.Fatalf("template idle_seconds %v, want 1", tmpl.IdleSeconds)
	}
	const n = 2000
	for i := range n {
		l := decode[leaseDoc](t, b.do(t, "POST", v2+"/increment-with-lease",
			map[string]any{"names": []string{fmt.Sprintf("resource:%d", i)}, "slots": 1}).want(t, 200))
		b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": l.LeaseID}).want(t, 204)
	}
	poll(t, "the created limits to be removed", func() bool {
		got := decode[[]limitDoc](t, b.do(t, "POST", v2+"/filter", map[string]any{"limit": 10}).want(t, 200))
		return len(got) == 1 && got[0].Name == "resource:*"
	})
	b.do(t, "GET", v2+"/resource:1999", nil).wantProblem(t, http.StatusNotFound, "limit_not_found", "")
}

func TestIdleSecondsOnlyOnTemplates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if got := b.create(t, map[string]any{"name": "tenant:*", "limit": 1}).IdleSeconds; got == nil || *got != 3600 {
		t.Errorf("template default idle_seconds %v, want 3600", got)
	}
	b.do(t, "POST", v2+"/", map[string]any{"name": "plain", "limit": 1, "idle_seconds": 5}).
		wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "idle_seconds")
	if got := b.create(t, map[string]any{"name": "plain", "limit": 1}).IdleSeconds; got != nil {
		t.Errorf("plain limit idle_seconds %v, want none", *got)
	}
	b.do(t, "PATCH", v2+"/plain", map[string]any{"idle_seconds": 5}).
		wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "idle_seconds")
	b.do(t, "PATCH", v2+"/tenant:*", map[string]any{"idle_seconds": 0}).want(t, 204)
	if got := b.read(t, "tenant:*").IdleSeconds; got == nil || *got != 0 {
		t.Errorf("idle_seconds after PATCH %v, want 0", got)
	}
	b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"tenant:1"}, "slots": 1}).want(t, 200)
	if got := b.read(t, "tenant:1"); !got.FromTemplate || got.IdleSeconds == nil || *got.IdleSeconds != 0 {
		t.Errorf("created limit from_template %v idle_seconds %v, want true 0", got.FromTemplate, got.IdleSeconds)
	}
}

func TestDeleteLimitsMatchingAPattern(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "resource:*", "limit": 1})
	b.create(t, map[string]any{"name": "keep", "limit": 1})
	lease := decode[leaseDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"resource:0"}, "slots": 1}).want(t, 200))
	for i := 1; i < 5; i++ {
		b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{fmt.Sprintf("resource:%d", i)}, "slots": 1}).want(t, 200)
	}
	for _, body := range []map[string]any{{}, {"pattern": ""}, {"pattern": "*"}} {
		b.do(t, "POST", v2+"/delete", body).wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "pattern")
	}
	type answer struct{ Matched, Deleted int }
	if got := decode[answer](t, b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "resource:*", "dry_run": true}).want(t, 200)); got != (answer{5, 0}) {
		t.Errorf("dry run %+v, want 5 matched, 0 deleted", got)
	}
	if got := decode[answer](t, b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "resource:*"}).want(t, 200)); got != (answer{5, 5}) {
		t.Errorf("delete %+v, want 5 deleted", got)
	}
	var names []string
	for _, l := range decode[[]limitDoc](t, b.do(t, "POST", v2+"/filter", nil).want(t, 200)) {
		names = append(names, l.Name)
	}
	if fmt.Sprint(names) != "[keep resource:*]" {
		t.Errorf("left %v, want keep and the template", names)
	}
	// The held lease was not revoked: it is still there to release.
	b.do(t, "GET", v2+"/leases/"+lease.LeaseID, nil).want(t, 200)
	if got := decode[answer](t, b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "*", "all": true, "templates": true}).want(t, 200)); got != (answer{2, 2}) {
		t.Errorf("delete all %+v, want 2", got)
	}
}

// TestIdleRemovalIsAnEvent: the removal of an idle template-created limit
// shows on /api/events as a limit event, deleted, with reason "idle".
func TestIdleRemovalIsAnEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+"/api/events", nil)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, beats := make(chan sseEvent, 16), make(chan struct{}, 1)
	go readEvents(resp.Body, events, beats)
	b.create(t, map[string]any{"name": "resource:*", "limit": 1, "idle_seconds": 0.2})
	l := decode[leaseDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"resource:9"}, "slots": 1}).want(t, 200))
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": l.LeaseID}).want(t, 204)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("stream ended before the idle removal")
			}
			if e.name == "limit" && e.data["deleted"] == true {
				if e.data["reason"] != "idle" || fmt.Sprint(e.data["limits"]) != "[resource:9]" {
					t.Errorf("deletion event %v, want resource:9 deleted as idle", e.data)
				}
				return
			}
		case <-deadline:
			t.Fatal("no idle removal event within 10 s")
		}
	}
}
