// Package allot is the Go client of allot, a coordination server that
// decides how many units of work may run at once and how often they may
// start, across processes, hosts and languages: Prefect 3's global
// concurrency limits, as a service of its own. The package imports only the
// standard library.
//
// # Connecting
//
// NewClient returns a Client for the server at ALLOT_API_URL (default
// http://127.0.0.1:4200/api), sending ALLOT_API_KEY as a bearer token if it
// is set; WithURL and WithAPIKey override both. A Client is safe for
// concurrent use. Every request carries an X-Request-Id, which error
// answers report back (APIError.RequestID). Connection errors and 5xx
// answers are retried with jittered exponential backoff (WithRetry);
// other answers are not.
//
// # Holding slots
//
// Concurrency runs a function while holding slots of one or more limits:
//
//	err := client.Concurrency(ctx, []string{"warehouse"}, func(ctx context.Context) error {
//		return load(ctx)
//	})
//
// It takes the slots of every named limit at once, or none (so no lock
// ordering can deadlock); renews the lease in the background while the
// function runs; and releases it when the function returns or panics.
// Acquire and Lease.Release do the same in two steps, for work that does
// not fit in one function; TryAcquire never waits.
//
// # Waiting
//
// When the slots are not free, an acquisition stands in line on the
// server, first in first out, and the server answers the moment the slots
// are granted: no client polls. It waits until ctx is done or Timeout
// passes (an error matching ErrTimeout); MaxRetries bounds how often it asks
// again when a long poll ran out (WithLongPoll; one hour by default). A
// caller that gives up leaves the line; a grant made in that instant is
// released by the server.
//
// # Leases
//
// A lease lives LeaseDuration (default 300 s) unless it is renewed. The
// Lease renews itself at a third of that, so two renewals in a row can
// fail before it expires; each renewal is itself retried. A holder that
// crashes stops renewing, and its slots go to the next in line one lease
// duration after its last renewal.
//
// A lease is lost when the server no longer has it (its renewal is answered
// 410, for instance after the server was down longer than the lease) or
// when it could not be renewed before it expired. Lease.Done closes and
// Lease.Err matches ErrLeaseLost; Concurrency cancels its function's
// context with that cause and returns an error matching ErrLeaseLost. Work
// that must not overlap with the next holder's should stop then, and a
// resource that can should check the lease's FencingToken.
//
// # Rate limits
//
// A limit with a slot decay (LimitSpec.SlotDecayPerSecond) is a rate limit:
// RateLimit takes slots that are never given back but decay at that rate,
// so calls are admitted at most that often, in bursts of up to the limit.
//
// # Strict mode
//
// As in Prefect, an acquisition none of whose limits exist logs a warning
// and goes on without slots, and a renewal that fails is logged and tried
// again until the lease would have expired. With Strict both are errors:
// the acquisition fails with ErrLimitNotFound, and the lease is lost at the
// first failed renewal.
//
// # Managing limits
//
// CreateLimit, GetLimit, ListLimits (and AllLimits), UpdateLimit and
// DeleteLimit manage limits. EnsureLimit creates a limit or brings an
// existing one to the given size, in one request; it is safe to call from
// many processes at once, so start-up code can call it unconditionally. A
// limit whose name has a '*' (resource:*) is a template: every new name it
// matches is created with its settings on first use, and removed after
// its IdleSeconds unused.
//
// The limits of tags (task runs) and labels (flow runs) are one type,
// TagLimit, behind two handles with the same calls: Client.Tags and
// Client.Labels (Create, Get, List, All, Reset, Delete).
//
// # Errors
//
// Answers of the server are *APIError values with the HTTP status, the
// server's stable code, a detail and the request id; a 423 is a
// *LockedError with the server's Retry-After. Callers branch with
// errors.Is on the sentinels (ErrNotFound, ErrLimitNotFound,
// ErrLeaseNotFound, ErrLeaseLost, ErrLocked, ErrTimeout, ErrConflict,
// ErrInvalid, ErrUnavailable) and errors.As for the data.
//
// # Testing
//
// Package allottest starts an allot server inside a test, on a temporary
// store, and returns a Client for it, so code that uses this package can be
// tested against the real thing.
package allot
