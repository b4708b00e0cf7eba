package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// problemBase prefixes every problem type.
const problemBase = "https://allot.dev/problems/"

// problem is an RFC 9457 problem document with allot's members.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	// Field is the JSON field at fault, for validation errors.
	Field string `json:"field,omitempty"`
	// RetryAfter repeats the Retry-After header of a 423, in seconds.
	RetryAfter *float64 `json:"retry_after,omitempty"`
	// Limits names the limits at fault when a request can never be granted.
	Limits []string `json:"limits,omitempty"`
}

// code is one of the stable codes of the API's problem documents.
type code int

// The codes, in the order of codes.
const (
	codeInvalidJSON code = iota
	codeUnknownField
	codeInvalidField
	codeBodyTooLarge
	codeBodyTimeout
	codeUnsupportedMediaType
	codeWebsocketRequired
	codeLimitNotFound
	codeLeaseNotFound
	codeNameTaken
	codeLocked
	codeSlotsExceedLimit
	codeNoDecay
	codeTemplateNotAcquirable
	codeLimitZero
	codeRunNotFound
	codeRunExists
	codeRunFinished
	codeTicketConflict
	codeTicketSuperseded
	codeInvalidTransition
	codeUnauthenticated
	codeForbidden
	codeQuotaExceeded
	codeKeyNotFound
	codeAuthOff
	codeUnavailable
	codeMethodNotAllowed
	codeNotFound
	codeInternal
)

// codeInfo is what a code says: its name in problem documents, its HTTP
// status and its meaning.
type codeInfo struct {
	name    string
	status  int
	meaning string
}

// codes is the one list of the API's codes. The OpenAPI document's enum of
// Problem.code, the SDK's Code* constants and the table in
// docs/semantics.md are checked against it (TestCodesAgree).
var codes = [...]codeInfo{
	codeInvalidJSON:           {"invalid_json", http.StatusUnprocessableEntity, "the body is not a JSON object, or is missing (400 if it could not be read at all)"},
	codeUnknownField:          {"unknown_field", http.StatusUnprocessableEntity, "a field or query parameter the route does not know"},
	codeInvalidField:          {"invalid_field", http.StatusUnprocessableEntity, "a field of the wrong type, out of bounds or missing; field names it"},
	codeBodyTooLarge:          {"body_too_large", http.StatusRequestEntityTooLarge, "the body is larger than the server takes (1 MiB by default)"},
	codeBodyTimeout:           {"body_timeout", http.StatusRequestTimeout, "the body did not arrive within 10 s"},
	codeUnsupportedMediaType:  {"unsupported_media_type", http.StatusUnsupportedMediaType, "a body that is not application/json"},
	codeWebsocketRequired:     {"websocket_required", http.StatusBadRequest, "/api/events/in without a websocket handshake (426 for a websocket version other than 13)"},
	codeLimitNotFound:         {"limit_not_found", http.StatusNotFound, "no limit has this name or id"},
	codeLeaseNotFound:         {"lease_not_found", http.StatusGone, "the lease expired, was released or was revoked"},
	codeNameTaken:             {"name_taken", http.StatusConflict, "another limit has this name"},
	codeLocked:                {"locked", http.StatusLocked, "the slots are not free; Retry-After says when to try again"},
	codeSlotsExceedLimit:      {"slots_exceed_limit", http.StatusUnprocessableEntity, "more slots than the limit has: the request can never be granted"},
	codeNoDecay:               {"no_decay", http.StatusUnprocessableEntity, "a rate-limit request on a limit without slot decay"},
	codeTemplateNotAcquirable: {"template_not_acquirable", http.StatusUnprocessableEntity, "a template's name (with *) in an acquisition"},
	codeLimitZero:             {"limit_zero", http.StatusLocked, "a v1 tag (label) increment on a limit of 0, as Prefect answers it"},
	codeRunNotFound:           {"run_not_found", http.StatusNotFound, "no run has this id"},
	codeRunExists:             {"run_exists", http.StatusConflict, "a different run has this id"},
	codeRunFinished:           {"run_finished", http.StatusGone, "the run is in a final state: its process must stop"},
	codeTicketConflict:        {"ticket_conflict", http.StatusConflict, "the ticket is in use by a different request"},
	codeTicketSuperseded:      {"ticket_superseded", http.StatusConflict, "a newer request with the same ticket took over this one"},
	codeInvalidTransition:     {"invalid_transition", http.StatusConflict, "the run's state does not allow this change"},
	codeUnauthenticated:       {"unauthenticated", http.StatusUnauthorized, "no API key, or one that is malformed, unknown, expired or revoked (with --auth keys); WWW-Authenticate says how to send one"},
	codeForbidden:             {"forbidden", http.StatusForbidden, "the key lacks the scope the request needs; detail names the key id and the missing scope"},
	codeQuotaExceeded:         {"quota_exceeded", http.StatusTooManyRequests, "the key is over its quota of requests per second, waiting requests or held leases; Retry-After says when to try again"},
	codeKeyNotFound:           {"key_not_found", http.StatusNotFound, "no API key has this id"},
	codeAuthOff:               {"auth_off", http.StatusNotFound, "a key or audit route of a server without --auth keys"},
	codeUnavailable:           {"unavailable", http.StatusServiceUnavailable, "the server cannot answer now (storage failing, shutting down)"},
	codeMethodNotAllowed:      {"method_not_allowed", http.StatusMethodNotAllowed, "the route exists but not with this method; Allow lists the methods"},
	codeNotFound:              {"not_found", http.StatusNotFound, "no route has this path"},
	codeInternal:              {"internal", http.StatusInternalServerError, "a defect of the server; it is logged"},
}

