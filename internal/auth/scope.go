package auth

import (
	"context"
	"fmt"
	"strings"

	"github.com/allot-dev/allot/internal/sema"
)

// Action is what a scope allows.
type Action uint8

// The actions.
const (
	// Read: every GET, the event stream, metrics, the OpenAPI document.
	Read Action = iota + 1
	// Acquire: increment, increment-with-lease, renew, release, decrement,
	// runs, on the limits a glob matches.
	Acquire
	// Manage: create, update, delete and reset the limits a glob matches,
	// templates included.
	Manage
	// Admin: keys, revoking any lease, the audit log, everything.
	Admin
)

// String returns the action as scopes spell it.
func (a Action) String() string {
	switch a {
	case Read:
		return "read"
	case Acquire:
		return "acquire"
	case Manage:
		return "manage"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Scope is one entry of a key's scopes: an action and, for acquire and
// manage, the glob of the names it covers.
type Scope struct {
	Action Action
	Glob   string
}

// String returns the scope as it is written: read, acquire:GLOB,
// manage:GLOB, admin.
func (s Scope) String() string {
	if s.Action == Acquire || s.Action == Manage {
		return s.Action.String() + ":" + s.Glob
	}
	return s.Action.String()
}

// covers reports whether s allows a on name.
func (s Scope) covers(a Action, name string) bool {
	if s.Action == Admin {
		return true
	}
	if s.Action != a {
		return false
	}
	if a == Read {
		return true
	}
	return s.Glob == name || sema.MatchPattern(s.Glob, name)
}

// ParseScope parses one scope. A glob must be a valid limit name (a '*'
// stands for any run of characters).
func ParseScope(s string) (Scope, error) {
	switch s {
	case "read":
		return Scope{Action: Read}, nil
	case "admin":
		return Scope{Action: Admin}, nil
	}
	verb, glob, ok := strings.Cut(s, ":")
	var a Action
	switch verb {
	case "acquire":
		a = Acquire
	case "manage":
		a = Manage
	}
	if !ok || a == 0 {
		return Scope{}, fmt.Errorf("scope %q: want read, acquire:GLOB, manage:GLOB or admin", s)
	}
	if why := sema.ValidateName(glob); why != "" {
		return Scope{}, fmt.Errorf("scope %q: the glob %s", s, why)
	}
	return Scope{Action: a, Glob: glob}, nil
}

// ParseScopes parses a key's scopes; a key needs at least one.
func ParseScopes(ss []string) ([]Scope, error) {
	if len(ss) == 0 {
		return nil, fmt.Errorf("a key needs at least one scope")
	}
	out := make([]Scope, 0, len(ss))
	for _, s := range ss {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Principal is who a request acts as: a key with its scopes. It is
// immutable; Done is closed when the key is revoked.
type Principal struct {
	KeyID  string
	Name   string
	Scopes []Scope
	// revoked is done when the key is revoked; nil for a principal made
	// outside a keyring.
	revoked context.Context
}

// Can reports whether p may do a on the limit called name (name is ignored
// for Read and Admin).
func (p *Principal) Can(a Action, name string) bool {
	for _, s := range p.Scopes {
		if s.covers(a, name) {
			return true
		}
	}
	return false
}

// CanSome reports whether p may do a on some name: what a route needs
// before the names are known.
func (p *Principal) CanSome(a Action) bool {
	for _, s := range p.Scopes {
		if s.Action == Admin || s.Action == a {
			return true
		}
	}
	return false
}

// Check returns a *ForbiddenError for the first of names that p may not do
// a on, or nil: all or nothing, like an acquisition.
func (p *Principal) Check(a Action, names ...string) error {
	for _, n := range names {
		if !p.Can(a, n) {
			return &ForbiddenError{KeyID: p.KeyID, KeyName: p.Name, Action: a, Name: n}
		}
	}
	return nil
}

// Done is closed when p's key is revoked: streams and long polls opened
// with it end then.
func (p *Principal) Done() <-chan struct{} {
	if p.revoked == nil {
		return nil
	}
	return p.revoked.Done()
}

// WithRevocation returns a context derived from ctx that also ends when p's
// key is revoked, and the function that releases it. A transport serves a
// request with it, so that the request's streams and long polls end with
// the key.
func WithRevocation(ctx context.Context, p *Principal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	if p.revoked == nil {
		return ctx, func() { cancel(nil) }
	}
	stop := context.AfterFunc(p.revoked, func() { cancel(ErrRevoked) })
	return ctx, func() { stop(); cancel(nil) }
}

// CertPrincipals makes the principals of client certificates from a map
// of common names to scopes. Their KeyID is "cert:" and the name; they are
// never revoked (remove the mapping, or the certificate from the CA).
func CertPrincipals(m map[string][]string) (map[string]*Principal, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]*Principal, len(m))
	for name, ss := range m {
		scopes, err := ParseScopes(ss)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", name, err)
		}
		out[name] = &Principal{KeyID: "cert:" + name, Name: name, Scopes: scopes}
	}
	return out, nil
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries, or nil: with
// authentication off there is none, and everything is allowed.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Check checks ctx's principal, if any, as Principal.Check does.
func Check(ctx context.Context, a Action, names ...string) error {
	p := FromContext(ctx)
	if p == nil {
		return nil
	}
	return p.Check(a, names...)
}

// KeyID returns the id of ctx's key, or "" without one.
func KeyID(ctx context.Context) string {
	if p := FromContext(ctx); p != nil {
		return p.KeyID
	}
	return ""
}
