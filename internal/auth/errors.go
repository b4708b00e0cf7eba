package auth

import (
	"errors"
	"time"
)

var (
	// ErrNoKey: the request carries no key.
	ErrNoKey = errors.New("this server requires an API key: send Authorization: Bearer KEY")
	// ErrBadKey: the request's key is malformed, unknown, expired or
	// revoked. One error for all of them, so that a caller cannot probe
	// which ids exist.
	ErrBadKey = errors.New("the API key is not valid: it is malformed, unknown, expired or revoked")
	// ErrRevoked is the cause of a request context ended by its key's
	// revocation (see WithRevocation).
	ErrRevoked = errors.New("the API key was revoked")
	// ErrKeyNotFound: no key has that id (key management).
	ErrKeyNotFound = errors.New("key not found")
)

// ForbiddenError says that a key lacks the scope a request needs.
type ForbiddenError struct {
	KeyID   string
	KeyName string
	Action  Action
	// Name is the limit at fault; empty for an action on no name.
	Name string
}

func (e *ForbiddenError) Error() string {
	s := "key " + e.KeyName + " (" + e.KeyID + ") lacks " + e.Action.String()
	if e.Name != "" {
		s += " on " + e.Name
	}
	return s
}

// QuotaError says that a key is over one of its quotas; it may try again
// after RetryAfter.
type QuotaError struct {
	KeyID      string
	What       string // "requests", "waiting requests", "held leases"
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	return "key " + e.KeyID + " is over its quota of " + e.What
}
