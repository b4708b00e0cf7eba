package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

const (
	v1     = "/api/concurrency_limits"
	labels = "/api/label_limits"
)

// tagLimitDoc is a tag limit (or label limit) as the v1 routes return it.
type tagLimitDoc struct {
	ID               string      `json:"id"`
	Created          string      `json:"created"`
	Updated          string      `json:"updated"`
	Tag              string      `json:"tag"`
	Label            string      `json:"label"`
	ConcurrencyLimit int         `json:"concurrency_limit"`
	ActiveSlots      []string    `json:"active_slots"`
	Active           bool        `json:"active"`
	FencingToken     uint64      `json:"fencing_token"`
	Waiting          int         `json:"waiting"`
	Holders          []holderDoc `json:"holders"`
}

type resetDoc struct {
	Revoked int      `json:"revoked"`
	Granted []string `json:"granted"`
	Refused []string `json:"refused"`
}

func (b *testBundle) createTag(t testing.TB, tag string, limit int) tagLimitDoc {
	t.Helper()
	return decode[tagLimitDoc](t, b.do(t, "POST", v1+"/", map[string]any{"tag": tag, "concurrency_limit": limit}).want(t, http.StatusCreated))
}

func (b *testBundle) readTag(t testing.TB, tag string) tagLimitDoc {
	t.Helper()
	return decode[tagLimitDoc](t, b.do(t, "GET", v1+"/tag/"+tag, nil).want(t, http.StatusOK))
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestPrefectTagScenarios runs the black-box scenarios of Prefect's v1
// tag-limit routes (shared/reference/prefect-concurrency.md §8.2, 44-55)
// against a real server, with allot's fixes (§10) where they differ.
func TestPrefectTagScenarios(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, b *testBundle)
	}{
		{"44 create", func(t *testing.T, b *testBundle) {
			got := b.createTag(t, "dummytag", 42)
			if _, err := uuid.Parse(got.ID); err != nil || got.Tag != "dummytag" || got.ConcurrencyLimit != 42 || got.ActiveSlots == nil || len(got.ActiveSlots) != 0 {
				t.Errorf("created %+v", got)
			}
			if l := b.read(t, "tag:dummytag"); l.ID != got.ID || l.Limit != 42 || !l.Active {
				t.Errorf("v2 tag:dummytag = %+v, want the same limit", l)
			}
		}},
		{"45 create again updates", func(t *testing.T, b *testBundle) {
			first := b.createTag(t, "dummytag", 42)
			got := decode[tagLimitDoc](t, b.do(t, "POST", v1+"/", map[string]any{"tag": "dummytag", "concurrency_limit": 4242}).want(t, http.StatusOK))
			if got.ID != first.ID || got.ConcurrencyLimit != 4242 || !parseTime(t, got.Updated).After(parseTime(t, first.Updated)) {
				t.Errorf("upserted %+v after %+v", got, first)
			}
		}},
		{"46 read by id and by tag", func(t *testing.T, b *testBundle) {
			l := b.createTag(t, "dummytag", 1)
			byID := decode[tagLimitDoc](t, b.do(t, "GET", v1+"/"+l.ID, nil).want(t, 200))
			byTag := b.readTag(t, "dummytag")
			if byID.ID != l.ID || byTag.ID != l.ID || len(byTag.ActiveSlots) != 0 {
				t.Errorf("by id %+v, by tag %+v", byID, byTag)
			}
			for _, path := range []string{v1 + "/" + uuid.NewString(), v1 + "/not-a-uuid", v1 + "/tag/nope"} {
				p := b.do(t, "GET", path, nil).wantProblem(t, 404, "limit_not_found", "")
				if p.Detail != "Concurrency limit not found" {
					t.Errorf("GET %s: detail %q, want Prefect's v1 text", path, p.Detail)
				}
			}
			// A limit that is not a tag's is not one here.
			v := b.create(t, map[string]any{"name": "plain", "limit": 1})
			b.do(t, "GET", v1+"/"+v.ID, nil).want(t, 404)
		}},
		{"47 reset with overrides, then without", func(t *testing.T, b *testBundle) {
			b.createTag(t, "dummytag", 4242)
			var ids []string
			for range 50 {
				ids = append(ids, uuid.NewString())
			}
			res := decode[resetDoc](t, b.do(t, "POST", v1+"/tag/dummytag/reset", map[string]any{"slot_override": ids}).want(t, 200))
			if len(res.Granted) != 50 || len(res.Refused) != 0 {
				t.Errorf("reset granted %d refused %d, want 50 and 0", len(res.Granted), len(res.Refused))
			}
			if d := cmp.Diff(sorted(ids), sorted(b.readTag(t, "dummytag").ActiveSlots)); d != "" {
				t.Errorf("active_slots after the reset (-want +got):\n%s", d)
			}
			res = decode[resetDoc](t, b.do(t, "POST", v1+"/tag/dummytag/reset", nil).want(t, 200))
			if res.Revoked != 50 {
				t.Errorf("reset without a body revoked %d, want 50", res.Revoked)
			}
			if l := b.readTag(t, "dummytag"); len(l.ActiveSlots) != 0 || b.read(t, "tag:dummytag").ActiveSlots != 0 {
				t.Errorf("after the reset: %+v, want no slots taken (holders and counter agree)", l)
			}
		}},
		{"48 increment and decrement", func(t *testing.T, b *testBundle) {
			b.createTag(t, "tag1", 2)
			b.createTag(t, "tag2", 2)
			run := uuid.NewString()
			body := map[string]any{"names": []string{"tag1", "tag2", "does-not-exist"}, "task_run_id": run}
			got := decode[[]minimalDoc](t, b.do(t, "POST", v1+"/increment", body).want(t, 200))
			if len(got) != 2 || got[0].Name != "tag1" || got[1].Name != "tag2" {
				t.Errorf("increment answered %+v, want tag1 and tag2 by their bare names", got)
			}
			for _, tag := range []string{"tag1", "tag2"} {
				if d := cmp.Diff([]string{run}, b.readTag(t, tag).ActiveSlots); d != "" {
					t.Errorf("%s active_slots (-want +got):\n%s", tag, d)
				}
			}
			got = decode[[]minimalDoc](t, b.do(t, "POST", v1+"/decrement", body).want(t, 200))
			if len(got) != 2 || got[0].Name != "tag1" {
				t.Errorf("decrement answered %+v, want the same bare names as increment", got)
			}
			for _, tag := range []string{"tag1", "tag2"} {
				if l := b.readTag(t, tag); len(l.ActiveSlots) != 0 {
					t.Errorf("%s active_slots after decrement: %v", tag, l.ActiveSlots)
				}
			}
		}},
		{"49 full tag is 423 with Retry-After", func(t *testing.T, b *testBundle) {
			b.createTag(t, "tag1", 2)
			b.createTag(t, "tag2", 2)
			for range 2 {
				b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"tag1"}, "task_run_id": uuid.NewString()}).want(t, 200)
			}
			run := uuid.NewString()
			r := b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"tag1", "tag2", "x"}, "task_run_id": run})
			p := r.wantProblem(t, http.StatusLocked, "locked", "")
			if ra := retryAfter(t, r); ra != 10 {
				t.Errorf("Retry-After %v, want the tag wait, 10", ra)
			}
			if !strings.Contains(p.Detail, "Concurrency limit for the tag1 tag has been reached") {
				t.Errorf("detail %q", p.Detail)
			}
			for _, tag := range []string{"tag1", "tag2"} {
				if slices.Contains(b.readTag(t, tag).ActiveSlots, run) {
					t.Errorf("refused run holds a slot of %s", tag)
				}
			}
		}},
		{"50 zero limit is 423 without Retry-After", func(t *testing.T, b *testBundle) {
			b.createTag(t, "zero", 0)
			b.createTag(t, "tag1", 2)
			r := b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"tag1", "zero"}, "task_run_id": uuid.NewString()})
			p := r.wantProblem(t, http.StatusLocked, "limit_zero", "")
			if r.header.Get("Retry-After") != "" {
				t.Errorf("Retry-After %q on a zero limit, want none", r.header.Get("Retry-After"))
			}
			if want := `The concurrency limit on tag "zero" is 0 and will deadlock if the task tries to run again.`; p.Detail != want {
				t.Errorf("detail %q, want %q", p.Detail, want)
			}
			if l := b.readTag(t, "tag1"); len(l.ActiveSlots) != 0 {
				t.Errorf("a slot was taken: %v", l.ActiveSlots)
			}
		}},
		{"51 only unknown tags", func(t *testing.T, b *testBundle) {
			body := map[string]any{"names": []string{"nope"}, "task_run_id": uuid.NewString()}
			for _, path := range []string{v1 + "/increment", v1 + "/decrement"} {
				if got := decode[[]minimalDoc](t, b.do(t, "POST", path, body).want(t, 200)); len(got) != 0 {
					t.Errorf("%s: %+v, want []", path, got)
				}
			}
		}},
		{"52 active_slots are the holders", func(t *testing.T, b *testBundle) {
			b.createTag(t, "lease-test", 3)
			runs := []string{uuid.NewString(), uuid.NewString()}
			for _, run := range runs {
				b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"lease-test"}, "task_run_id": run}).want(t, 200)
			}
			l := b.readTag(t, "lease-test")
			if d := cmp.Diff(sorted(runs), sorted(l.ActiveSlots)); d != "" {
				t.Errorf("active_slots (-want +got):\n%s", d)
			}
			// Unlike Prefect's, they are leases with a real expiry (an hour).
			if len(l.Holders) != 2 || parseTime(t, l.Holders[0].Expires).After(time.Now().Add(61*time.Minute)) {
				t.Errorf("holders %+v, want two leases of an hour", l.Holders)
			}
		}},
		{"53 filter lists tag limits only, paged among themselves", func(t *testing.T, b *testBundle) {
			// Names that sort before "tag:" must not crowd the page out.
			for _, n := range []string{"a", "deployment:1", "label:x"} {
				b.create(t, map[string]any{"name": n, "limit": 20})
			}
			b.createTag(t, "v2-filter", 10)
			b.createTag(t, "w", 1)
			got := decode[[]tagLimitDoc](t, b.do(t, "POST", v1+"/filter", map[string]any{"limit": 1}).want(t, 200))
			if len(got) != 1 || got[0].Tag != "v2-filter" || got[0].ConcurrencyLimit != 10 {
				t.Errorf("first page %+v, want v2-filter", got)
			}
			got = decode[[]tagLimitDoc](t, b.do(t, "POST", v1+"/filter", map[string]any{"limit": 100, "offset": 1}).want(t, 200))
			if len(got) != 1 || got[0].Tag != "w" {
				t.Errorf("second page %+v, want w", got)
			}
			if got := decode[[]tagLimitDoc](t, b.do(t, "POST", v1+"/filter", nil).want(t, 200)); len(got) != 2 {
				t.Errorf("filter without a body: %d limits, want 2", len(got))
			}
			b.do(t, "POST", v1+"/filter", map[string]any{"limit": 201}).wantProblem(t, 422, "invalid_field", "limit")
		}},
		{"54 delete by tag and by id", func(t *testing.T, b *testBundle) {
			b.createTag(t, "gone", 2)
			b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"gone"}, "task_run_id": uuid.NewString()}).want(t, 200)
			r := b.do(t, "DELETE", v1+"/tag/gone", nil).want(t, 200)
			if strings.TrimSpace(string(r.body)) != "null" {
				t.Errorf("delete answered %s, want null", r.body)
			}
			b.do(t, "GET", v1+"/tag/gone", nil).wantProblem(t, 404, "limit_not_found", "")
			b.do(t, "DELETE", v1+"/tag/gone", nil).wantProblem(t, 404, "limit_not_found", "")
			l := b.createTag(t, "byid", 2)
			b.do(t, "DELETE", v1+"/"+l.ID, nil).want(t, 200)
			b.do(t, "GET", v1+"/"+l.ID, nil).want(t, 404)
		}},
		{"55 reset of 150 holders", func(t *testing.T, b *testBundle) {
			b.createTag(t, "many", 200)
			var ids []string
			for range 150 {
				ids = append(ids, uuid.NewString())
			}
			b.do(t, "POST", v1+"/tag/many/reset", map[string]any{"slot_override": ids}).want(t, 200)
			if n := len(b.readTag(t, "many").ActiveSlots); n != 150 {
				t.Fatalf("%d active slots, want 150", n)
			}
			res := decode[resetDoc](t, b.do(t, "POST", v1+"/tag/many/reset", map[string]any{"slot_override": []string{}}).want(t, 200))
			if l := b.readTag(t, "many"); res.Revoked != 150 || len(l.ActiveSlots) != 0 || b.read(t, "tag:many").ActiveSlots != 0 {
				t.Errorf("after reset: revoked %d, %d active slots, want 150 and 0", res.Revoked, len(l.ActiveSlots))
			}
		}},
		{"reset gives overrides only what fits, after the line", func(t *testing.T, b *testBundle) {
			b.createTag(t, "small", 1)
			holder := b.startRun(t, "task", "", []string{"small"})
			waiting := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"small"}})
			b.setState(t, waiting.ID, "Running")
			o1, o2 := uuid.NewString(), uuid.NewString()
			res := decode[resetDoc](t, b.do(t, "POST", v1+"/tag/small/reset", map[string]any{"slot_override": []string{o1, o2}}).want(t, 200))
			if d := cmp.Diff(resetDoc{Revoked: 1, Granted: []string{}, Refused: []string{o1, o2}}, res); d != "" {
				t.Errorf("reset (-want +got):\n%s", d)
			}
			if r := b.readRun(t, holder.ID); r.State != "Crashed" || r.StateHistory[len(r.StateHistory)-1].Message != "slot revoked by reset" {
				t.Errorf("run whose slot was revoked: %s %+v", r.State, r.StateHistory)
			}
			if r := b.readRun(t, waiting.ID); r.State != "Running" {
				t.Errorf("run waiting at the reset: %s, want Running", r.State)
			}
			b.do(t, "POST", "/api/runs/"+holder.ID+"/heartbeat", nil).wantProblem(t, http.StatusGone, "run_finished", "")
		}},
		{"bad input is 4xx", func(t *testing.T, b *testBundle) {
			for _, tc := range []struct {
				body  any
				code  string
				field string
			}{
				{map[string]any{"tag": "a/b", "concurrency_limit": 1}, "invalid_field", "tag"},
				{map[string]any{"tag": "", "concurrency_limit": 1}, "invalid_field", "tag"},
				{map[string]any{"tag": "x", "concurrency_limit": -1}, "invalid_field", "concurrency_limit"},
				{map[string]any{"tag": "x"}, "invalid_field", "concurrency_limit"},
				{map[string]any{"tag": "x", "concurrency_limit": 1, "active": true}, "unknown_field", "active"},
				{map[string]any{"tag": strings.Repeat("t", 510), "concurrency_limit": 1}, "invalid_field", "tag"},
				// A tag never contains '*': "db*" once made the template tag:db*.
				{map[string]any{"tag": "db*", "concurrency_limit": 1}, "invalid_field", "tag"},
			} {
				b.do(t, "POST", v1+"/", tc.body).wantProblem(t, 422, tc.code, tc.field)
			}
			b.do(t, "POST", labels+"/", map[string]any{"label": "gpu-*", "concurrency_limit": 1}).wantProblem(t, 422, "invalid_field", "label")
			for _, name := range []string{"tag:db*", "label:gpu-*"} {
				b.do(t, "GET", v2+"/"+name, nil).wantProblem(t, 404, "limit_not_found", "")
			}
			b.createTag(t, "x", 1)
			b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"x"}, "task_run_id": "nope"}).wantProblem(t, 422, "invalid_field", "task_run_id")
			b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"a/b"}, "task_run_id": uuid.NewString()}).wantProblem(t, 422, "invalid_field", "names")
			// A tag never contains '*', by the one rule of tags (it was
			// template_not_acquirable while two validators disagreed).
			b.do(t, "POST", v1+"/increment", map[string]any{"names": []string{"x*"}, "task_run_id": uuid.NewString()}).wantProblem(t, 422, "invalid_field", "names")
			b.do(t, "POST", v1+"/tag/x/reset", map[string]any{"slot_override": []string{"nope"}}).wantProblem(t, 422, "invalid_field", "slot_override")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, setup(t))
		})
	}
}

