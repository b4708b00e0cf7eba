package httpapi_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

type leaseStatusDoc struct {
	LeaseID string  `json:"lease_id"`
	State   string  `json:"state"`
	Reason  string  `json:"reason"`
	Expires *string `json:"expires"`
}

// TestLeaseWatchHearsARevokeAtOnce shows that a watch open on a lease
// answers the moment an operator revokes it, with the reason, and that the
// revoked lease's slot goes to the next waiter.
func TestLeaseWatchHearsARevokeAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "db", "limit": 1})
	g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"db"}, "slots": 1, "lease_duration": 600}).want(t, 200))

	held := decode[leaseStatusDoc](t, b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch?timeout_seconds=0.05", nil).want(t, 200))
	if held.State != "held" || held.Expires == nil || *held.Expires != g.Expires {
		t.Errorf("watch of a held lease = %+v, want held with expiry %s", held, g.Expires)
	}

	watched := make(chan response, 1)
	go func() { watched <- b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch?timeout_seconds=300", nil) }()
	next := make(chan response, 1)
	go func() {
		next <- b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"db"}, "slots": 1, "timeout_seconds": 60})
	}()
	// Revoke once both are parked (the watch registers before the waiter
	// or after; either way it must hear the revoke).
	deadline := time.Now().Add(10 * time.Second)
	for len(b.read(t, "db").Waiters) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	rev := decode[leaseStatusDoc](t, b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/revoke", map[string]any{"reason": "maintenance"}).want(t, 200))
	want := leaseStatusDoc{LeaseID: g.LeaseID, State: "revoked", Reason: "maintenance"}
	if diff := cmp.Diff(want, rev); diff != "" {
		t.Errorf("revoke answer (-want +got):\n%s", diff)
	}
	got := decode[leaseStatusDoc](t, (<-watched).want(t, 200))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("watch answer (-want +got):\n%s", diff)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the watch answered %v after the revoke, want at once", d)
	}
	decode[grantDoc](t, (<-next).want(t, 200))
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", nil).wantProblem(t, 410, "lease_not_found", "")
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/revoke", nil).wantProblem(t, 410, "lease_not_found", "")
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/revoke", map[string]any{"reason": 3}).wantProblem(t, 422, "invalid_field", "reason")

	unknown := uuid.NewString()
	nf := decode[leaseStatusDoc](t, b.do(t, "GET", v2+"/leases/"+unknown+"/watch", nil).want(t, 200))
	if diff := cmp.Diff(leaseStatusDoc{LeaseID: unknown, State: "not_found"}, nf); diff != "" {
		t.Errorf("watch of an unknown lease (-want +got):\n%s", diff)
	}
	b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch?timeout_seconds=-1", nil).wantProblem(t, 422, "invalid_field", "timeout_seconds")
	b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch?wait=1", nil).wantProblem(t, 422, "unknown_field", "wait")
}

// TestLeaseWatchHearsATagReset shows that a reset of a tag limit ends the
// watch of a Running run's lease as revoked.
func TestLeaseWatchHearsATagReset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "POST", "/api/concurrency_limits/", map[string]any{"tag": "db", "concurrency_limit": 1}).want(t, 201)
	run := decode[map[string]any](t, b.do(t, "POST", "/api/runs/", map[string]any{"kind": "task", "tags": []string{"db"}}).want(t, 201))
	id := run["id"].(string)
	run = decode[map[string]any](t, b.do(t, "POST", "/api/runs/"+id+"/set_state", map[string]any{"state": "Running"}).want(t, 200))
	lease, _ := run["lease_id"].(string)
	if lease == "" {
		t.Fatalf("running run has no lease: %v", run)
	}
	watched := make(chan response, 1)
	go func() { watched <- b.do(t, "GET", v2+"/leases/"+lease+"/watch?timeout_seconds=300", nil) }()
	b.do(t, "POST", "/api/concurrency_limits/tag/db/reset", map[string]any{}).want(t, 200)
	got := decode[leaseStatusDoc](t, (<-watched).want(t, 200))
	if got.State != "revoked" || got.Reason != "slot revoked by reset" {
		t.Errorf("watch of a reset run's lease = %+v, want revoked by the reset", got)
	}
}
