package httpapi

import (
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
)

// validHolderType reports whether t is a kind of holder a lease may name:
// Prefect's three and allot's process.
func validHolderType(t string) bool {
	switch t {
	case "flow_run", "task_run", "deployment", "process":
		return true
	}
	return false
}

// readNames reads names: 1 to maxNames valid limit names.
func readNames(b *body, dst *[]string) {
	if !b.strs("names", dst, maxNames) {
		b.require("names", false)
		return
	}
	for i, n := range *dst {
		if why := sema.ValidateName(n); why != "" {
			b.fail("names", fmt.Sprintf("item %d (%q) %s", i, n, why))
			return
		}
	}
}

// readSeconds reads a duration in seconds from (0, hi].
func readSeconds(b *body, name string, hi float64) (time.Duration, bool) {
	var secs float64
	if !b.number(name, &secs, 0, hi, true) {
		return 0, false
	}
	// A positive duration below a nanosecond stays positive so that the
	// coordinator refuses it rather than taking it for "the default".
	return max(time.Duration(secs*float64(time.Second)), 1), true
}

// readAcquire reads the fields the increment routes share.
func readAcquire(b *body) coord.AcquireRequest {
	var req coord.AcquireRequest
	readNames(b, &req.Names)
	b.require("slots", b.integer("slots", &req.Slots, 1, sema.MaxSlots))
	var mode string
	if b.str("mode", &mode) {
		m, ok := sema.ParseMode(mode)
		if !ok || mode == "" {
			b.fail("mode", `must be "concurrency" or "rate_limit"`)
		}
		req.Mode = m
	}
	req.LeaseDuration, _ = readSeconds(b, "lease_duration", maxLeaseSeconds)
	var timeout float64
	if b.number("timeout_seconds", &timeout, 0, maxTimeoutSeconds, false) {
		req.Wait = time.Duration(timeout * float64(time.Second))
	}
	if b.str("ticket", &req.Ticket) {
		if why := sema.ValidateTicket(req.Ticket); why != "" {
			b.fail("ticket", why)
		}
	}
	// Deprecated in Prefect 3.3 and ignored, but still type-checked.
	b.boolean("create_if_missing", new(bool))
	return req
}

// readHolder reads the optional holder object.
func readHolder(b *body) sema.Holder {
	var h sema.Holder
	hb, ok := b.object("holder")
	if !ok {
		return h
	}
	if hb.str("type", &h.Type) {
		if !validHolderType(h.Type) {
			hb.fail("type", "must be one of flow_run, task_run, deployment, process")
		}
	} else {
		hb.require("type", false)
	}
	if hb.str("id", &h.ID) {
		if h.ID == "" || len(h.ID) > maxHolderID {
			hb.fail("id", fmt.Sprintf("must be 1 to %d bytes", maxHolderID))
		}
	} else {
		hb.require("id", false)
	}
	if hb.stringMap("metadata", &h.Metadata) {
		if len(h.Metadata) > maxMetadataEntries {
			hb.fail("metadata", fmt.Sprintf("must have at most %d entries", maxMetadataEntries))
		}
		for k, v := range h.Metadata {
			if k == "" || len(k) > maxMetadataKey || len(v) > maxMetadataValue {
				hb.fail("metadata", fmt.Sprintf("keys must be 1 to %d bytes and values at most %d bytes", maxMetadataKey, maxMetadataValue))
				break
			}
		}
		if len(h.Metadata) == 0 {
			h.Metadata = nil
		}
	}
	b.adopt(hb.finish(true))
	return h
}

// acquire calls the coordinator, letting a waiting request outlive any
// write timeout of the server.
func (h *handler) acquire(w http.ResponseWriter, r *http.Request, req coord.AcquireRequest) (coord.Grant, error) {
	if req.Wait > 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(req.Wait + time.Minute))
	}
	return h.c.Acquire(r.Context(), req)
}

// increment is POST /v2/concurrency_limits/increment. In mode concurrency
// it takes an anonymous lease that a plain decrement gives back (or that
// expires); in mode rate_limit it takes slots that decay.
func (h *handler) increment(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	req := readAcquire(b)
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if req.Mode == sema.ModeRateLimit {
		req.NoLease = true
	} else {
		req.Anonymous = true
	}
	g, err := h.acquire(w, r, req)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMinimal(g.Limits))
}

// incrementWithLease is POST /v2/concurrency_limits/increment-with-lease.
func (h *handler) incrementWithLease(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	req := readAcquire(b)
	req.Holder = readHolder(b)
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	g, err := h.acquire(w, r, req)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, grantJSON{LeaseID: g.Lease.ID, Limits: toMinimal(g.Limits),
		FencingToken: g.Lease.Fence, Expires: stamp(g.Lease.Expires), WaitedSeconds: g.Waited.Seconds()})
}

// decrement is POST /v2/concurrency_limits/decrement.
func (h *handler) decrement(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var (
		names     []string
		slots     int
		occupancy float64
	)
	readNames(b, &names)
	b.require("slots", b.integer("slots", &slots, 1, sema.MaxSlots))
	b.number("occupancy_seconds", &occupancy, 0, maxOccupancy, true)
	b.boolean("create_if_missing", new(bool))
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	refs, err := h.c.Decrement(r.Context(), names, slots, occupancy)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMinimal(refs))
}

// decrementWithLease is POST /v2/concurrency_limits/decrement-with-lease:
// 204 whether or not the lease was held, as Prefect answers.
func (h *handler) decrementWithLease(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var id uuid.UUID
	b.require("lease_id", b.uuidField("lease_id", &id))
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if _, err := h.c.Release(r.Context(), id); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// cancelTicket is DELETE /v2/concurrency_limits/tickets/{ticket}, an allot
// extension for a client that gave up: the ticket's waiter leaves the line
// and a lease granted to it is released. 204 whether or not the ticket
// named anything.
func (h *handler) cancelTicket(w http.ResponseWriter, r *http.Request) {
	if err := h.c.CancelTicket(r.Context(), r.PathValue("ticket")); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func pathLeaseID(r *http.Request) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue("lease_id"))
	if err != nil {
		return uuid.Nil, invalidField("lease_id", "must be a UUID")
	}
	return id, nil
}

// renewLease is POST /v2/concurrency_limits/leases/{lease_id}/renew.
func (h *handler) renewLease(w http.ResponseWriter, r *http.Request) {
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
	d, _ := readSeconds(b, "lease_duration", maxLeaseSeconds)
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if _, err := h.c.Renew(r.Context(), id, d); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// readLease is GET /v2/concurrency_limits/leases/{lease_id}, an allot
// extension.
func (h *handler) readLease(w http.ResponseWriter, r *http.Request) {
	id, err := pathLeaseID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	l, refs, err := h.c.Lease(r.Context(), id)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, leaseJSON{LeaseID: l.ID, Limits: toMinimal(refs), Slots: l.Slots, Mode: l.Mode.String(),
		Holder: holderPtr(l.Holder), Created: stamp(l.Created), Expires: stamp(l.Expires), FencingToken: l.Fence})
}
