package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/internal/auth"
)

// need is a route's authorisation decision: what a key must have before
// the handler runs. Decisions that depend on names (acquire:<glob> on every
// limit a request names, manage:<glob> on the limit it changes, a lease
// bound to its key) are the coordinator's, in internal/coord/authz.go: the
// gate only makes sure the key could pass them.
type need uint8

const (
	// public: outside the gate (health and readiness probes).
	public need = iota + 1
	// needKey: any valid key, whatever its scopes.
	needKey
	// needRead: the read scope.
	needRead
	// needAcquire: some acquire scope; coord checks the names.
	needAcquire
	// needManage: some manage scope; coord checks the names.
	needManage
	// needAdmin: the admin scope.
	needAdmin
	// needUI: the web UI. A request with an Authorization header needs
	// read, as any other; one without is served with the principal of its
	// session cookie, if any, and otherwise without a principal: the UI
	// serves its login page and static files to anyone and sends every
	// other request to the login (see webui).
	needUI
)

// routeNeeds gives every route pattern its decision; the gate refuses a
// route that has none (and a test fails for it). A request that matches no
// route needs a valid key, so that the routes cannot be probed without
// one, except Prefect's CSRF probe, which must stay a plain 404.
var routeNeeds = map[string]need{
	"GET /api/health":                                    public,
	"GET /api/ready":                                     public,
	"GET /api/events":                                    needRead,
	"GET /api/events/in":                                 needKey,
	"GET /api/admin/version":                             needRead,
	"POST /api/v2/concurrency_limits/delete":             needManage,
	"PUT /api/v2/concurrency_limits/{id_or_name}":        needManage,
	"DELETE /api/v2/concurrency_limits/tickets/{ticket}": needAcquire,
	"GET /api/openapi.json":                              needRead,
	"GET /api/openapi.yaml":                              needRead,
	// The web UI (mounted): reading it needs read; what it changes goes
	// through the coordinator's checks by name with the same principal.
	"/ui":          needUI,
	"/ui/":         needUI,
	"GET /metrics": needRead,

	"POST /api/v2/concurrency_limits/{$}":                      needManage,
	"POST /api/v2/concurrency_limits":                          needManage,
	"POST /api/v2/concurrency_limits/filter":                   needRead,
	"POST /api/v2/concurrency_limits/increment":                needAcquire,
	"POST /api/v2/concurrency_limits/increment-with-lease":     needAcquire,
	"POST /api/v2/concurrency_limits/decrement":                needAcquire,
	"POST /api/v2/concurrency_limits/decrement-with-lease":     needAcquire,
	"POST /api/v2/concurrency_limits/leases/{lease_id}/renew":  needAcquire,
	"GET /api/v2/concurrency_limits/leases/{lease_id}/watch":   needAcquire,
	"POST /api/v2/concurrency_limits/leases/{lease_id}/revoke": needAdmin,
	"GET /api/v2/concurrency_limits/leases/{lease_id}":         needRead,
	"GET /api/v2/concurrency_limits/{id_or_name}":              needRead,
	"PATCH /api/v2/concurrency_limits/{id_or_name}":            needManage,
	"DELETE /api/v2/concurrency_limits/{id_or_name}":           needManage,

	"POST /api/concurrency_limits/{$}":             needManage,
	"POST /api/concurrency_limits":                 needManage,
	"POST /api/concurrency_limits/filter":          needRead,
	"POST /api/concurrency_limits/increment":       needAcquire,
	"POST /api/concurrency_limits/decrement":       needAcquire,
	"GET /api/concurrency_limits/{id}":             needRead,
	"DELETE /api/concurrency_limits/{id}":          needManage,
	"GET /api/concurrency_limits/tag/{key}":        needRead,
	"DELETE /api/concurrency_limits/tag/{key}":     needManage,
	"POST /api/concurrency_limits/tag/{key}/reset": needManage,
	"POST /api/label_limits/{$}":                   needManage,
	"POST /api/label_limits":                       needManage,
	"POST /api/label_limits/filter":                needRead,
	"POST /api/label_limits/increment":             needAcquire,
	"POST /api/label_limits/decrement":             needAcquire,
	"GET /api/label_limits/{id}":                   needRead,
	"DELETE /api/label_limits/{id}":                needManage,
	"GET /api/label_limits/label/{key}":            needRead,
	"DELETE /api/label_limits/label/{key}":         needManage,
	"POST /api/label_limits/label/{key}/reset":     needManage,

	"POST /api/runs/{$}":            needAcquire,
	"POST /api/runs":                needAcquire,
	"POST /api/runs/filter":         needRead,
	"GET /api/runs/{id}":            needRead,
	"POST /api/runs/{id}/set_state": needAcquire,
	"POST /api/runs/{id}/heartbeat": needAcquire,
	"GET /api/runs/{id}/wait":       needRead,
	"POST /api/runs/{id}/wait":      needRead,

	"POST /api/admin/keys":             needAdmin,
	"GET /api/admin/keys":              needAdmin,
	"GET /api/admin/keys/{id}":         needAdmin,
	"POST /api/admin/keys/{id}/rotate": needAdmin,
	"POST /api/admin/keys/{id}/revoke": needAdmin,
	"GET /api/admin/audit":             needAdmin,
}

