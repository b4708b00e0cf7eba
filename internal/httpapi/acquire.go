package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// readNames reads names: 1 to maxNames valid limit names.
func readNames(b *jsonbody.Body, dst *[]string) {
	if !b.Strs("names", dst, maxNames) {
		b.Require("names", false)
		return
	}
	for i, n := range *dst {
		if why := sema.ValidateName(n); why != "" {
			b.Fail("names", fmt.Sprintf("item %d (%q) %s", i, n, why))
			return
		}
	}
}

// readSeconds reads a duration in seconds from (0, hi].
func readSeconds(b *jsonbody.Body, name string, hi float64) (time.Duration, bool) {
	var secs float64
	if !b.Number(name, &secs, 0, hi, true) {
		return 0, false
	}
	// A positive duration below a nanosecond stays positive so that the
	// coordinator refuses it rather than taking it for "the default".
	return max(time.Duration(secs*float64(time.Second)), 1), true
}

// readAcquire reads the fields the increment routes share.
func readAcquire(b *jsonbody.Body) coord.AcquireRequest {
	var req coord.AcquireRequest
	readNames(b, &req.Names)
	b.Require("slots", b.Int("slots", &req.Slots, 1, sema.MaxSlots))
	readEnum(b, "mode", &req.Mode, sema.ParseMode, `"concurrency" or "rate_limit"`)
	req.LeaseDuration, _ = readSeconds(b, "lease_duration", maxLeaseSeconds)
	var timeout float64
	if b.Number("timeout_seconds", &timeout, 0, maxTimeoutSeconds, false) {
		req.Wait = time.Duration(timeout * float64(time.Second))
	}
	if b.Str("ticket", &req.Ticket) {
		if why := sema.ValidateTicket(req.Ticket); why != "" {
			b.Fail("ticket", why)
		}
	}
	// Deprecated in Prefect 3.3 and ignored, but still type-checked.
	b.Bool("create_if_missing", new(bool))
	return req
}

// readHolder reads the optional holder object's members: type and id are
// required, metadata is an object of strings. Their values (known types,
// bounds) are checked where the rule lives, sema.Holder.Validate, when the
// coordinator acquires.
func readHolder(b *jsonbody.Body) sema.Holder {
	var h sema.Holder
	hb, ok := b.Object("holder")
	if !ok {
		return h
	}
	hb.Require("type", hb.Str("type", &h.Type))
	hb.Require("id", hb.Str("id", &h.ID))
	if hb.StringMap("metadata", &h.Metadata) && len(h.Metadata) == 0 {
		h.Metadata = nil
	}
	b.Adopt(hb.Finish(true))
	return h
}

// leaseRoutes are the routes that take and give back slots, and read,
// renew, watch and revoke leases.
func (h *handler) leaseRoutes() []route {
	return []route{
		{"POST " + v2 + "/increment", jsonOp(h, op[coord.IncrementRequest, []sema.LimitRef]{status: http.StatusOK, body: requiredBody,
			decode: readIncrement, call: h.c.Increment, wait: incrementWait, encode: minimal})},
		{"POST " + v2 + "/increment-with-lease", jsonOp(h, op[coord.AcquireRequest, coord.Grant]{status: http.StatusOK, body: requiredBody,
			decode: readIncrementWithLease, call: h.c.Acquire, wait: acquireWait, encode: grantLease})},
		{"POST " + v2 + "/decrement", jsonOp(h, op[decrementRequest, []sema.LimitRef]{status: http.StatusOK, body: requiredBody,
			decode: readDecrement, call: h.decrement, encode: minimal})},
		// 204 whether or not the lease was held, as Prefect answers.
		{"POST " + v2 + "/decrement-with-lease", jsonOp(h, op[uuid.UUID, bool]{status: http.StatusNoContent, body: requiredBody,
			decode: readLeaseID, call: h.c.Release})},
		{"POST " + v2 + "/leases/{lease_id}/renew", jsonOp(h, op[renewRequest, sema.Lease]{status: http.StatusNoContent, body: optionalBody,
			decode: byID(leaseIDParam, readRenew), call: h.renew})},
		{"GET " + v2 + "/leases/{lease_id}/watch", jsonOp(h, op[watchRequest, coord.LeaseStatus]{status: http.StatusOK,
			decode: byID(leaseIDParam, readWatch), call: h.watchLease, wait: watchWait, encode: leaseStatus})},
		{"POST " + v2 + "/leases/{lease_id}/revoke", jsonOp(h, op[revokeRequest, coord.LeaseStatus]{status: http.StatusOK, body: optionalBody, strict: true,
			decode: byID(leaseIDParam, readRevoke), call: h.revokeLease, encode: leaseStatus})},
		{"GET " + v2 + "/leases/{lease_id}", jsonOp(h, op[uuid.UUID, leaseRead]{status: http.StatusOK,
			decode: pathLease, call: h.readLease, encode: leaseRead.render})},
		// An allot extension for a client that gave up: the ticket's
		// waiter leaves the line and a lease granted to it is released.
		// 204 whether or not the ticket named anything.
		{"DELETE " + v2 + "/tickets/{ticket}", jsonOp(h, op[string, none]{status: http.StatusNoContent,
			decode: pathTicket, call: h.cancelTicket})},
	}
}

