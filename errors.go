package allot

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinel errors. Errors returned by a Client match them with errors.Is;
// the server's answer behind them is an *APIError (errors.As).
var (
	// ErrNotFound matches any 404 answer.
	ErrNotFound = errors.New("not found")
	// ErrLimitNotFound matches a limit that does not exist: a 404 for a
	// limit, and, in strict mode, an acquisition none of whose limits
	// exist.
	ErrLimitNotFound = errors.New("limit not found")
	// ErrLeaseNotFound matches a 410: the lease expired or was released.
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrLeaseLost is the error of a lease that ended without being
	// released: the lease watch said the server ended it (revoked,
	// expired; a *LeaseEndedError says how), its renewal was refused (410),
	// it was not renewed before it expired, or (in strict mode) a renewal
	// failed.
	ErrLeaseLost = errors.New("lease lost")
	// ErrReleased is what Lease.Err returns after Release.
	ErrReleased = errors.New("lease released")
	// ErrLocked matches a 423: the slots were not free. The error is also
	// a *LockedError, which says when to try again.
	ErrLocked = errors.New("slots not free")
	// ErrTimeout matches an acquisition that did not get its slots within
	// its Timeout. Such an error also matches ErrLocked.
	ErrTimeout = errors.New("timed out waiting for slots")
	// ErrConflict matches a 409: the name is taken.
	ErrConflict = errors.New("conflict")
	// ErrInvalid matches a request the server refused as malformed or
	// hopeless (400, 422), and arguments the Client refuses itself.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable matches a 503: the server cannot answer now.
	ErrUnavailable = errors.New("server unavailable")
	// ErrUnauthorized matches a 401: no API key, or one that is not
	// valid (malformed, unknown, expired, revoked). Set ALLOT_API_KEY.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden matches a 403: the key lacks the scope the request
	// needs; the APIError's Detail names the key and the scope.
	ErrForbidden = errors.New("forbidden")
	// ErrQuota matches a 429: the key is over its quota of requests per
	// second, waiting requests or held leases; try again later.
	ErrQuota = errors.New("over quota")
)

// Codes of the server's problem documents (APIError.Code), one for every
// code the server answers with (the server's one list of codes, checked
// against these by a test). The sentinels above cover the common cases;
// these are for callers that branch on the precise reason.
const (
	// CodeInvalidJSON: the body is not a JSON object, or is missing.
	CodeInvalidJSON = "invalid_json"
	// CodeUnknownField: a field or query parameter the route does not know.
	CodeUnknownField = "unknown_field"
	// CodeInvalidField: a field of the wrong type, out of bounds or
	// missing; APIError.Field names it.
	CodeInvalidField = "invalid_field"
	// CodeBodyTooLarge: the body is larger than the server takes.
	CodeBodyTooLarge = "body_too_large"
	// CodeBodyTimeout: the body did not arrive in time.
	CodeBodyTimeout = "body_timeout"
	// CodeUnsupportedMediaType: a body that is not application/json.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeWebsocketRequired: the events route asked without a websocket
	// handshake.
	CodeWebsocketRequired = "websocket_required"
	// CodeLimitNotFound: no limit has this name or id.
	CodeLimitNotFound = "limit_not_found"
	// CodeLeaseNotFound: the lease expired, was released or was revoked.
	CodeLeaseNotFound = "lease_not_found"
	// CodeNameTaken: another limit has this name.
	CodeNameTaken = "name_taken"
	// CodeLocked: the slots are not free (see LockedError).
	CodeLocked = "locked"
	// CodeSlotsExceedLimit: more slots than the limit has; the request
	// can never be granted.
	CodeSlotsExceedLimit = "slots_exceed_limit"
	// CodeNoDecay: a rate-limit request on a limit without slot decay.
	CodeNoDecay = "no_decay"
	// CodeTemplateNotAcquirable: a template's name (with *) in an
	// acquisition.
	CodeTemplateNotAcquirable = "template_not_acquirable"
	// CodeLimitZero: a v1 tag (label) increment on a limit of 0.
	CodeLimitZero = "limit_zero"
	// CodeRunNotFound: no run has this id.
	CodeRunNotFound = "run_not_found"
	// CodeRunExists: a different run has this id.
	CodeRunExists = "run_exists"
	// CodeRunFinished: the run is in a final state; its process must stop.
	CodeRunFinished = "run_finished"
	// CodeTicketConflict: the ticket is in use by a different request.
	CodeTicketConflict = "ticket_conflict"
	// CodeTicketSuperseded: a newer request with the same ticket took over.
	CodeTicketSuperseded = "ticket_superseded"
	// CodeInvalidTransition: the run's state does not allow this change.
	CodeInvalidTransition = "invalid_transition"
	// CodeUnauthenticated: no API key, or one that is malformed, unknown,
	// expired or revoked (ErrUnauthorized).
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden: the key lacks the scope the request needs
	// (ErrForbidden).
	CodeForbidden = "forbidden"
	// CodeQuotaExceeded: the key is over its quota (ErrQuota).
	CodeQuotaExceeded = "quota_exceeded"
	// CodeKeyNotFound: no API key has this id.
	CodeKeyNotFound = "key_not_found"
	// CodeAuthOff: a key or audit route of a server without --auth keys.
	CodeAuthOff = "auth_off"
	// CodeUnavailable: the server cannot answer now.
	CodeUnavailable = "unavailable"
	// CodeMethodNotAllowed: the route exists, but not with this method.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeNotFound: no route has this path.
	CodeNotFound = "not_found"
	// CodeInternal: a defect of the server; it is logged.
	CodeInternal = "internal"
)

