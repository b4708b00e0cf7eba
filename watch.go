package allot

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// watchPoll is how long one lease watch may stay open before it is sent
// again (the server allows 300 s).
const watchPoll = 60 * time.Second

// LeaseEndedError says how the server ended a lease that its holder did
// not release: an operator revoked it (or reset its limit), it expired, it
// was released by someone else, or its run ended. The error of a lost lease
// (Lease.Err, and the cause of the contexts of Concurrency, RunTask and
// RunFlow) matches ErrLeaseLost and, when the lease watch told of the loss,
// wraps one of these (errors.As).
type LeaseEndedError struct {
	LeaseID string
	// State is "revoked", "expired", "released" or "not_found" (the server
	// no longer has the lease and no longer remembers how it ended).
	State string
	// Reason is the server's reason: the operator's, "slot revoked by
	// reset", "lease expired: no heartbeat for 60s", …
	Reason string
}

func (e *LeaseEndedError) Error() string {
	s := "lease " + e.LeaseID
	switch e.State {
	case leaseRevoked:
		s += " was revoked"
	case leaseExpired:
		s += " expired"
	case leaseReleased:
		s += " was released by someone else"
	default:
		s += " is no longer held by the server"
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// The states of a lease the watch answers, as the server names them (a
// test checks them against the server's).
const (
	leaseHeld     = "held"
	leaseReleased = "released"
	leaseExpired  = "expired"
	leaseRevoked  = "revoked"
	leaseNotFound = "not_found"
)

// leaseStatus is the answer of the lease watch.
type leaseStatus struct {
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// watchLease keeps one long poll open on the server's watch of lease id
// until ctx is done, and returns a *LeaseEndedError the moment the server
// says the lease ended. It returns nil when ctx is done first, or when the
// server has no watch (a Prefect server, or an older allot, answers 404):
// then the renewals alone find a loss. A failed watch is sent again after a
// backoff; it never decides by itself that the lease is lost.
func (c *Client) watchLease(ctx context.Context, id string) *LeaseEndedError {
	hold := min(c.longPoll, watchPoll)
	path := limitsPrefix + "/leases/" + url.PathEscape(id) + "/watch?timeout_seconds=" +
		strconv.FormatFloat(hold.Seconds(), 'f', -1, 64)
	for failures := 0; ; {
		var st leaseStatus
		err := c.do(ctx, request{method: http.MethodGet, path: path,
			body:   func() (any, time.Duration) { return nil, hold },
			accept: []int{http.StatusOK}}, &st)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && st.State == leaseHeld:
			failures = 0
		case err == nil:
			return &LeaseEndedError{LeaseID: id, State: st.State, Reason: st.Reason}
		case errors.Is(err, ErrNotFound):
			c.log.Debug("allot: the server has no lease watch; renewals alone will find a lost lease", "lease_id", id)
			return nil
		default:
			failures++
			c.log.Debug("allot: lease watch failed; will try again", "lease_id", id, "err", err)
			if !sleep(ctx, max(c.pause(failures), 200*time.Millisecond)) {
				return nil
			}
		}
	}
}