// acquireWait is how long an acquisition may wait in line.
func acquireWait(req coord.AcquireRequest) time.Duration { return req.Wait }

func incrementWait(req coord.IncrementRequest) time.Duration { return req.Wait }

// readIncrement reads POST /v2/concurrency_limits/increment: the
// coordinator's Increment holds its slots as a plain increment does (see
// sema.PlainIncrement).
func readIncrement(_ *http.Request, b *jsonbody.Body) (coord.IncrementRequest, error) {
	a := readAcquire(b)
	return coord.IncrementRequest{Names: a.Names, Slots: a.Slots, Mode: a.Mode, LeaseDuration: a.LeaseDuration,
		Wait: a.Wait, Ticket: a.Ticket}, nil
}

// readIncrementWithLease reads POST
// /v2/concurrency_limits/increment-with-lease.
func readIncrementWithLease(_ *http.Request, b *jsonbody.Body) (coord.AcquireRequest, error) {
	req := readAcquire(b)
	req.Holder = readHolder(b)
	return req, nil
}

func grantLease(g coord.Grant) any {
	return grantJSON{LeaseID: g.Lease.ID, Limits: toMinimal(g.Limits),
		FencingToken: g.Lease.Fence, Expires: stamp(g.Lease.Expires), WaitedSeconds: g.Waited.Seconds()}
}

func minimal(refs []sema.LimitRef) any { return toMinimal(refs) }

// decrementRequest is POST /v2/concurrency_limits/decrement's request.
type decrementRequest struct {
	names     []string
	slots     int
	occupancy float64
}

func readDecrement(_ *http.Request, b *jsonbody.Body) (decrementRequest, error) {
	var d decrementRequest
	readNames(b, &d.names)
	b.Require("slots", b.Int("slots", &d.slots, 1, sema.MaxSlots))
	b.Number("occupancy_seconds", &d.occupancy, 0, maxOccupancy, true)
	b.Bool("create_if_missing", new(bool))
	return d, nil
}

func (h *handler) decrement(ctx context.Context, d decrementRequest) ([]sema.LimitRef, error) {
	return h.c.Decrement(ctx, d.names, d.slots, d.occupancy)
}

// readLeaseID reads decrement-with-lease's {lease_id}.
func readLeaseID(_ *http.Request, b *jsonbody.Body) (uuid.UUID, error) {
	var id uuid.UUID
	b.Require("lease_id", b.UUID("lease_id", &id))
	return id, nil
}

func pathTicket(r *http.Request, _ *jsonbody.Body) (string, error) { return r.PathValue("ticket"), nil }

func (h *handler) cancelTicket(ctx context.Context, ticket string) (none, error) {
	return none{}, h.c.CancelTicket(ctx, ticket)
}

// pathLease reads a lease's id alone.
var pathLease = byID(leaseIDParam, idAlone)

// renewRequest is POST /v2/concurrency_limits/leases/{lease_id}/renew.
type renewRequest struct {
	id       uuid.UUID
	duration time.Duration
}

func readRenew(id uuid.UUID, _ *http.Request, b *jsonbody.Body) (renewRequest, error) {
	d, _ := readSeconds(b, "lease_duration", maxLeaseSeconds)
	return renewRequest{id, d}, nil
}

func (h *handler) renew(ctx context.Context, req renewRequest) (sema.Lease, error) {
	return h.c.Renew(ctx, req.id, req.duration)
}

// leaseRead is GET /v2/concurrency_limits/leases/{lease_id}'s answer, an
// allot extension.
type leaseRead struct {
	lease sema.Lease
	refs  []sema.LimitRef
}

func (h *handler) readLease(ctx context.Context, id uuid.UUID) (leaseRead, error) {
	l, refs, err := h.c.Lease(ctx, id)
	return leaseRead{l, refs}, err
}

func (lr leaseRead) render() any {
	l := lr.lease
	return leaseJSON{LeaseID: l.ID, Limits: toMinimal(lr.refs), Slots: l.Slots, Mode: l.Mode.String(),
		Holder: holderPtr(l.Holder), Created: stamp(l.Created), Expires: stamp(l.Expires), FencingToken: l.Fence}
}