// unthrottled are the routes a key's request rate never refuses:
// throttling a renewal lengthens a hold or loses the lease, throttling a
// release or a decrement keeps slots taken.
var unthrottled = map[string]bool{
	"POST /api/v2/concurrency_limits/leases/{lease_id}/renew": true,
	"POST /api/v2/concurrency_limits/decrement":               true,
	"POST /api/v2/concurrency_limits/decrement-with-lease":    true,
	"POST /api/concurrency_limits/decrement":                  true,
	"POST /api/label_limits/decrement":                        true,
	"POST /api/runs/{id}/set_state":                           true,
	"POST /api/runs/{id}/heartbeat":                           true,
}

// streams are the routes that may stay open long without waiting in
// line: their context ends when their key is revoked. (A request waiting
// in line is ended by the coordinator, which listens to the key's
// revocation only on that slow path.)
var streams = map[string]bool{
	"GET /api/events":    true,
	"GET /api/events/in": true,
	"GET /api/v2/concurrency_limits/leases/{lease_id}/watch": true,
	"GET /api/runs/{id}/wait":                                true,
	"POST /api/runs/{id}/wait":                               true,
}

// csrfProbe is Prefect's CSRF probe: a 404 turns CSRF off in its client.
const csrfProbe = "/api/csrf-token"

// wwwAuthenticate is the challenge of a 401.
const wwwAuthenticate = `Bearer realm="allot", Basic realm="allot"`

// gate is the one place where requests are authenticated: it finds the
// route a request takes, looks its decision up in routeNeeds, checks the
// key, and serves the request with the key's principal in its context (for
// the coordinator's checks by name), in a context that ends when the key is
// revoked (so that its streams and long polls end).
func (h *handler) gate(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		n, ok := routeNeeds[pattern]
		switch {
		case pattern == "" && r.URL.Path == csrfProbe:
			n = public
		case pattern == "":
			n = needRead // any valid key; the mux answers 404 or 405
		case !ok:
			// A defect, which the route matrix test catches: fail
			// closed and loudly.
			h.log.Error("route without an authorisation decision", "route", pattern)
			writeProblemDoc(w, newProblem(codeInternal, "route "+pattern+" has no authorisation decision", ""))
			return
		}
		if n == public {
			mux.ServeHTTP(w, r)
			return
		}
		if n == needUI && h.sessions != nil && r.Header.Get("Authorization") == "" {
			h.serveUI(w, r, mux, pattern)
			return
		}
		p, keyID, err := h.authenticate(r)
		if err != nil {
			if r.Header.Get("Authorization") != "" { // a refused key, not a missing one
				h.refused(r, nil, keyID, http.StatusUnauthorized, err)
			}
			h.writeProblem(w, r, err)
			return
		}
		if pattern == "" {
			n = needKey // authenticated is enough to hear there is no such route
		}
		if err := allowed(p, n); err != nil {
			h.refused(r, p, "", http.StatusForbidden, err)
			h.writeProblem(w, r, err)
			return
		}
		if !unthrottled[pattern] {
			if err := h.rates.Allow(p, time.Now()); err != nil {
				h.writeProblem(w, r, err)
				return
			}
		}
		// The outer middleware reads the pattern from this request (to
		// count it, and to tell the mux's own 404 from a handler's); the
		// mux sets it on the copy it serves.
		r.Pattern = pattern
		ctx := auth.NewContext(r.Context(), p)
		if streams[pattern] || n == needUI {
			var cancel context.CancelFunc
			ctx, cancel = auth.WithRevocation(ctx, p)
			defer cancel()
		}
		r = r.WithContext(ctx)
		h.countKey(p.KeyID)
		action, audit := auditActions[pattern]
		if !audit {
			mux.ServeHTTP(w, r)
			return
		}
		before := new(string)
		r = r.WithContext(context.WithValue(ctx, beforeKey{}, before))
		aw := &auditWriter{ResponseWriter: w}
		mux.ServeHTTP(aw, r)
		if aw.status == http.StatusForbidden {
			// Refused by name, in the coordinator.
			h.refused(r, p, "", aw.status, errors.New(problemDetail(aw.body.Bytes())))
			return
		}
		h.audited(r, p, action, *before, aw)
	})
}

