// Package httpapi is allot's REST/JSON transport: the Prefect-compatible
// global concurrency limit routes under /api/v2/concurrency_limits and tag
// limit routes under /api/concurrency_limits, allot's extensions (lease
// reads, waiting in line, holders and waiters, label limits under
// /api/label_limits, task runs and flow runs under /api/runs, server-sent
// events, health and readiness), Prometheus metrics and the OpenAPI
// document that describes all of them.
//
// # What it owns
//
// The handlers decode a request, check its shape, call the coordinator and
// encode the answer. They hold no state of their own and make no decision
// about slots: every rule lives in packages sema and coord.
//
// # Invariants
//
//   - Paths, field names and status codes of the v2 routes are Prefect 3's,
//     so Prefect clients and Prefect's documented curl calls work unchanged;
//     allot's additions are extra fields that Prefect clients ignore.
//   - Every error is application/problem+json with a stable snake_case
//     code (see errors.go for the one table that maps errors to answers),
//     a human detail (Prefect's own text where Prefect has one) and, for
//     validation errors, the JSON field at fault.
//   - No input yields a 5xx or a panic: malformed JSON, wrong types,
//     unknown fields, absurd numbers, bad names and oversized bodies are all
//     4xx. A recover handler turns a panic into a logged 500 as the last line
//     of defence; 503 means the coordinator cannot answer.
//
// # Deliberate differences from Prefect
//
//   - lease_duration may be as short as 1 s (Prefect: 60 s).
//   - A plain increment in mode concurrency takes an anonymous lease that
//     expires after lease_duration (default 300 s) unless decremented, so
//     slots of a crashed client come back (Prefect: held until decremented).
//   - Renew without a lease_duration keeps the lease's own duration
//     (Prefect: 300 s).
//   - Validation errors are problem+json, not FastAPI's
//     {"exception_message", "exception_detail"}.
//   - Request bodies must be JSON: a Content-Type other than
//     application/json (or +json) is refused with 415, which also keeps
//     browser forms on other sites from driving the API.
//   - Tag limits (v1): a tag that breaks the rules of limit names or a
//     negative concurrency_limit is 422 (Prefect: 500); the slots taken by
//     /increment and reset's slot_override are leases that expire after the
//     coordinator's V1LeaseDuration, an hour by default (Prefect: 100
//     years); reset revokes the leases (a run that held one is Crashed) and
//     gives slot_override ids only the slots that are free, after the
//     waiters, answering which got one (Prefect: null, and slots beyond the
//     limit); delete leaves the runs holding the limit running; decrement
//     names limits by their bare tag as increment does; filter pages over
//     tag limits only.
package httpapi
