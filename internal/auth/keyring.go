package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/allot-dev/allot/internal/sema"
)

// KeyStore keeps key records durable: the coordinator, which commits them
// with the rest of the state.
type KeyStore interface {
	Keys(ctx context.Context) ([]sema.Key, error)
	PutKeys(ctx context.Context, keys ...sema.Key) error
}

// MaxNameLength is the longest key name accepted, in bytes.
const MaxNameLength = 128

// Keyring authenticates requests against the keys in a KeyStore. It keeps a
// copy of every key in memory; changes go to the store first and to the
// copy once durable.
type Keyring struct {
	st  KeyStore
	now func() time.Time

	wmu sync.Mutex // serialises changes
	mu  sync.RWMutex
	ids map[string]*entry
}

// entry is a key as the keyring holds it.
type entry struct {
	key      sema.Key // LastUsed as of the last flush
	p        *Principal
	revoked  context.Context // done on revocation
	revoke   context.CancelFunc
	lastUsed atomic.Int64 // unix nanoseconds; 0: not since the flush
}

// NewKeyring loads the keys of st. now is the clock (nil: time.Now).
func NewKeyring(ctx context.Context, st KeyStore, now func() time.Time) (*Keyring, error) {
	if now == nil {
		now = time.Now
	}
	keys, err := st.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	k := &Keyring{st: st, now: now, ids: make(map[string]*entry, len(keys))}
	for _, key := range keys {
		e, err := newEntry(key)
		if err != nil {
			return nil, err
		}
		k.ids[key.ID] = e
	}
	return k, nil
}

func newEntry(k sema.Key) (*entry, error) {
	scopes, err := ParseScopes(k.Scopes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	e := &entry{key: k}
	e.revoked, e.revoke = context.WithCancel(context.Background())
	if !k.Revoked.IsZero() {
		e.revoke()
	}
	e.p = &Principal{KeyID: k.ID, Name: k.Name, Scopes: scopes, revoked: e.revoked}
	return e, nil
}

// Len returns the number of keys, revoked ones included.
func (k *Keyring) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.ids)
}

// Authenticate returns the principal of the key an Authorization header
// carries: ErrNoKey without one, ErrBadKey for a key that is malformed,
// unknown, expired, revoked or whose secret does not match.
func (k *Keyring) Authenticate(header string) (*Principal, error) {
	t, err := ParseAuthorization(header)
	if err != nil {
		return nil, err
	}
	p, _, err := k.authenticate(t)
	return p, err
}

// AuthenticateID is Authenticate that also returns the key id the header
// named, when it named one (for the audit of refusals), even if it fails.
func (k *Keyring) AuthenticateID(header string) (*Principal, string, error) {
	t, err := ParseAuthorization(header)
	if err != nil {
		return nil, "", err
	}
	return k.authenticate(t)
}

func (k *Keyring) authenticate(t Token) (*Principal, string, error) {
	k.mu.RLock()
	e := k.ids[t.ID]
	k.mu.RUnlock()
	if e == nil || !matches(e.key.Hash, t.Secret) {
		return nil, t.ID, ErrBadKey
	}
	now := k.now()
	if !e.key.Revoked.IsZero() || (!e.key.Expires.IsZero() && !now.Before(e.key.Expires)) {
		return nil, t.ID, ErrBadKey
	}
	e.lastUsed.Store(now.UnixNano())
	return e.p, t.ID, nil
}

// NewKey describes a key to create.
type NewKey struct {
	Name   string
	Scopes []string
	// TTL is how long from its creation the key works; zero: for ever.
	TTL time.Duration
}

func checkName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return &InvalidError{Field: "name", Detail: "must not be empty"}
	case len(name) > MaxNameLength:
		return &InvalidError{Field: "name", Detail: fmt.Sprintf("must be at most %d bytes", MaxNameLength)}
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return &InvalidError{Field: "name", Detail: "must not contain control characters"}
	}
	return nil
}

// InvalidError says what is wrong with a key's field.
type InvalidError struct {
	Field  string
	Detail string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Detail }

// Create makes a new key and returns its token (the only time the secret is
// seen) and its record (without the hash).
func (k *Keyring) Create(ctx context.Context, nk NewKey) (Token, sema.Key, error) {
	return k.create(ctx, Generate(), nk)
}

// Import stores a key whose token was made elsewhere (ALLOT_BOOTSTRAP_KEY).
// It does nothing if a key with its id exists.
func (k *Keyring) Import(ctx context.Context, t Token, nk NewKey) (created bool, err error) {
	k.mu.RLock()
	_, ok := k.ids[t.ID]
	k.mu.RUnlock()
	if ok {
		return false, nil
	}
	_, _, err = k.create(ctx, t, nk)
	return err == nil, err
}

func (k *Keyring) create(ctx context.Context, t Token, nk NewKey) (Token, sema.Key, error) {
	if err := checkName(nk.Name); err != nil {
		return Token{}, sema.Key{}, err
	}
	if _, err := ParseScopes(nk.Scopes); err != nil {
		return Token{}, sema.Key{}, &InvalidError{Field: "scopes", Detail: err.Error()}
	}
	if nk.TTL < 0 {
		return Token{}, sema.Key{}, &InvalidError{Field: "expires_seconds", Detail: "must be positive"}
	}
	now := k.now().UTC().Truncate(time.Millisecond)
	key := sema.Key{ID: t.ID, Name: nk.Name, Scopes: slices.Clone(nk.Scopes), Hash: t.Hash(), Created: now}
	if nk.TTL > 0 {
		key.Expires = now.Add(nk.TTL)
	}
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if _, ok := k.ids[t.ID]; ok {
		return Token{}, sema.Key{}, fmt.Errorf("key %s exists", t.ID)
	}
	if err := k.st.PutKeys(ctx, key); err != nil {
		return Token{}, sema.Key{}, err
	}
	e, err := newEntry(key)
	if err != nil {
		return Token{}, sema.Key{}, err
	}
	k.mu.Lock()
	k.ids[key.ID] = e
	k.mu.Unlock()
	return t, public(key), nil
}

