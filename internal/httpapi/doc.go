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
// Every route is a row of one table (handler.table): its pattern and an op
// that states how it reads its request, which coordinator call it makes and
// how it encodes the answer; one generic adapter (serve, route.go) runs
// every op, and answers every error through the one error table. Request
// bodies are read by package jsonbody. The handlers hold no state of their
// own and make no decision about slots: every rule lives in packages sema
// and coord.
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
// Where the answers differ from Prefect's (leases from 1 s, waiting in line,
// anonymous leases for plain increments, renewals, problem+json errors, JSON
// bodies only, the tag-limit routes' reset, delete and validation), they do
// so on purpose: docs/prefect.md in the repository is the one list, with the
// reason for each.
package httpapi
