package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
)

// serve sends body to the handler in-process and checks the answer: never
// a 5xx, and every error a well-formed problem. It returns the answer, or
// false if the request outlived ctx (its answer then means nothing).
func serve(t *testing.T, h http.Handler, method, path string, body []byte) (response, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ctx.Err() != nil {
		return response{}, false
	}
	r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	switch {
	case r.status >= 500:
		t.Fatalf("%s %s %q: got %d %s", method, path, body, r.status, r.body)
	case r.status >= 400:
		checkProblem(t, r)
	case len(r.body) > 0 && !json.Valid(r.body):
		t.Fatalf("%s %s %q: got %d with invalid JSON %s", method, path, body, r.status, r.body)
	}
	return r, true
}

func fuzzHandler(f *testing.F) (*coord.Coordinator, http.Handler) {
	c, h, stop := newHandler(f, setupOpts{})
	f.Cleanup(stop)
	return c, h
}

func FuzzCreateLimit(f *testing.F) {
	for _, s := range []string{
		`{"name":"limiter","limit":42}`,
		`{"name":"a","limit":1,"active":false,"active_slots":1,"denied_slots":2,"slot_decay_per_second":0.5}`,
		`{"name":"resource:*","limit":3}`,
		`{"name":"a/b","limit":1}`,
		`{"name":"x","limit":1.0e0,"avg_slot_occupancy_seconds":2}`,
		`{"name":"x","limit":-1}`,
		`{"name":"\u0000","limit":99999999999999999999}`,
		`{"name":null,"limit":null}`,
		`[{"name":"x"}]`,
		`{"name":"x","limit":1}{}`,
		``,
	} {
		f.Add([]byte(s))
	}
	c, h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, ok := serve(t, h, "POST", v2+"/", body)
		if !ok || r.status != http.StatusCreated {
			return
		}
		l := decode[limitDoc](t, r)
		if sema.ValidateName(l.Name) != "" || l.Limit < 0 || l.ActiveSlots < 0 {
			t.Fatalf("created an invalid limit %+v from %q", l, body)
		}
		if _, err := c.DeleteLimit(context.Background(), l.ID); err != nil {
			t.Fatalf("delete %s: %v", l.ID, err)
		}
	})
}

