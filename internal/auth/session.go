package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// SessionCookie is the name of the web UI's session cookie.
const SessionCookie = "allot_session"

// ErrNoSession is a session id that names no live session: unknown,
// logged out, idle too long, or its key revoked or expired.
var ErrNoSession = errors.New("no such session")

// ErrTooManyLogins is a login refused because its address tried too often.
var ErrTooManyLogins = errors.New("too many login attempts from this address; wait a minute")

// Sessions are the web UI's logins: a key pasted once buys a random
// session id (never the key), kept in memory only (a restart logs every
// browser out), bound to its key, that ends after Idle without use, when
// it is logged out, or when its key is revoked or expires. Logins are
// throttled per remote address.
type Sessions struct {
	keys *Keyring
	idle time.Duration
	now  func() time.Time

	mu     sync.Mutex
	byID   map[string]*session
	tries  map[netip.Addr]*rate.Limiter
	perMin int
}

type session struct {
	p      *Principal
	last   time.Time
	ctx    context.Context // ends with the session
	cancel context.CancelCauseFunc
	stop   func() bool // releases the watch of the key's revocation
}

// DefaultSessionIdle is how long a session lives without use.
const DefaultSessionIdle = 12 * time.Hour

// maxSessions bounds the sessions held (and maxAddrs the addresses whose
// logins are counted): beyond it the oldest idle sessions are dropped.
const (
	maxSessions = 10000
	maxAddrs    = 10000
)

// NewSessions returns the sessions of keys, which end after idle without
// use (zero: DefaultSessionIdle); now is the clock (nil: time.Now).
func NewSessions(keys *Keyring, idle time.Duration, now func() time.Time) *Sessions {
	if idle <= 0 {
		idle = DefaultSessionIdle
	}
	if now == nil {
		now = time.Now
	}
	return &Sessions{keys: keys, idle: idle, now: now, byID: map[string]*session{},
		tries: map[netip.Addr]*rate.Limiter{}, perMin: 10}
}

// Idle is how long a session lives without use.
func (s *Sessions) Idle() time.Duration { return s.idle }

// Login checks key (a token as pasted) for a
// request from remote (host:port or host) and returns a new session's id.
// Each address may try 10 times a minute (a burst of 10):
// ErrTooManyLogins beyond; ErrBadKey or ErrNoKey for a key that does not
// authenticate.
func (s *Sessions) Login(key, remote string) (string, *Principal, error) {
	now := s.now()
	if !s.allow(remote, now) {
		return "", nil, ErrTooManyLogins
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", nil, ErrNoKey
	}
	t, ok := ParseToken(key)
	if !ok {
		return "", nil, ErrBadKey
	}
	p, _, err := s.keys.authenticate(t)
	if err != nil {
		return "", nil, err
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	ss := &session{p: p, last: now}
	ss.ctx, ss.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	s.byID[id] = ss
	if p.revoked != nil {
		ss.stop = context.AfterFunc(p.revoked, func() { s.end(id, ErrRevoked) })
	}
	return id, p, nil
}

// allow takes one login attempt of remote's address.
func (s *Sessions) allow(remote string, now time.Time) bool {
	ap, err := netip.ParseAddrPort(remote)
	addr := ap.Addr()
	if err != nil {
		if addr, err = netip.ParseAddr(remote); err != nil {
			addr = netip.Addr{} // all unparsable addresses share one budget
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lim := s.tries[addr]
	if lim == nil {
		if len(s.tries) >= maxAddrs {
			clear(s.tries)
		}
		lim = rate.NewLimiter(rate.Every(time.Minute/time.Duration(s.perMin)), s.perMin)
		s.tries[addr] = lim
	}
	return lim.AllowN(now, 1)
}

// sweep drops the sessions idle too long, and the oldest beyond
// maxSessions; called with mu held.
func (s *Sessions) sweep(now time.Time) {
	var oldest string
	for id, ss := range s.byID {
		if now.Sub(ss.last) >= s.idle {
			s.endLocked(id, ErrNoSession)
			continue
		}
		if oldest == "" || ss.last.Before(s.byID[oldest].last) {
			oldest = id
		}
	}
	if len(s.byID) >= maxSessions && oldest != "" {
		s.endLocked(oldest, ErrNoSession)
	}
}

// Lookup returns the principal of session id and a context that ends with
// the session (logout, revocation), and marks the session used.
func (s *Sessions) Lookup(id string) (*Principal, context.Context, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[id]
	if ss == nil {
		return nil, nil, ErrNoSession
	}
	if now.Sub(ss.last) >= s.idle || !s.keys.valid(ss.p.KeyID, now) {
		s.endLocked(id, ErrNoSession)
		return nil, nil, ErrNoSession
	}
	ss.last = now
	return ss.p, ss.ctx, nil
}

// Logout ends session id; an unknown id is no error.
func (s *Sessions) Logout(id string) { s.end(id, ErrNoSession) }

// Len returns the number of sessions held.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

func (s *Sessions) end(id string, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(id, cause)
}

func (s *Sessions) endLocked(id string, cause error) {
	ss := s.byID[id]
	if ss == nil {
		return
	}
	delete(s.byID, id)
	if ss.stop != nil {
		ss.stop()
	}
	ss.cancel(cause)
}

// valid reports whether key id still authenticates at now (not revoked,
// not expired).
func (k *Keyring) valid(id string, now time.Time) bool {
	k.mu.RLock()
	e := k.ids[id]
	k.mu.RUnlock()
	return e != nil && e.key.Revoked.IsZero() && (e.key.Expires.IsZero() || now.Before(e.key.Expires))
}
