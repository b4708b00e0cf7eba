// Package auth owns allot's authentication and authorisation: API keys
// (their format, generation and hashing), the Authorization header, scopes
// and their globs, the principal a request acts as, and the keyring that
// authenticates requests against the durable keys.
//
// # Keys
//
// A key reads allot_<id>_<secret>. The id (12 hex digits) is public: it is
// shown in lists, logs, metrics and refusals. The secret is 256 random bits
// in hex; only its SHA-256 is stored, and a presented secret is compared
// with it in constant time. A high-entropy secret needs no slow hash, so
// authenticating costs one SHA-256 and one map lookup per request.
//
// # Scopes
//
// A key has a list of scopes, each one of read, acquire:<glob>,
// manage:<glob> or admin; a glob is a limit name where '*' stands for any
// run of characters (the templates' rule). admin may do everything; the
// other scopes are independent (manage does not imply read).
//
// # What a transport uses
//
// A transport (the HTTP API, the web UI) does three things:
//
//  1. Keyring.Authenticate(r.Header.Get("Authorization")) gives the
//     *Principal a request acts as, or an error for a 401 (ErrNoKey,
//     ErrBadKey).
//  2. NewContext(ctx, p) puts it in the request's context; the coordinator
//     reads it back with FromContext and checks the names a request
//     touches with Principal.Check, in one place (internal/coord's
//     authz.go). With authentication off there is no principal, and every
//     check passes.
//  3. Principal.Can(action, name) answers what to show or offer (a UI's
//     buttons); Principal.Done() is closed when the key is revoked, so that
//     streams and long polls opened with it end.
//
// # Invariants
//
//   - A secret never leaves Generate's caller: it is in no record, log,
//     error or audit (errors name the key id and name only).
//   - A revoked key is refused from the request after Revoke returns, and
//     the Done channel of its principal is closed by then.
//   - Last-used times are kept in memory and written with the other key
//     changes by Flush, never one write per request.
package auth