// serveUI serves a web UI request that carries no Authorization header:
// with the principal of its session cookie, in a context that ends with
// the session (logout, idle, the key revoked), so that the page's live
// stream closes then; without a valid session, with no principal, which
// the UI answers with its login page (or 401).
func (h *handler) serveUI(w http.ResponseWriter, r *http.Request, mux *http.ServeMux, pattern string) {
	r.Pattern = pattern
	c, err := r.Cookie(auth.SessionCookie)
	if err != nil {
		mux.ServeHTTP(w, r)
		return
	}
	p, sctx, err := h.sessions.Lookup(c.Value)
	if err != nil {
		mux.ServeHTTP(w, r)
		return
	}
	if err := allowed(p, needRead); err != nil {
		h.refused(r, p, "", http.StatusForbidden, err)
		h.writeProblem(w, r, err)
		return
	}
	if err := h.rates.Allow(p, time.Now()); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	ctx, cancel := context.WithCancelCause(auth.NewContext(r.Context(), p))
	stop := context.AfterFunc(sctx, func() { cancel(context.Cause(sctx)) })
	defer func() { stop(); cancel(nil) }()
	h.countKey(p.KeyID)
	mux.ServeHTTP(w, r.WithContext(ctx))
}

// authenticate returns the principal of a request: its key's, or, without
// one, that of its verified client certificate's common name.
func (h *handler) authenticate(r *http.Request) (*auth.Principal, string, error) {
	header := r.Header.Get("Authorization")
	if header == "" && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if p, ok := h.certs[r.TLS.VerifiedChains[0][0].Subject.CommonName]; ok {
			return p, p.KeyID, nil
		}
	}
	return h.keys.AuthenticateID(header)
}

// problemDetail is the detail of a problem document, or "".
func problemDetail(b []byte) string {
	var p struct {
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(b, &p)
	return p.Detail
}

// countKey counts a request of key id in allot_key_requests_total; the
// counter of each key is resolved once.
func (h *handler) countKey(id string) {
	if h.keyRequests == nil {
		return
	}
	c, ok := h.keyCounters.Load(id)
	if !ok {
		c, _ = h.keyCounters.LoadOrStore(id, h.keyRequests.WithLabelValues(id))
	}
	c.(prometheus.Counter).Inc()
}

// allowed checks what a route needs of p before names are known.
func allowed(p *auth.Principal, n need) error {
	var a auth.Action
	switch n {
	case needRead:
		a = auth.Read
	case needAcquire:
		a = auth.Acquire
	case needManage:
		a = auth.Manage
	case needAdmin:
		a = auth.Admin
	default:
		return nil
	}
	if p.CanSome(a) {
		return nil
	}
	return &auth.ForbiddenError{KeyID: p.KeyID, KeyName: p.Name, Action: a}
}