func (c code) String() string { return codes[c].name }

// requestError is an error found in a request before the coordinator saw
// it: a malformed body, a bad field, an unknown route.
type requestError struct {
	Code code
	// Status is the code's status unless set (see the code's meaning).
	Status int
	Field  string
	Detail string
}

func (e *requestError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Detail
	}
	return e.Detail
}

func (e *requestError) status() int {
	if e.Status != 0 {
		return e.Status
	}
	return codes[e.Code].status
}

func invalidField(field, detail string) error {
	return &requestError{Code: codeInvalidField, Field: field, Detail: detail}
}

// Prefect's texts, kept as detail so that Prefect clients show what they
// would show against Prefect.
const (
	detailLimitNotFound = "Concurrency Limit not found"
	detailLeaseNotFound = "Lease not found - it may have expired or been revoked"
	// Prefect's 409 opens with these words; allot then says what
	// conflicted rather than point to server logs that say nothing more.
	detailNameTaken   = "Data integrity conflict: a limit with this name already exists."
	detailUnavailable = "Service Unavailable"
	// Prefect's v1 tag routes spell it with a lower-case "limit".
	detailTagLimitNotFound = "Concurrency limit not found"
	detailRunNotFound      = "Run not found"
)

// errorRule maps one kind of error to an answer. detail, when empty, is
// taken from the error.
type errorRule struct {
	is     func(error) bool
	code   code
	detail string
}

