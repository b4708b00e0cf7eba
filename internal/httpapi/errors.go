package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/allot-dev/allot/internal/coord"
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

// requestError is an error found in a request before the coordinator saw
// it: a malformed body, a bad field, an unknown route.
type requestError struct {
	Status int
	Code   string
	Field  string
	Detail string
}

func (e *requestError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Detail
	}
	return e.Detail
}

func invalidField(field, detail string) error {
	return &requestError{Status: http.StatusUnprocessableEntity, Code: "invalid_field", Field: field, Detail: detail}
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
	status int
	code   string
	detail string
}

func isErr(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func isTransition(err error) bool {
	var te *sema.TransitionError
	return errors.As(err, &te)
}

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
	{isErr(sema.ErrLimitNotFound), http.StatusNotFound, "limit_not_found", detailLimitNotFound},
	{isErr(sema.ErrLeaseNotFound), http.StatusGone, "lease_not_found", detailLeaseNotFound},
	{isErr(sema.ErrNameTaken), http.StatusConflict, "name_taken", detailNameTaken},
	{isErr(sema.ErrRunNotFound), http.StatusNotFound, "run_not_found", detailRunNotFound},
	{isErr(sema.ErrRunExists), http.StatusConflict, "run_exists", ""},
	{isErr(sema.ErrRunFinished), http.StatusGone, "run_finished", ""},
	{isErr(sema.ErrTicketConflict), http.StatusConflict, "ticket_conflict", ""},
	{isErr(coord.ErrSuperseded), http.StatusConflict, "ticket_superseded", ""},
	{isTransition, http.StatusConflict, "invalid_transition", ""},
	{isNever("slots_exceed_limit"), http.StatusUnprocessableEntity, "slots_exceed_limit", ""},
	{isNever("no_decay"), http.StatusUnprocessableEntity, "no_decay", ""},
	{isNever("template"), http.StatusUnprocessableEntity, "template_not_acquirable", ""},
	{isErr(coord.ErrUnavailable), http.StatusServiceUnavailable, "unavailable", detailUnavailable},
	// The caller went away or the server is shutting down: nobody reads
	// the answer, but it must not count as a server fault.
	{isErr(context.Canceled), http.StatusServiceUnavailable, "unavailable", "request canceled"},
	{isErr(context.DeadlineExceeded), http.StatusServiceUnavailable, "unavailable", "request canceled"},
}

// tagLockedError is a refusal of Prefect's v1 tag increment, which has
// its own texts: a full tag is 423 with the tag wait as Retry-After, a tag
// limited to 0 is 423 without one.
type tagLockedError struct {
	code   string
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
		ie *sema.InvalidError
		le *sema.LockedError
		ne *sema.NeverError
		ke *tagLockedError
	)
	switch {
	case errors.As(err, &re):
		return newProblem(re.Status, re.Code, re.Detail, re.Field)
	case errors.As(err, &ke):
		p := newProblem(http.StatusLocked, ke.code, ke.detail, "")
		p.RetryAfter, p.Limits = ke.retryAfter, ke.limits
		return p
	case errors.As(err, &ie):
		return newProblem(http.StatusUnprocessableEntity, "invalid_field", ie.Detail, ie.Field)
	case errors.As(err, &le):
		// Prefect answers "Locked"; its clients read only the status and
		// Retry-After, so the detail can say which limit is full.
		p := newProblem(http.StatusLocked, "locked", le.Error(), "")
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
		p := newProblem(r.status, r.code, detail, "")
		if errors.As(err, &ne) {
			p.Limits = ne.Names
		}
		return p
	}
	return newProblem(http.StatusInternalServerError, "internal", "Internal Server Error", "")
}

func newProblem(status int, code, detail, field string) problem {
	return problem{Type: problemBase + code, Title: http.StatusText(status), Status: status,
		Detail: detail, Code: code, Field: field}
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
