package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/jsonbody"
)

// route is one entry of the API's route table (see handler.table): a
// method and path pattern, and what serves it. The table is a plain list,
// so that a gate (authorisation, say) can be attached per route.
type route struct {
	pattern string
	serve   http.Handler
}

// bodyRule says whether a route reads a JSON object from its body.
type bodyRule int

const (
	// noBody: the route reads no body (GET, DELETE, a path alone).
	noBody bodyRule = iota
	// optionalBody: an absent, empty or null body is an empty object.
	optionalBody
	// requiredBody: the body must be a JSON object.
	requiredBody
)

// op is what a route does, stated once: how it reads its request, which
// coordinator call it makes and how it answers. serve is the one adapter
// that runs it; every error, from reading to calling, goes through the one
// error table (problemFor).
type op[Req, Resp any] struct {
	// status is the status of a success; 204 writes no body.
	status int
	// statusOf, when set, picks the status from the result (201 for a
	// created limit, 200 for one that existed).
	statusOf func(Resp) int
	body     bodyRule
	// strict refuses members of the body that decode did not read.
	strict bool
	// decode reads the request: its path, its query and, unless body is
	// noBody, its JSON object b (nil otherwise). A problem with a member
	// is recorded in b (b.Fail); an error returned is answered as is.
	decode func(r *http.Request, b *jsonbody.Body) (Req, error)
	// call asks the coordinator.
	call func(ctx context.Context, req Req) (Resp, error)
	// encode is the answer's value for the renderer; nil answers the
	// result itself.
	encode func(Resp) any
	// wait, when set, is how long the call may wait in line: the answer's
	// write deadline is pushed past it.
	wait func(Req) time.Duration
	// errs, when set, rewrites errors before the table sees them (the v1
	// tag routes' own texts).
	errs func(error) error
}

// renderer writes a route's answers: the API's is JSON (jsonRenderer); a
// web page's would render HTML from the same ops.
type renderer interface {
	// answer writes a success: status and the encoded value.
	answer(w http.ResponseWriter, r *http.Request, status int, v any)
	// problem writes the answer to err, mapped through the error table.
	problem(w http.ResponseWriter, r *http.Request, err error)
}

// jsonRenderer answers in JSON, and errors in problem+json.
type jsonRenderer struct{ h *handler }

func (j jsonRenderer) answer(w http.ResponseWriter, r *http.Request, status int, v any) {
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

func (j jsonRenderer) problem(w http.ResponseWriter, r *http.Request, err error) {
	j.h.writeProblem(w, r, err)
}

// serve is the adapter: it reads the body, decodes, calls, encodes, and
// answers every error through rd.
func serve[Req, Resp any](h *handler, rd renderer, o op[Req, Resp]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(err error) {
			if o.errs != nil {
				err = o.errs(err)
			}
			rd.problem(w, r, err)
		}
		var b *jsonbody.Body
		if o.body != noBody {
			var err error
			if b, err = h.readBody(w, r, o.body == optionalBody); err != nil {
				fail(err)
				return
			}
		}
		req, err := o.decode(r, b)
		if err == nil && b != nil {
			err = b.Finish(o.strict)
		}
		if err != nil {
			fail(err)
			return
		}
		if o.wait != nil {
			if d := o.wait(req); d > 0 {
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + time.Minute))
			}
		}
		resp, err := o.call(r.Context(), req)
		if err != nil {
			fail(err)
			return
		}
		status := o.status
		if o.statusOf != nil {
			status = o.statusOf(resp)
		}
		var v any = resp
		if o.encode != nil {
			v = o.encode(resp)
		}
		rd.answer(w, r, status, v)
	})
}

// jsonOp is serve with the API's JSON renderer.
func jsonOp[Req, Resp any](h *handler, o op[Req, Resp]) http.Handler {
	return serve(h, jsonRenderer{h}, o)
}

// none is the request or result of a route that has none.
type none struct{}

// noRequest decodes nothing.
func noRequest(*http.Request, *jsonbody.Body) (none, error) { return none{}, nil }

// made is the result of a call that creates what it is asked for or finds
// it there already (an ensure, an upsert, a create with its id given).
type made[T any] struct {
	v       T
	created bool
}

// madeOf takes a coordinator call's (value, created, error).
func madeOf[T any](v T, created bool, err error) (made[T], error) {
	return made[T]{v, created}, err
}

// status is 201 for something created, 200 for something that existed,
// changed or not.
func (m made[T]) status() int {
	if m.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

// Path parameters that are ids.
const (
	runIDParam   = "id"
	leaseIDParam = "lease_id"
)

// pathID reads the UUID in the path parameter param.
func pathID(r *http.Request, param string) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue(param))
	if err != nil {
		return uuid.Nil, invalidField(param, "must be a UUID")
	}
	return id, nil
}

// byID decodes the request of a route on one thing named by its id in the
// path parameter param: the id first, then the rest with read.
func byID[T any](param string, read func(id uuid.UUID, r *http.Request, b *jsonbody.Body) (T, error)) func(*http.Request, *jsonbody.Body) (T, error) {
	return func(r *http.Request, b *jsonbody.Body) (T, error) {
		id, err := pathID(r, param)
		if err != nil {
			var zero T
			return zero, err
		}
		return read(id, r, b)
	}
}

// idAlone is byID's read for a route that reads nothing but the id.
func idAlone(id uuid.UUID, _ *http.Request, _ *jsonbody.Body) (uuid.UUID, error) { return id, nil }

// readEnum reads the string member name as one word of a set: parse says
// which value a word is (false for a word not in the set), want lists the
// set for the error. The empty string is never one. It reports whether the
// member was present and one of the set.
func readEnum[T any](b *jsonbody.Body, name string, dst *T, parse func(string) (T, bool), want string) bool {
	var s string
	if !b.Str(name, &s) {
		return false
	}
	v, ok := parse(s)
	if !ok || s == "" {
		b.Fail(name, "must be "+want)
		return false
	}
	*dst = v
	return true
}