func isErr(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func isTransition(err error) bool {
	var te *sema.TransitionError
	return errors.As(err, &te)
}

func isForbidden(err error) bool {
	var fe *auth.ForbiddenError
	return errors.As(err, &fe)
}

// errAuthOff answers the key and audit routes of a server without
// authentication.
var errAuthOff = errors.New("authentication is off: start the server with --auth keys to manage keys")

func isNever(reason string) func(error) bool {
	return func(err error) bool {
		var ne *sema.NeverError
		return errors.As(err, &ne) && ne.Reason == reason
	}
}

// errorTable is the one place that says which HTTP answer an error gets.
// The first rule that matches wins; an error no rule matches is a defect and
// answers 500. Request errors, invalid arguments and 423s carry their own
// data and are handled in problemFor before the table is consulted.
var errorTable = [...]errorRule{
	{isErr(sema.ErrLimitNotFound), codeLimitNotFound, detailLimitNotFound},
	{isErr(sema.ErrLeaseNotFound), codeLeaseNotFound, detailLeaseNotFound},
	{isErr(sema.ErrNameTaken), codeNameTaken, detailNameTaken},
	{isErr(sema.ErrRunNotFound), codeRunNotFound, detailRunNotFound},
	{isErr(sema.ErrRunExists), codeRunExists, ""},
	{isErr(sema.ErrRunFinished), codeRunFinished, ""},
	{isErr(sema.ErrTicketConflict), codeTicketConflict, ""},
	{isErr(coord.ErrSuperseded), codeTicketSuperseded, ""},
	{isTransition, codeInvalidTransition, ""},
	{isNever("slots_exceed_limit"), codeSlotsExceedLimit, ""},
	{isNever("no_decay"), codeNoDecay, ""},
	{isNever("template"), codeTemplateNotAcquirable, ""},
	{isErr(auth.ErrNoKey), codeUnauthenticated, ""},
	{isErr(auth.ErrBadKey), codeUnauthenticated, ""},
	{isForbidden, codeForbidden, ""},
	{isErr(auth.ErrKeyNotFound), codeKeyNotFound, ""},
	{isErr(errAuthOff), codeAuthOff, ""},
	{isErr(coord.ErrUnavailable), codeUnavailable, detailUnavailable},
	// The caller went away or the server is shutting down: nobody reads
	// the answer, but it must not count as a server fault.
	{isErr(context.Canceled), codeUnavailable, "request canceled"},
	{isErr(context.DeadlineExceeded), codeUnavailable, "request canceled"},
}

// tagLockedError is a refusal of Prefect's v1 tag increment, which has
// its own texts: a full tag is 423 with the tag wait as Retry-After, a tag
// limited to 0 is 423 without one.
type tagLockedError struct {
	code   code
	detail string
	limits []string
	// retryAfter is nil for a limit that can never be granted.
	retryAfter *float64
}

func (e *tagLockedError) Error() string { return e.detail }

// problemFor builds the problem document for err.
func problemFor(err error) problem {
	var (
		re *requestError
		be *jsonbody.Error
		ie *sema.InvalidError
		le *sema.LockedError
		ne *sema.NeverError
		ke *tagLockedError
		ae *auth.InvalidError
		qe *auth.QuotaError
	)
	switch {
	case errors.As(err, &re):
		return newProblemStatus(re.status(), re.Code, re.Detail, re.Field)
	case errors.As(err, &be):
		return newProblem(bodyCode(be), be.Detail, be.Field)
	case errors.As(err, &ke):
		p := newProblem(ke.code, ke.detail, "")
		p.RetryAfter, p.Limits = ke.retryAfter, ke.limits
		return p
	case errors.As(err, &ae):
		return newProblem(codeInvalidField, ae.Detail, ae.Field)
	case errors.As(err, &qe):
		p := newProblem(codeQuotaExceeded, qe.Error(), "")
		s, _ := strconv.ParseFloat(strconv.FormatFloat(max(0, qe.RetryAfter.Seconds()), 'f', 4, 64), 64)
		p.RetryAfter = &s
		return p
	case errors.As(err, &ie):
		return newProblem(codeInvalidField, ie.Detail, ie.Field)
	case errors.As(err, &le):
		// Prefect answers "Locked"; its clients read only the status and
		// Retry-After, so the detail can say which limit is full.
		p := newProblem(codeLocked, le.Error(), "")
		s := retryAfterSeconds(le)
		p.RetryAfter = &s
		return p
	}
	for _, r := range errorTable {
		if !r.is(err) {
			continue
		}
		detail := r.detail
		var nt *sema.NameTakenError
		switch {
		case errors.As(err, &nt):
			detail = "Data integrity conflict: " + nt.Error() + "."
		case detail == "":
			detail = err.Error()
		}
		p := newProblem(r.code, detail, "")
		if errors.As(err, &ne) {
			p.Limits = ne.Names
		}
		return p
	}
	return newProblem(codeInternal, "Internal Server Error", "")
}

// bodyCode is the code of a problem in a JSON body.
func bodyCode(e *jsonbody.Error) code {
	switch {
	case errors.Is(e, jsonbody.ErrUnknownField):
		return codeUnknownField
	case errors.Is(e, jsonbody.ErrInvalidJSON):
		return codeInvalidJSON
	}
	return codeInvalidField
}

// newProblem is the problem of code, with the code's status.
func newProblem(c code, detail, field string) problem {
	return newProblemStatus(codes[c].status, c, detail, field)
}

func newProblemStatus(status int, c code, detail, field string) problem {
	name := codes[c].name
	return problem{Type: problemBase + name, Title: http.StatusText(status), Status: status,
		Detail: detail, Code: name, Field: field}
}

// retryAfterSeconds is a 423's wait, rounded as the header shows it.
func retryAfterSeconds(le *sema.LockedError) float64 {
	s, _ := strconv.ParseFloat(strconv.FormatFloat(max(0, le.RetryAfter.Seconds()), 'f', 4, 64), 64)
	return s
}

// writeProblem answers with the problem document for err.
func (h *handler) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	switch {
	case r.Context().Err() != nil:
		// The caller left or the server is stopping: nobody reads this.
	case p.Status == http.StatusServiceUnavailable:
		h.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", p.Status, "err", err)
	case p.Status >= http.StatusInternalServerError:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", p.Status, "err", err)
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", wwwAuthenticate)
	}
	if p.RetryAfter != nil {
		w.Header().Set("Retry-After", strconv.FormatFloat(*p.RetryAfter, 'f', 4, 64))
	}
	writeProblemDoc(w, p)
}

func writeProblemDoc(w http.ResponseWriter, p problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
