package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
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

// watchLease is GET /v2/concurrency_limits/leases/{lease_id}/watch
// ?timeout_seconds=60: it answers 200 the moment the lease ends (state
// released, expired or revoked, with the reason), once that is durable; or
// when the time is up with state held and the lease's expiry. A lease that
// is not held answers at once: how it ended if the server remembers, else
// state not_found.
func (h *handler) watchLease(w http.ResponseWriter, r *http.Request) {
	id, err := pathLeaseID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	timeout := float64(defaultWatchSeconds)
	q := r.URL.Query()
	for k := range q {
		if k != "timeout_seconds" {
			h.writeProblem(w, r, &requestError{Status: http.StatusUnprocessableEntity, Code: "unknown_field", Field: k,
				Detail: "unknown query parameter; the known one is timeout_seconds"})
			return
		}
	}
	if s := q.Get("timeout_seconds"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxWatchSeconds {
			h.writeProblem(w, r, invalidField("timeout_seconds", "must be a number from 0 to "+strconv.Itoa(maxWatchSeconds)))
			return
		}
		timeout = f
	}
	d := time.Duration(timeout * float64(time.Second))
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + time.Minute))
	st, err := h.c.WatchLease(r.Context(), id, d)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toLeaseStatusJSON(st))
}

// revokeLease is POST /v2/concurrency_limits/leases/{lease_id}/revoke
// {reason?}: the lease is taken away, its slots go to the next waiters and
// a run that held it is Crashed; 200 with the lease's new state, 410 if it
// is not held.
func (h *handler) revokeLease(w http.ResponseWriter, r *http.Request) {
	id, err := pathLeaseID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	b, err := h.readBody(w, r, true)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	reason := ""
	if b.str("reason", &reason) && len(reason) > maxReason {
		b.fail("reason", "must be at most "+strconv.Itoa(maxReason)+" bytes")
	}
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if reason == "" {
		reason = defaultRevokeReason
	}
	if _, err := h.c.RevokeLease(r.Context(), id, reason); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toLeaseStatusJSON(coord.LeaseStatus{ID: id, State: coord.LeaseRevoked, Reason: reason}))
}