// APIError is an error answer from the server: an application/problem+json
// document, or whatever else came back with a status of 400 or more.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the server's stable machine-readable code (for example
	// "limit_not_found", "slots_exceed_limit"); empty if the answer was
	// not a problem document.
	Code string
	// Detail says what went wrong, for people.
	Detail string
	// Field is the request field at fault, for validation errors.
	Field string
	// Limits names the limits at fault when a request can never be granted.
	Limits []string
	// RequestID is the X-Request-Id the Client sent, to find the request
	// in the server's logs.
	RequestID string
}

func (e *APIError) Error() string {
	s := strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Field != "" {
		s += " (field " + e.Field + ")"
	}
	return s
}

// Is reports whether the answer is of the kind target names.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrLimitNotFound:
		return e.Code == CodeLimitNotFound
	case ErrLeaseNotFound:
		return e.Status == http.StatusGone || e.Code == CodeLeaseNotFound
	case ErrLocked:
		return e.Status == http.StatusLocked
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrInvalid:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusUnprocessableEntity
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrQuota:
		return e.Status == http.StatusTooManyRequests
	}
	return false
}

// LockedError is a 423: the slots were not free. It matches ErrLocked.
type LockedError struct {
	// RetryAfter is the server's estimate of when the slots may be free.
	RetryAfter time.Duration
	// API is the answer itself.
	API *APIError
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("slots not free, retry after %s", e.RetryAfter)
}

// Is reports whether target is ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the answer.
func (e *LockedError) Unwrap() error {
	if e.API == nil {
		return nil
	}
	return e.API
}

// problemDoc is the server's error body: RFC 9457 with allot's members, and
// Prefect's {"detail"} or {"exception_message"} for answers from a Prefect
// server.
type problemDoc struct {
	Code             string   `json:"code"`
	Detail           any      `json:"detail"`
	Field            string   `json:"field"`
	Limits           []string `json:"limits"`
	RetryAfter       *float64 `json:"retry_after"`
	ExceptionMessage string   `json:"exception_message"`
}

// parseRetryAfter reads a Retry-After header: seconds (allot and Prefect
// send a decimal number) or an HTTP date.
func parseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(h, 64); err == nil && s >= 0 && s < 1e9 {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}
