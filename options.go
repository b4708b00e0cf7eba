package allot

import (
	"fmt"
	"maps"
	"time"
)

// DefaultLeaseDuration is how long a lease lives unless renewed, when
// LeaseDuration does not say otherwise; it is Prefect's default.
const DefaultLeaseDuration = 300 * time.Second

// Option tunes one acquisition: Acquire, TryAcquire, Concurrency or
// RateLimit.
type Option func(*settings)

// settings are the options of one acquisition.
type settings struct {
	slots         int
	timeout       time.Duration
	hasTimeout    bool
	maxRetries    int // -1: no bound
	leaseDuration time.Duration
	holder        *Identity
	strict        bool
}

func newSettings(opts []Option) (settings, error) {
	s := settings{slots: 1, maxRetries: -1, leaseDuration: DefaultLeaseDuration}
	for _, o := range opts {
		o(&s)
	}
	switch {
	case s.slots < 1:
		return s, fmt.Errorf("%w: Occupy(%d): slots must be at least 1", ErrInvalid, s.slots)
	case s.leaseDuration <= 0:
		return s, fmt.Errorf("%w: LeaseDuration(%s) must be positive", ErrInvalid, s.leaseDuration)
	}
	return s, nil
}

// Occupy sets how many slots of every named limit to take (default 1).
func Occupy(slots int) Option { return func(s *settings) { s.slots = slots } }

// Timeout bounds how long an acquisition waits for its slots. When it
// passes, the acquisition fails with an error that matches ErrTimeout and
// ErrLocked. Zero or less means: do not wait at all. Without Timeout an
// acquisition waits until ctx is done.
func Timeout(d time.Duration) Option {
	return func(s *settings) { s.timeout, s.hasTimeout = max(d, 0), true }
}

// MaxRetries bounds how often an acquisition asks again after the server
// said the slots are not free (423): after a long poll ran out, or, against
// a server that does not let requests wait, after Retry-After. 0 fails on
// the first refusal. Without it there is no bound.
func MaxRetries(n int) Option { return func(s *settings) { s.maxRetries = max(n, 0) } }

// LeaseDuration sets how long a lease lives unless renewed (default
// DefaultLeaseDuration; the server accepts 1 s to 24 h). A holder that dies
// gives its slots back this long after its last renewal; a live one renews
// at a third of it. RateLimit ignores it.
func LeaseDuration(d time.Duration) Option { return func(s *settings) { s.leaseDuration = d } }

// Holder says who holds the lease, as the server shows it among a limit's
// holders and waiters: a kind ("process", "task_run", "flow_run",
// "deployment"), an id, and free-form metadata. The default is kind
// "process" with id "hostname:pid". RateLimit ignores it.
func Holder(kind, id string, metadata map[string]string) Option {
	h := Identity{Kind: kind, ID: id, Metadata: maps.Clone(metadata)}
	return func(s *settings) { s.holder = &h }
}

// Strict makes what is otherwise logged an error, as Prefect's strict=True:
// an acquisition none of whose limits exist fails with ErrLimitNotFound
// instead of going on without slots, and a renewal that fails (after its
// retries) ends the lease at once instead of being tried again until the
// lease would expire.
func Strict() Option { return func(s *settings) { s.strict = true } }
