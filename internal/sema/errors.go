package sema

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	ErrLimitNotFound = errors.New("concurrency limit not found")
	ErrLeaseNotFound = errors.New("lease not found - it may have expired or been revoked")
	ErrNameTaken     = errors.New("a concurrency limit with this name already exists")
	ErrWaiterGone    = errors.New("waiter not found")
	ErrRunNotFound   = errors.New("run not found")
	ErrRunExists     = errors.New("a run with this id already exists")
	// ErrRunFinished reports a run in a final state, which holds nothing
	// and can be neither heartbeated nor moved to another state.
	ErrRunFinished = errors.New("run is in a final state")
	// ErrTicketConflict reports a request whose ticket names a lease or a
	// waiter of another request (other names, slots or mode).
	ErrTicketConflict = errors.New("this ticket belongs to a request for other names, slots or mode")
)

// NameTakenError reports the name a limit cannot take because another
// limit has it. It matches ErrNameTaken.
type NameTakenError struct{ Name string }

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("a limit named '%s' already exists", e.Name)
}

// Is reports whether target is ErrNameTaken.
func (e *NameTakenError) Is(target error) bool { return target == ErrNameTaken }

// InvalidError reports a bad argument and the field it came from.
type InvalidError struct {
	Field  string
	Detail string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Detail }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// NeverError reports a request that can never be granted, so it is refused
// at once instead of waiting forever.
type NeverError struct {
	Reason string   // "slots_exceed_limit", "no_decay", "template"
	Names  []string // the limits at fault
	Detail string
}

func (e *NeverError) Error() string { return e.Detail }

func slotsExceed(names []string) error {
	return &NeverError{Reason: "slots_exceed_limit", Names: names,
		Detail: "Slots requested is greater than the limit"}
}

func noDecay(names []string) error {
	return &NeverError{Reason: "no_decay", Names: names,
		Detail: fmt.Sprintf("Only concurrency limits with slot decay can be used for rate limiting. The following limits do not have a decay configured: '%s'", strings.Join(names, ","))}
}

// LockedError reports a request that cannot be granted now and did not ask
// to wait. RetryAfter is the mean wait the caller should jitter around.
type LockedError struct {
	RetryAfter time.Duration
	// Blocking is the limit that decided RetryAfter.
	Blocking string
	// Full names the active limits of the request, in request order, that
	// have no room or someone waiting: the ones it would wait for.
	Full []string
	// Used, Capacity and Waiting describe Full[0] when the refusal was
	// made: its slots in use, its limit and the requests in its line.
	Used, Capacity, Waiting int
}

// Error names the first limit the request would wait for and how full it
// is, e.g. `Concurrency limit "db" is full (10/10 slots in use)`.
func (e *LockedError) Error() string {
	if len(e.Full) == 0 {
		return fmt.Sprintf("Concurrency limit %q is full", e.Blocking)
	}
	if e.Used < e.Capacity && e.Waiting > 0 {
		return fmt.Sprintf("Concurrency limit %q has %d waiting in line (%d/%d slots in use)", e.Full[0], e.Waiting, e.Used, e.Capacity)
	}
	return fmt.Sprintf("Concurrency limit %q is full (%d/%d slots in use)", e.Full[0], e.Used, e.Capacity)
}

// TransitionError reports a run state change that the run's state does not
// allow.
type TransitionError struct {
	From, To RunState
	// Detail says why, for the caller to show.
	Detail string
}

func (e *TransitionError) Error() string { return e.Detail }

// ZeroLimitDetail is Prefect's text for a run that names a tag (or label)
// whose limit is 0: it would wait forever, so it fails at once.
func ZeroLimitDetail(kind RunKind, key string) string {
	what := "task"
	if kind == KindFlow {
		what = "flow run"
	}
	return fmt.Sprintf("The concurrency limit on %s %q is 0 and will deadlock if the %s tries to run again.", kind.Noun(), key, what)
}
