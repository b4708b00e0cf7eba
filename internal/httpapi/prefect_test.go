package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
)

// TestPrefectScenarios runs the black-box scenarios of the reference
// (shared/reference/prefect-concurrency.md §8.2, 1-43) against a real
// server. Scenarios that need time to pass exactly (7, 11, 29, 35, 36, 41)
// are in TestTimedScenarios.
func TestPrefectScenarios(t *testing.T) {
	t.Parallel()
	ignoreTimes := cmpopts.IgnoreFields(limitDoc{}, "ID", "Created", "Updated")
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, b *testBundle)
	}{
		{"01 create has Prefect's defaults", func(t *testing.T, b *testBundle) {
			got := b.create(t, map[string]any{"name": "limiter", "limit": 42})
			want := limitDoc{Active: true, Name: "limiter", Limit: 42, AvgSlotOccupancySeconds: 2,
				Holders: []holderDoc{}, Waiters: []waiterDoc{}}
			if diff := cmp.Diff(want, got, ignoreTimes); diff != "" {
				t.Errorf("created limit (-want +got):\n%s", diff)
			}
			if _, err := uuid.Parse(got.ID); err != nil {
				t.Errorf("id %q: %v", got.ID, err)
			}
			// Prefect's form: UTC with microseconds.
			if len(got.Created) != len("2024-01-01T00:00:00.123456Z") || !strings.HasSuffix(got.Created, "Z") {
				t.Errorf("created %q is not UTC with microseconds", got.Created)
			}
		}},
		{"02 duplicate name is 409", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 1})
			p := b.do(t, "POST", v2+"/", map[string]any{"name": "test_limit", "limit": 2}).wantProblem(t, http.StatusConflict, "name_taken", "")
			// Prefect's opening, then what happened: no pointer to server
			// logs that say nothing more.
			if want := "Data integrity conflict: a limit named 'test_limit' already exists."; p.Detail != want {
				t.Errorf("got detail %q, want %q", p.Detail, want)
			}
		}},
		{"03 bad names are 422", func(t *testing.T, b *testBundle) {
			for _, name := range []string{"a/b", "x & y < z", "50%", "a>b", "tab\there", ""} {
				b.do(t, "POST", v2+"/", map[string]any{"name": name, "limit": 1}).wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "name")
			}
		}},
		{"04 bad settings are 422", func(t *testing.T, b *testBundle) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "a", "limit": -2}).wantProblem(t, 422, "invalid_field", "limit")
			b.do(t, "POST", v2+"/", map[string]any{"name": "a", "limit": 1, "slot_decay_per_second": -1}).wantProblem(t, 422, "invalid_field", "slot_decay_per_second")
			b.do(t, "POST", v2+"/", map[string]any{"name": "a", "limit": 1, "avg_slot_occupancy_seconds": 3}).wantProblem(t, 422, "unknown_field", "avg_slot_occupancy_seconds")
		}},
		{"05 read by id and by name", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 1})
			if byID, byName := b.read(t, l.ID), b.read(t, "test_limit"); byID.ID != l.ID || byName.ID != l.ID {
				t.Errorf("got ids %s and %s, want %s", byID.ID, byName.ID, l.ID)
			}
		}},
		{"06 unknown id is 404", func(t *testing.T, b *testBundle) {
			p := b.do(t, "GET", v2+"/"+uuid.NewString(), nil).wantProblem(t, 404, "limit_not_found", "")
			if p.Detail != "Concurrency Limit not found" {
				t.Errorf("got detail %q", p.Detail)
			}
		}},
		{"08 filter without body orders by name", func(t *testing.T, b *testBundle) {
			for _, n := range []string{"b", "c", "a"} {
				b.create(t, map[string]any{"name": n, "limit": 1})
			}
			got := decode[[]limitDoc](t, b.do(t, "POST", v2+"/filter", nil).want(t, 200))
			var names []string
			for _, l := range got {
				names = append(names, l.Name)
				if l.Holders != nil || l.Waiters != nil {
					t.Errorf("summary filter returned holders or waiters: %+v", l)
				}
			}
			if diff := cmp.Diff([]string{"a", "b", "c"}, names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			full := decode[[]limitDoc](t, b.do(t, "POST", v2+"/filter", map[string]any{"detail": "full", "limit": 2, "offset": 1}).want(t, 200))
			if len(full) != 2 || full[0].Name != "b" || full[0].Holders == nil {
				t.Errorf("got %+v, want b and c with holders", full)
			}
		}},
		{"09 filter limit over 200 is 422", func(t *testing.T, b *testBundle) {
			p := b.do(t, "POST", v2+"/filter", map[string]any{"limit": 201}).wantProblem(t, 422, "invalid_field", "limit")
			if p.Detail != "Invalid limit: must be less than or equal to 200." {
				t.Errorf("got detail %q", p.Detail)
			}
		}},
		{"10 rename by id and by name", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 1})
			b.do(t, "PATCH", v2+"/"+l.ID, map[string]any{"name": "new-name"}).want(t, http.StatusNoContent)
			if got := b.read(t, l.ID).Name; got != "new-name" {
				t.Errorf("got name %q", got)
			}
			r := b.do(t, "PATCH", v2+"/new-name", map[string]any{"name": "newer"}).want(t, http.StatusNoContent)
			if len(r.body) != 0 {
				t.Errorf("204 with body %q", r.body)
			}
			b.do(t, "GET", v2+"/new-name", nil).want(t, 404)
			b.read(t, "newer")
		}},
		{"12 patch unknown id is 404", func(t *testing.T, b *testBundle) {
			b.do(t, "PATCH", v2+"/"+uuid.NewString(), map[string]any{"name": "x"}).wantProblem(t, 404, "limit_not_found", "")
		}},
		{"12b rename onto an existing name is 409", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "a", "limit": 1})
			b.create(t, map[string]any{"name": "b", "limit": 1})
			b.do(t, "PATCH", v2+"/a", map[string]any{"name": "b"}).wantProblem(t, 409, "name_taken", "")
		}},
		{"13 delete by id and by name", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 1})
			b.do(t, "DELETE", v2+"/"+l.ID, nil).want(t, http.StatusNoContent)
			b.do(t, "GET", v2+"/"+l.ID, nil).want(t, 404)
			b.create(t, map[string]any{"name": "other", "limit": 1})
			b.do(t, "DELETE", v2+"/other", nil).want(t, http.StatusNoContent)
			b.do(t, "GET", v2+"/other", nil).want(t, 404)
			b.do(t, "DELETE", v2+"/"+uuid.NewString(), nil).wantProblem(t, 404, "limit_not_found", "")
		}},
		{"14 zero slots is 422", func(t *testing.T, b *testBundle) {
			body := map[string]any{"names": []string{"my-limit"}, "slots": 0}
			b.do(t, "POST", v2+"/increment", body).wantProblem(t, 422, "invalid_field", "slots")
			b.do(t, "POST", v2+"/increment-with-lease", body).wantProblem(t, 422, "invalid_field", "slots")
		}},
		{"15 unknown names grant nothing", func(t *testing.T, b *testBundle) {
			body := map[string]any{"names": []string{"foo-bar-limit"}, "slots": 1}
			if got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/increment", body).want(t, 200)); len(got) != 0 {
				t.Errorf("got %+v, want []", got)
			}
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", body).want(t, 200))
			if _, err := uuid.Parse(g.LeaseID); err != nil || g.Limits == nil || len(g.Limits) != 0 {
				t.Errorf("got %+v, want a lease id and limits []", g)
			}
		}},
		{"16 increment takes a slot", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"test_limit"}, "slots": 1, "mode": "concurrency"}).want(t, 200))
			if diff := cmp.Diff([]minimalDoc{{ID: l.ID, Name: "test_limit", Limit: 10}}, got); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			if got := b.read(t, "test_limit").ActiveSlots; got != 1 {
				t.Errorf("got active_slots %d, want 1", got)
			}
		}},
		{"17 lease without duration lasts 300 s", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			before := time.Now()
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1}).want(t, 200))
			lease := decode[leaseDoc](t, b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 200))
			want := leaseDoc{LeaseID: g.LeaseID, Limits: []minimalDoc{{ID: l.ID, Name: "test_limit", Limit: 10}}, Slots: 1,
				Mode: "concurrency", FencingToken: g.FencingToken}
			if diff := cmp.Diff(want, lease, cmpopts.IgnoreFields(leaseDoc{}, "Created", "Expires")); diff != "" {
				t.Errorf("lease (-want +got):\n%s", diff)
			}
			exp := parseTime(t, lease.Expires)
			if exp.Before(before.Add(299*time.Second)) || exp.After(time.Now().Add(301*time.Second)) {
				t.Errorf("got expiry %v, want about 300 s from %v", exp, before)
			}
			if g.FencingToken == 0 || g.Expires != lease.Expires {
				t.Errorf("grant %+v does not match lease %+v", g, lease)
			}
		}},
		{"18 holders are kept and not echoed", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			for _, typ := range []string{"flow_run", "task_run", "deployment", "process"} {
				h := map[string]any{"type": typ, "id": uuid.NewString()}
				r := b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "holder": h}).want(t, 200)
				if strings.Contains(string(r.body), "holder") {
					t.Errorf("response echoes the holder: %s", r.body)
				}
				g := decode[grantDoc](t, r)
				lease := decode[leaseDoc](t, b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 200))
				if lease.Holder == nil || lease.Holder.Type != typ || lease.Holder.ID != h["id"] {
					t.Errorf("got holder %+v, want %v", lease.Holder, h)
				}
			}
			r := b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1,
				"holder": map[string]any{"type": "process", "id": "host-1:42", "metadata": map[string]string{"host": "host-1"}}}).want(t, 200)
			l := b.read(t, "test_limit")
			last := l.Holders[len(l.Holders)-1]
			if last.LeaseID != decode[grantDoc](t, r).LeaseID || last.Holder.Metadata["host"] != "host-1" {
				t.Errorf("got holder %+v, want metadata host=host-1", last)
			}
		}},
		{"19 bad holders are 422", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			for _, tc := range []struct {
				holder any
				field  string
				code   string
			}{
				{map[string]any{"type": "invalid_type", "id": uuid.NewString()}, "holder.type", "invalid_field"},
				{map[string]any{"type": "flow_run", "id": uuid.NewString(), "extra": 1}, "holder.extra", "unknown_field"},
				{map[string]any{"type": "flow_run"}, "holder.id", "invalid_field"},
				{map[string]any{"id": "x"}, "holder.type", "invalid_field"},
				{map[string]any{"type": "flow_run", "id": ""}, "holder.id", "invalid_field"},
				{map[string]any{"type": "flow_run", "id": strings.Repeat("x", 257)}, "holder.id", "invalid_field"},
				{map[string]any{"type": "flow_run", "id": "x", "metadata": map[string]any{"a": 1}}, "holder.metadata", "invalid_field"},
				{"flow_run", "holder", "invalid_field"},
			} {
				b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "holder": tc.holder}).
					wantProblem(t, 422, tc.code, tc.field)
			}
			if got := b.read(t, "test_limit").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d after refused requests", got)
			}
		}},
		{"20 lease duration bounds", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 100})
			before := time.Now()
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "lease_duration": 60}).want(t, 200))
			if exp := parseTime(t, g.Expires); exp.Before(before.Add(60*time.Second)) || exp.After(before.Add(65*time.Second)) {
				t.Errorf("got expiry %v, want within [now+60 s, now+65 s] of %v", exp, before)
			}
			for _, d := range []any{2592000, 86401, 0.5, 0, -1} {
				b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "lease_duration": d}).
					wantProblem(t, 422, "invalid_field", "lease_duration")
			}
			// allot accepts down to 1 s (Prefect: 60 s) and up to a day.
			for _, d := range []any{1, 86400} {
				b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "lease_duration": d}).want(t, 200)
			}
		}},
		{"21 increment two limits at once", func(t *testing.T, b *testBundle) {
			a := b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			o := b.create(t, map[string]any{"name": "other_limit", "limit": 10})
			got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"test_limit", "other_limit"}, "slots": 1}).want(t, 200))
			want := []minimalDoc{{ID: a.ID, Name: "test_limit", Limit: 10}, {ID: o.ID, Name: "other_limit", Limit: 10}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			for _, n := range []string{"test_limit", "other_limit"} {
				if got := b.read(t, n).ActiveSlots; got != 1 {
					t.Errorf("%s: got active_slots %d, want 1", n, got)
				}
			}
		}},
		{"22 inactive limits are returned, not counted", func(t *testing.T, b *testBundle) {
			l := b.create(t, map[string]any{"name": "test_limit", "limit": 10, "active": false})
			got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"test_limit"}, "slots": 1}).want(t, 200))
			if len(got) != 1 || got[0].ID != l.ID {
				t.Errorf("got %+v, want the inactive limit", got)
			}
			if got := b.read(t, "test_limit").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d, want 0", got)
			}
		}},
		{"23 full limit is 423", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10, "active_slots": 10})
			r := b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"test_limit"}, "slots": 1})
			p := r.wantProblem(t, http.StatusLocked, "locked", "")
			if p.Detail != `Concurrency limit "test_limit" is full (10/10 slots in use)` || p.RetryAfter == nil || *p.RetryAfter != retryAfter(t, r) {
				t.Errorf("got problem %+v with Retry-After %q", p, r.header.Get("Retry-After"))
			}
			if got := b.read(t, "test_limit").ActiveSlots; got != 10 {
				t.Errorf("got active_slots %d, want 10", got)
			}
			b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1}).wantProblem(t, http.StatusLocked, "locked", "")
		}},
		{"24-28 Retry-After", func(t *testing.T, b *testBundle) {
			// Set the average occupancy the only way the API can: decrements
			// that report occupancy (avg ← avg·(1−1/2L) + occ/2L).
			setAvg := func(name string, limit int, avg float64) {
				n := 2 * float64(limit)
				occ := (avg - 2*(1-1/n)) * n
				b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{name}, "slots": 1, "occupancy_seconds": occ}).want(t, 200)
			}
			for _, tc := range []struct {
				name       string
				limit      int
				decay, avg float64
				denied     int
				lo, hi     float64
			}{
				{"no_decay", 10, 0, 2, 10, 1.1, 3.3},          // 24: ≈ 2.2 s
				{"decay", 10, 0.1, 2, 10, 55, 165},            // 25: ≈ 110 s
				{"tag:long-running", 10, 0, 10800, 10, 5, 20}, // 26: capped at 10 s
				{"tag:quick-tasks", 10, 0, 2, 10, 1, 5},       // 27
				{"big", 30, 0, 10, 16000, 20, 60},             // 28: capped at 30 s
			} {
				b.create(t, map[string]any{"name": tc.name, "limit": tc.limit, "slot_decay_per_second": tc.decay})
				if tc.avg != 2 {
					setAvg(tc.name, tc.limit, tc.avg)
				}
				b.do(t, "PATCH", v2+"/"+tc.name, map[string]any{"active_slots": tc.limit, "denied_slots": tc.denied}).want(t, 204)
				r := b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{tc.name}, "slots": 1})
				r.wantProblem(t, http.StatusLocked, "locked", "")
				if ra := retryAfter(t, r); ra <= tc.lo || ra >= tc.hi {
					t.Errorf("%s: got Retry-After %v, want in (%v, %v)", tc.name, ra, tc.lo, tc.hi)
				}
			}
		}},
		{"30-31 slots over the limit is 422", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "ten", "limit": 10})
			b.create(t, map[string]any{"name": "zero", "limit": 0})
			for _, tc := range []struct {
				name  string
				slots int
			}{{"ten", 11}, {"zero", 1}} {
				for _, route := range []string{"/increment", "/increment-with-lease"} {
					p := b.do(t, "POST", v2+route, map[string]any{"names": []string{tc.name}, "slots": tc.slots}).wantProblem(t, 422, "slots_exceed_limit", "")
					if p.Detail != "Slots requested is greater than the limit" || !cmp.Equal(p.Limits, []string{tc.name}) {
						t.Errorf("got %+v", p)
					}
				}
			}
			if got := b.read(t, "ten").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d, want 0", got)
			}
		}},
		{"32 rate limit takes a slot", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "rl", "limit": 10, "slot_decay_per_second": 1.0})
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"rl"}, "slots": 1, "mode": "rate_limit"}).want(t, 200)
			if got := b.read(t, "rl").ActiveSlots; got != 1 {
				t.Errorf("got active_slots %d, want 1", got)
			}
		}},
		{"33 rate limit on a missing name creates nothing", func(t *testing.T, b *testBundle) {
			got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"ignored_limit"}, "slots": 1, "mode": "rate_limit"}).want(t, 200))
			if len(got) != 0 {
				t.Errorf("got %+v, want []", got)
			}
			b.do(t, "GET", v2+"/ignored_limit", nil).want(t, 404)
		}},
		{"34 rate limit without decay is 422", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			p := b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"test_limit"}, "slots": 1, "mode": "rate_limit"}).wantProblem(t, 422, "no_decay", "")
			if !strings.HasSuffix(p.Detail, "do not have a decay configured: 'test_limit'") {
				t.Errorf("got detail %q", p.Detail)
			}
			if got := b.read(t, "test_limit").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d, want 0", got)
			}
		}},
		{"37 decrement of zero slots is 422", func(t *testing.T, b *testBundle) {
			b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"my-limit"}, "slots": 0}).wantProblem(t, 422, "invalid_field", "slots")
		}},
		{"38 decrement clamps at zero", func(t *testing.T, b *testBundle) {
			a := b.create(t, map[string]any{"name": "A", "limit": 10})
			bb := b.create(t, map[string]any{"name": "B", "limit": 10})
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"B"}, "slots": 10}).want(t, 200)
			got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"A", "B"}, "slots": 1}).want(t, 200))
			want := []minimalDoc{{ID: a.ID, Name: "A", Limit: 10}, {ID: bb.ID, Name: "B", Limit: 10}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			if a, bv := b.read(t, "A").ActiveSlots, b.read(t, "B").ActiveSlots; a != 0 || bv != 9 {
				t.Errorf("got active_slots A=%d B=%d, want 0 and 9", a, bv)
			}
			if got := decode[[]minimalDoc](t, b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"nope"}, "slots": 1}).want(t, 200)); got == nil || len(got) != 0 {
				t.Errorf("got %v, want []", got)
			}
		}},
		{"39 decrement with lease releases it", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 2}).want(t, 200))
			if got := b.read(t, "test_limit").ActiveSlots; got != 2 {
				t.Errorf("got active_slots %d, want 2", got)
			}
			b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": g.LeaseID}).want(t, http.StatusNoContent)
			b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).wantProblem(t, http.StatusGone, "lease_not_found", "")
			if got := b.read(t, "test_limit").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d, want 0", got)
			}
		}},
		{"40 decrement of an unknown lease is 204", func(t *testing.T, b *testBundle) {
			b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": uuid.NewString()}).want(t, http.StatusNoContent)
		}},
		{"41 renew sets now plus duration", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "test_limit", "limit": 10})
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"test_limit"}, "slots": 1, "lease_duration": 20}).want(t, 200))
			before := time.Now().Truncate(time.Microsecond)
			b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", map[string]any{"lease_duration": 600}).want(t, http.StatusNoContent)
			after := time.Now()
			exp := parseTime(t, decode[leaseDoc](t, b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 200)).Expires)
			if exp.Before(before.Add(600*time.Second)) || exp.After(after.Add(600*time.Second)) {
				t.Errorf("got expiry %v, want in [%v, %v]", exp, before.Add(600*time.Second), after.Add(600*time.Second))
			}
			// Without a duration the lease keeps its own (600 s now).
			b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", nil).want(t, http.StatusNoContent)
			b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", map[string]any{"lease_duration": 86401}).wantProblem(t, 422, "invalid_field", "lease_duration")
		}},
		{"42 renew of an unknown lease is 410", func(t *testing.T, b *testBundle) {
			p := b.do(t, "POST", v2+"/leases/"+uuid.NewString()+"/renew", map[string]any{"lease_duration": 600}).wantProblem(t, http.StatusGone, "lease_not_found", "")
			if p.Detail != "Lease not found - it may have expired or been revoked" {
				t.Errorf("got detail %q", p.Detail)
			}
		}},
		{"43 occupancy moves the average", func(t *testing.T, b *testBundle) {
			b.create(t, map[string]any{"name": "up", "limit": 10})
			b.create(t, map[string]any{"name": "down", "limit": 10})
			prevUp, prevDown := 2.0, 2.0
			for range 30 {
				b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"up"}, "slots": 1, "occupancy_seconds": 5.0}).want(t, 200)
				b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"down"}, "slots": 1, "occupancy_seconds": 0.001}).want(t, 200)
				up, down := b.read(t, "up").AvgSlotOccupancySeconds, b.read(t, "down").AvgSlotOccupancySeconds
				if up <= prevUp || up >= 5 {
					t.Fatalf("got avg %v after %v, want it to grow toward 5 and stay below", up, prevUp)
				}
				if down > prevDown || down < 0.1 {
					t.Fatalf("got avg %v after %v, want it to fall toward 0.1 and never below", down, prevDown)
				}
				prevUp, prevDown = up, down
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, setup(t))
		})
	}
}