func FuzzPatch(f *testing.F) {
	for _, s := range []string{
		`{"name":"new-name"}`,
		`{"limit":5,"active":false}`,
		`{"active_slots":3,"denied_slots":1,"slot_decay_per_second":2.5}`,
		`{"name":"other"}`,
		`{"name":"a%b"}`,
		`{"limit":1e400}`,
		`{"slot_decay_per_second":-0}`,
		`{"bogus":1}`,
		`{}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	c, h := fuzzHandler(f)
	ctx := context.Background()
	if _, err := c.CreateLimit(ctx, sema.LimitSpec{Name: "other", Limit: 1, Active: true}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		l, err := c.CreateLimit(ctx, sema.LimitSpec{Name: "target-" + uuid.NewString(), Limit: 2, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = c.DeleteLimit(ctx, l.ID.String()) }()
		r, ok := serve(t, h, "PATCH", v2+"/"+l.ID.String(), body)
		if !ok || r.status != http.StatusNoContent {
			return
		}
		if len(r.body) != 0 {
			t.Fatalf("204 with a body %q", r.body)
		}
		got, err := c.ReadLimit(ctx, l.ID.String(), sema.Summary)
		if err != nil {
			t.Fatalf("read after patch %q: %v", body, err)
		}
		if sema.ValidateName(got.Name) != "" || got.Limit.Limit < 0 || got.Limit.Limit > sema.MaxSlots {
			t.Fatalf("patch %q left an invalid limit %+v", body, got)
		}
	})
}

func FuzzIncrementWithLease(f *testing.F) {
	for _, s := range []string{
		`{"names":["a"],"slots":1}`,
		`{"names":["a","b"],"slots":1,"mode":"concurrency","lease_duration":60,"holder":{"type":"flow_run","id":"0d1e2f"}}`,
		`{"names":["b"],"slots":1,"mode":"rate_limit","timeout_seconds":0.5}`,
		`{"names":["t:1"],"slots":2,"holder":{"type":"process","id":"p","metadata":{"host":"h"}},"create_if_missing":true}`,
		`{"names":["t:*"],"slots":1}`,
		`{"names":["a"],"slots":6}`,
		`{"names":["a"],"slots":1,"lease_duration":0.5}`,
		`{"names":["a"],"slots":1,"holder":{"type":"robot","id":""}}`,
		`{"names":["a"],"slots":1,"holder":{"type":"task_run","id":"x","extra":1}}`,
		`{"names":[],"slots":0}`,
		`{"names":"a","slots":"1"}`,
		`{"names":["a\u0001"],"slots":1e9}`,
		`{"names":["missing"],"slots":1,"timeout_seconds":3600}`,
	} {
		f.Add([]byte(s))
	}
	c, h := fuzzHandler(f)
	ctx := context.Background()
	for _, s := range []sema.LimitSpec{
		{Name: "a", Limit: 5, Active: true},
		{Name: "b", Limit: 2, Active: true, SlotDecayPerSecond: 1000},
		{Name: "t:*", Limit: 2, Active: true},
		{Name: "off", Limit: 1},
	} {
		if _, err := c.CreateLimit(ctx, s); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, ok := serve(t, h, "POST", v2+"/increment-with-lease", body)
		if !ok || r.status != http.StatusOK {
			return
		}
		g := decode[grantDoc](t, r)
		id, err := uuid.Parse(g.LeaseID)
		if err != nil || g.Limits == nil || g.FencingToken == 0 || !strings.HasSuffix(g.Expires, "Z") {
			t.Fatalf("grant %s from %q", r.body, body)
		}
		// Give the slots back so that the next input finds room.
		if _, err := c.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzCreateRun(f *testing.F) {
	for _, s := range []string{
		`{"kind":"task","name":"q","tags":["db","api"]}`,
		`{"kind":"flow","tags":["gpu"],"collision_strategy":"cancel_new","lease_duration":2.5}`,
		`{"kind":"task","id":"6a0f1e34-77a5-4c2b-9f5f-0d6b0a5b8c11","parent_id":"6a0f1e34-77a5-4c2b-9f5f-0d6b0a5b8c12"}`,
		`{"kind":"task","tags":["a/b"]}`,
		`{"kind":"task","tags":["x*"]}`,
		`{"kind":"task","tags":[""]}`,
		`{"kind":"job"}`,
		`{"kind":"task","lease_duration":1e400}`,
		`{"kind":"task","name":"\u0000\ud800"}`,
		`{"kind":"task","tags":null,"name":null}`,
		`{"kind":"task","state":"Running"}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	c, h := fuzzHandler(f)
	ctx := context.Background()
	if _, _, err := c.UpsertTagLimit(ctx, sema.KindTask, "db", 1); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, ok := serve(t, h, "POST", "/api/runs/", body)
		if !ok || r.status != http.StatusCreated {
			return
		}
		run := decode[runDoc](t, r)
		if run.State != "Pending" || (run.Kind != "task" && run.Kind != "flow") || len(run.StateHistory) != 1 {
			t.Fatalf("created %s from %q", r.body, body)
		}
		kind, _ := sema.ParseRunKind(run.Kind)
		for _, tag := range run.Tags {
			if why := sema.ValidateTag(kind, tag); why != "" {
				t.Fatalf("created a run with tag %q (%s) from %q", tag, why, body)
			}
		}
		for _, state := range []string{"Running", "Completed"} {
			if r, _ := serve(t, h, "POST", "/api/runs/"+run.ID+"/set_state", []byte(`{"state":"`+state+`"}`)); r.status != http.StatusOK {
				t.Fatalf("set %s: %d %s", state, r.status, r.body)
			}
		}
	})
}
