package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// bubble is a handler served in-process inside a synctest bubble, so that
// time passes exactly as the test says.
type bubble struct {
	h http.Handler
}

func (b bubble) do(t testing.TB, method, path string, body any) response {
	t.Helper()
	req := httptest.NewRequest(method, path, encodeBody(t, body))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (b bubble) read(t testing.TB, ref string) limitDoc {
	t.Helper()
	return decode[limitDoc](t, b.do(t, "GET", v2+"/"+ref, nil).want(t, http.StatusOK))
}

// TestTimedScenarios runs the §8.2 scenarios that depend on time passing,
// with a fake clock.
func TestTimedScenarios(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, b bubble)
	}{
		{"07 reads show decayed slots", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "decaying", "limit": 10, "active_slots": 10, "slot_decay_per_second": 0.1}).want(t, 201)
			time.Sleep(30500 * time.Millisecond)
			if got := b.read(t, "decaying").ActiveSlots; got != 7 {
				t.Errorf("read: got active_slots %d, want 7", got)
			}
			list := decode[[]limitDoc](t, b.do(t, "POST", v2+"/filter", nil).want(t, 200))
			if len(list) != 1 || list[0].ActiveSlots != 7 {
				t.Errorf("filter: got %+v, want active_slots 7", list)
			}
		}},
		{"11 patch keeps the decay accrued", func(t *testing.T, b bubble) {
			// Prefect restarts the decay clock on every write and forgets the
			// decay accrued so far (stored active_slots stays 10); allot keeps
			// a decay watermark apart from updated (reference §10.2).
			b.do(t, "POST", v2+"/", map[string]any{"name": "decaying", "limit": 10, "active_slots": 10, "slot_decay_per_second": 0.1}).want(t, 201)
			time.Sleep(30500 * time.Millisecond)
			b.do(t, "PATCH", v2+"/decaying", map[string]any{"name": "renamed-limit"}).want(t, http.StatusNoContent)
			if got := b.read(t, "renamed-limit").ActiveSlots; got != 7 {
				t.Errorf("got active_slots %d after rename, want 7", got)
			}
			time.Sleep(10 * time.Second)
			if got := b.read(t, "renamed-limit").ActiveSlots; got != 6 {
				t.Errorf("got active_slots %d 10 s later, want 6", got)
			}
		}},
		{"29 refusals count denied slots", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "a", "limit": 2, "active_slots": 2}).want(t, 201)
			b.do(t, "POST", v2+"/", map[string]any{"name": "b", "limit": 10}).want(t, 201)
			b.do(t, "POST", v2+"/", map[string]any{"name": "off", "limit": 1, "active": false}).want(t, 201)
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"a", "b", "off"}, "slots": 2}).want(t, http.StatusLocked)
			for name, want := range map[string]int{"a": 2, "b": 2, "off": 0} {
				if got := b.read(t, name).DeniedSlots; got != want {
					t.Errorf("%s: got denied_slots %d, want %d", name, got, want)
				}
			}
			if got := b.read(t, "b").ActiveSlots; got != 0 {
				t.Errorf("b: got active_slots %d, want 0 (all or nothing)", got)
			}
		}},
		{"35 rate limit slots decay", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "rl", "limit": 10, "slot_decay_per_second": 5}).want(t, 201)
			inc := map[string]any{"names": []string{"rl"}, "slots": 5, "mode": "rate_limit"}
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"rl"}, "slots": 10, "mode": "rate_limit"}).want(t, 200)
			b.do(t, "POST", v2+"/increment", inc).want(t, http.StatusLocked)
			time.Sleep(2 * time.Second)
			b.do(t, "POST", v2+"/increment", inc).want(t, 200)
		}},
		{"36 slots without decay do not come back", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "full", "limit": 10}).want(t, 201)
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"full"}, "slots": 10}).want(t, 200)
			inc := map[string]any{"names": []string{"full"}, "slots": 5}
			b.do(t, "POST", v2+"/increment", inc).want(t, http.StatusLocked)
			time.Sleep(500 * time.Millisecond)
			b.do(t, "POST", v2+"/increment", inc).want(t, http.StatusLocked)
		}},
		{"41 renew is exactly now plus duration", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "l", "limit": 10}).want(t, 201)
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1, "lease_duration": 20}).want(t, 200))
			time.Sleep(5 * time.Second)
			b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", map[string]any{"lease_duration": 600}).want(t, http.StatusNoContent)
			lease := decode[leaseDoc](t, b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 200))
			if got, want := parseTime(t, lease.Expires), time.Now().Add(600*time.Second); !got.Equal(want) {
				t.Errorf("got expiry %v, want %v", got, want)
			}
		}},
		{"unrenewed leases expire and cannot be renewed", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "l", "limit": 1}).want(t, 201)
			g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1, "lease_duration": 1}).want(t, 200))
			// A plain increment's anonymous lease expires too (allot: Prefect
			// would hold it until decremented).
			b.do(t, "POST", v2+"/", map[string]any{"name": "plain", "limit": 1}).want(t, 201)
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"plain"}, "slots": 1, "lease_duration": 2}).want(t, 200)
			time.Sleep(1500 * time.Millisecond)
			synctest.Wait()
			b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", nil).wantProblem(t, http.StatusGone, "lease_not_found", "")
			b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).wantProblem(t, http.StatusGone, "lease_not_found", "")
			if got := b.read(t, "l").ActiveSlots; got != 0 {
				t.Errorf("got active_slots %d after expiry, want 0", got)
			}
			if got := b.read(t, "plain").ActiveSlots; got != 1 {
				t.Errorf("plain: got active_slots %d before its expiry, want 1", got)
			}
			time.Sleep(time.Second)
			synctest.Wait()
			if got := b.read(t, "plain").ActiveSlots; got != 0 {
				t.Errorf("plain: got active_slots %d after expiry, want 0", got)
			}
		}},
		{"a waiter gives up with 423 at its timeout", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "l", "limit": 1}).want(t, 201)
			b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1}).want(t, 200)
			start := time.Now()
			r := b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"l"}, "slots": 1, "timeout_seconds": 2.5})
			r.wantProblem(t, http.StatusLocked, "locked", "")
			if waited := time.Since(start); waited != 2500*time.Millisecond {
				t.Errorf("got a wait of %v, want 2.5 s", waited)
			}
			if got := b.read(t, "l").Waiting; got != 0 {
				t.Errorf("got %d waiting after the timeout, want 0", got)
			}
		}},
		{"a rate limit waiter is let in by decay", func(t *testing.T, b bubble) {
			b.do(t, "POST", v2+"/", map[string]any{"name": "rl", "limit": 2, "slot_decay_per_second": 1}).want(t, 201)
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"rl"}, "slots": 2, "mode": "rate_limit"}).want(t, 200)
			start := time.Now()
			b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"rl"}, "slots": 1, "mode": "rate_limit", "timeout_seconds": 10}).want(t, 200)
			if waited := time.Since(start); waited < time.Second || waited > 1100*time.Millisecond {
				t.Errorf("got a wait of %v, want about 1 s", waited)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				_, h, stop := newHandler(t, setupOpts{})
				defer stop()
				tc.run(t, bubble{h: h})
			})
		})
	}
}