// TestLabelLimits checks that label limits are the tag-limit API for flow
// runs' labels, kept apart from tag limits.
func TestLabelLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := decode[tagLimitDoc](t, b.do(t, "POST", labels+"/", map[string]any{"label": "gpu", "concurrency_limit": 1}).want(t, http.StatusCreated))
	if l.Label != "gpu" || l.Tag != "" || l.ConcurrencyLimit != 1 {
		t.Fatalf("created %+v", l)
	}
	b.createTag(t, "gpu", 5) // a tag of the same name is another limit
	flow := b.startRun(t, "flow", "", []string{"gpu"})
	task := b.startRun(t, "task", flow.ID, []string{"gpu"})
	got := decode[tagLimitDoc](t, b.do(t, "GET", labels+"/label/gpu", nil).want(t, 200))
	if d := cmp.Diff([]string{flow.ID}, got.ActiveSlots); d != "" {
		t.Errorf("label active_slots (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{task.ID}, b.readTag(t, "gpu").ActiveSlots); d != "" {
		t.Errorf("tag active_slots (-want +got):\n%s", d)
	}
	second := b.newRun(t, map[string]any{"kind": "flow", "tags": []string{"gpu"}})
	if r := b.setState(t, second.ID, "Running"); r.State != "AwaitingConcurrencySlot" {
		t.Errorf("second flow run with the label full: %s", r.State)
	}
	list := decode[[]tagLimitDoc](t, b.do(t, "POST", labels+"/filter", nil).want(t, 200))
	if len(list) != 1 || list[0].Label != "gpu" {
		t.Errorf("label filter %+v, want only gpu", list)
	}
	if got := decode[tagLimitDoc](t, b.do(t, "GET", labels+"/"+l.ID, nil).want(t, 200)); got.ID != l.ID {
		t.Errorf("read by id: %+v", got)
	}
	fr := uuid.NewString()
	b.do(t, "POST", labels+"/increment", map[string]any{"names": []string{"gpu"}, "flow_run_id": fr}).wantProblem(t, http.StatusLocked, "locked", "")
	b.do(t, "POST", labels+"/increment", map[string]any{"names": []string{"gpu"}, "task_run_id": fr}).wantProblem(t, 422, "invalid_field", "flow_run_id")
	b.do(t, "DELETE", labels+"/label/gpu", nil).want(t, 200)
	if r := b.waitRun(t, second.ID, "Running", 10); r.State != "Running" {
		t.Errorf("waiting flow run once its label limit is gone: %s, want Running", r.State)
	}
	b.do(t, "GET", labels+"/label/gpu", nil).wantProblem(t, 404, "limit_not_found", "")
}
