package allot

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// This file holds the calls on a lease known only by its id, for programs
// that hand a lease from one process to another (the allot acquire, renew
// and release commands): a Lease of this process can stop renewing itself
// (Detach), and another process can renew or release it by id.

// Detach stops the background renewals of the lease without releasing it:
// the slots stay held until the lease expires, unless RenewLease extends it
// or ReleaseLease gives it back. It returns once the renewals have stopped.
// Release still works afterwards. It does nothing to a lease that has ended.
func (l *Lease) Detach() {
	l.halt()
}

// RenewLease extends the lease id to d from now; d zero keeps the
// duration it was granted with. A lease the server no longer has (it
// expired or was released) is an error matching ErrLeaseNotFound.
func (c *Client) RenewLease(ctx context.Context, id string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("renew lease %s: %w: lease duration %s must not be negative", id, ErrInvalid, d)
	}
	var body any = struct{}{}
	if d > 0 {
		body = renewBody{LeaseDuration: d.Seconds()}
	}
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/leases/" + url.PathEscape(id) + "/renew",
		body: jsonBody(body), accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", id, err)
	}
	return nil
}

// ReleaseLease gives back the slots of the lease id. As in Prefect, a
// lease the server does not have (expired, or released before) is not an
// error.
func (c *Client) ReleaseLease(ctx context.Context, id string) error {
	return c.release(ctx, id)
}

// RevokeLease takes a lease away from its holder, as an operator (an allot
// extension): its slots go to the next waiters at once, its holder's watch
// hears it within about a second (an SDK Lease is lost, allot run stops its
// command), and a run that held it is Crashed with reason (empty: "revoked
// by an operator"). A lease that is not held is an error matching
// ErrLeaseNotFound.
func (c *Client) RevokeLease(ctx context.Context, id, reason string) error {
	body := map[string]string{}
	if reason != "" {
		body["reason"] = reason
	}
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/leases/" + url.PathEscape(id) + "/revoke",
		body: jsonBody(body), accept: []int{http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("revoke lease %s: %w", id, err)
	}
	return nil
}
