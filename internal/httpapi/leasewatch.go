package httpapi

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/jsonbody"
)

// The lease watch and the operator's revoke, allot extensions: a holder
// keeps one watch open beside its renewals and hears at once that its
// lease was revoked or expired, instead of at its next renewal.

// maxWatchSeconds bounds a lease watch; defaultWatchSeconds is the watch
// when none is given.
const (
	maxWatchSeconds     = 300
	defaultWatchSeconds = 60
	// defaultRevokeReason is a revoke's reason when none is given.
	defaultRevokeReason = "revoked by an operator"
	maxReason           = 1024
)

// leaseStatusJSON is the answer of a lease watch and a revoke.
type leaseStatusJSON struct {
	LeaseID uuid.UUID `json:"lease_id"`
	State   string    `json:"state"`
	Reason  string    `json:"reason"`
	Expires *stamp    `json:"expires"`
}

func toLeaseStatusJSON(s coord.LeaseStatus) leaseStatusJSON {
	out := leaseStatusJSON{LeaseID: s.ID, State: s.State.String(), Reason: s.Reason}
	if s.State == coord.LeaseHeld {
		e := stamp(s.Expires)
		out.Expires = &e
	}
	return out
}

// watchRequest is GET /v2/concurrency_limits/leases/{lease_id}/watch
// ?timeout_seconds=60: it answers 200 the moment the lease ends (state
// released, expired or revoked, with the reason), once that is durable; or
// when the time is up with state held and the lease's expiry. A lease that
// is not held answers at once: how it ended if the server remembers, else
// state not_found.
type watchRequest struct {
	id      uuid.UUID
	timeout time.Duration
}

func readWatch(id uuid.UUID, r *http.Request, _ *jsonbody.Body) (watchRequest, error) {
	timeout := float64(defaultWatchSeconds)
	q := r.URL.Query()
	for k := range q {
		if k != "timeout_seconds" {
			return watchRequest{}, &requestError{Code: codeUnknownField, Field: k,
				Detail: "unknown query parameter; the known one is timeout_seconds"}
		}
	}
	if s := q.Get("timeout_seconds"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxWatchSeconds {
			return watchRequest{}, invalidField("timeout_seconds", "must be a number from 0 to "+strconv.Itoa(maxWatchSeconds))
		}
		timeout = f
	}
	return watchRequest{id, time.Duration(timeout * float64(time.Second))}, nil
}

func watchWait(req watchRequest) time.Duration { return req.timeout }

func (h *handler) watchLease(ctx context.Context, req watchRequest) (coord.LeaseStatus, error) {
	return h.c.WatchLease(ctx, req.id, req.timeout)
}

func leaseStatus(s coord.LeaseStatus) any { return toLeaseStatusJSON(s) }

// revokeRequest is POST /v2/concurrency_limits/leases/{lease_id}/revoke
// {reason?}: the lease is taken away, its slots go to the next waiters and
// a run that held it is Crashed; 200 with the lease's new state, 410 if it
// is not held.
type revokeRequest struct {
	id     uuid.UUID
	reason string
}

func readRevoke(id uuid.UUID, _ *http.Request, b *jsonbody.Body) (revokeRequest, error) {
	reason := ""
	if b.Str("reason", &reason) && len(reason) > maxReason {
		b.Fail("reason", "must be at most "+strconv.Itoa(maxReason)+" bytes")
	}
	if reason == "" {
		reason = defaultRevokeReason
	}
	return revokeRequest{id, reason}, nil
}

func (h *handler) revokeLease(ctx context.Context, req revokeRequest) (coord.LeaseStatus, error) {
	if _, err := h.c.RevokeLease(ctx, req.id, req.reason); err != nil {
		return coord.LeaseStatus{}, err
	}
	return coord.LeaseStatus{ID: req.id, State: coord.LeaseRevoked, Reason: req.reason}, nil
}