// public returns k without its hash.
func public(k sema.Key) sema.Key {
	k.Hash = nil
	return k
}

// Get returns a key's record, without its hash, with its last use as of
// now.
func (k *Keyring) Get(id string) (sema.Key, error) {
	k.mu.RLock()
	e := k.ids[id]
	k.mu.RUnlock()
	if e == nil {
		return sema.Key{}, ErrKeyNotFound
	}
	return e.view(), nil
}

func (e *entry) view() sema.Key {
	key := public(e.key)
	if n := e.lastUsed.Load(); n != 0 {
		key.LastUsed = time.Unix(0, n).UTC()
	}
	return key
}

// List returns every key, without hashes, by creation time.
func (k *Keyring) List() []sema.Key {
	k.mu.RLock()
	out := make([]sema.Key, 0, len(k.ids))
	for _, e := range k.ids {
		out = append(out, e.view())
	}
	k.mu.RUnlock()
	slices.SortFunc(out, func(a, b sema.Key) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Revoke revokes a key: from when it returns, the key is refused, and the
// Done channel of its principal is closed. Revoking a revoked key returns
// it unchanged.
func (k *Keyring) Revoke(ctx context.Context, id string) (before, after sema.Key, err error) {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	e := k.ids[id]
	if e == nil {
		return sema.Key{}, sema.Key{}, ErrKeyNotFound
	}
	before = e.view()
	if !e.key.Revoked.IsZero() {
		return before, before, nil
	}
	key := e.withLastUsed()
	key.Revoked = k.now().UTC().Truncate(time.Millisecond)
	if err := k.st.PutKeys(ctx, key); err != nil {
		return sema.Key{}, sema.Key{}, err
	}
	k.replace(e, key)
	return before, public(key), nil
}

// Rotate makes a successor of key id with its name and scopes, and makes
// the old key stop after grace (at once for zero). It returns the
// successor's token and record.
func (k *Keyring) Rotate(ctx context.Context, id string, grace time.Duration) (Token, sema.Key, error) {
	if grace < 0 {
		return Token{}, sema.Key{}, &InvalidError{Field: "grace_seconds", Detail: "must not be negative"}
	}
	k.wmu.Lock()
	defer k.wmu.Unlock()
	e := k.ids[id]
	if e == nil {
		return Token{}, sema.Key{}, ErrKeyNotFound
	}
	if !e.key.Revoked.IsZero() {
		return Token{}, sema.Key{}, &InvalidError{Field: "id", Detail: "key " + id + " is revoked"}
	}
	now := k.now().UTC().Truncate(time.Millisecond)
	t := Generate()
	succ := sema.Key{ID: t.ID, Name: e.key.Name, Scopes: slices.Clone(e.key.Scopes), Hash: t.Hash(),
		Created: now, Expires: e.key.Expires}
	old := e.withLastUsed()
	if end := now.Add(grace); old.Expires.IsZero() || end.Before(old.Expires) {
		old.Expires = end
	}
	if grace == 0 {
		old.Revoked = now
	}
	if err := k.st.PutKeys(ctx, old, succ); err != nil {
		return Token{}, sema.Key{}, err
	}
	k.replace(e, old)
	ne, err := newEntry(succ)
	if err != nil {
		return Token{}, sema.Key{}, err
	}
	k.mu.Lock()
	k.ids[succ.ID] = ne
	k.mu.Unlock()
	return t, public(succ), nil
}

// withLastUsed returns e's record with its last use as of now.
func (e *entry) withLastUsed() sema.Key {
	key := e.key
	if n := e.lastUsed.Load(); n != 0 {
		key.LastUsed = time.Unix(0, n).UTC()
	}
	return key
}

// replace puts key in e's place; called with wmu held, after the store has
// it. A revocation closes the principal's Done channel.
func (k *Keyring) replace(e *entry, key sema.Key) {
	ne := &entry{key: key, p: e.p, revoked: e.revoked, revoke: e.revoke}
	ne.lastUsed.Store(e.lastUsed.Load())
	k.mu.Lock()
	k.ids[key.ID] = ne
	k.mu.Unlock()
	// An authenticate that read e before the swap may still store into
	// e.lastUsed; it is one request's time, picked up by the next use.
	if !key.Revoked.IsZero() {
		e.revoke()
	}
}

// Flush writes the last-used times that changed since the last flush, in
// one batch.
func (k *Keyring) Flush(ctx context.Context) error {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	k.mu.RLock()
	var dirty []*entry
	for _, e := range k.ids {
		if n := e.lastUsed.Load(); n != 0 && n != e.key.LastUsed.UnixNano() {
			dirty = append(dirty, e)
		}
	}
	k.mu.RUnlock()
	if len(dirty) == 0 {
		return nil
	}
	keys := make([]sema.Key, len(dirty))
	for i, e := range dirty {
		keys[i] = e.withLastUsed()
	}
	if err := k.st.PutKeys(ctx, keys...); err != nil {
		return err
	}
	for i, e := range dirty {
		k.replace(e, keys[i])
	}
	return nil
}

// Run flushes last-used times every interval until ctx is done, then once
// more.
func (k *Keyring) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last uses since the last flush; if the store is already
			// gone they are lost, which costs a last-used time, no more.
			_ = k.Flush(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			if err := k.Flush(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("flush key use: %w", err)
			}
		}
	}
}
