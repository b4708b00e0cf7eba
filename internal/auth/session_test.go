package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSessions: a pasted key buys a session that is not the key, is bound
// to it, ends when idle too long, on logout, when the key expires, and at
// once (its context too) when the key is revoked; logins are throttled
// per address.
func TestSessions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	kr, err := NewKeyring(ctx, &memKeys{}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := kr.Create(ctx, NewKey{Name: "alice", Scopes: []string{"read"}, TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSessions(kr, time.Hour, clk.now)

	for _, bad := range []string{"", "  ", "nope", tok.String() + "0"} {
		if _, _, err := s.Login(bad, "10.0.0.1:1"); !errors.Is(err, ErrBadKey) && !errors.Is(err, ErrNoKey) {
			t.Errorf("Login(%q) = %v, want ErrBadKey or ErrNoKey", bad, err)
		}
	}
	id, p, err := s.Login(" "+tok.String()+"\n", "10.0.0.2:1")
	if err != nil || p.KeyID != tok.ID {
		t.Fatalf("Login = %v, %v", p, err)
	}
	if len(id) < 40 || id == tok.Secret {
		t.Errorf("session id %q: want a random id of 256 bits, not the key", id)
	}
	got, sctx, err := s.Lookup(id)
	if err != nil || got != p || sctx.Err() != nil {
		t.Fatalf("Lookup = %v, %v, %v", got, sctx, err)
	}

	// Idle: used within the hour it lives on, past it it ends.
	clk.add(59 * time.Minute)
	if _, _, err := s.Lookup(id); err != nil {
		t.Errorf("Lookup after 59 min: %v", err)
	}
	clk.add(time.Hour)
	if _, _, err := s.Lookup(id); !errors.Is(err, ErrNoSession) {
		t.Errorf("Lookup after an idle hour: %v, want ErrNoSession", err)
	}
	if !errors.Is(context.Cause(sctx), ErrNoSession) {
		t.Errorf("the idle session's context: %v", context.Cause(sctx))
	}

	// Logout.
	id, _, _ = s.Login(tok.String(), "10.0.0.2:1")
	s.Logout(id)
	if _, _, err := s.Lookup(id); !errors.Is(err, ErrNoSession) {
		t.Errorf("Lookup after logout: %v", err)
	}

	// Revocation ends the session and its context at once.
	id, _, _ = s.Login(tok.String(), "10.0.0.2:1")
	_, sctx, _ = s.Lookup(id)
	if _, _, err := kr.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sctx.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the session's context did not end with its key")
	}
	if !errors.Is(context.Cause(sctx), ErrRevoked) {
		t.Errorf("cause %v, want ErrRevoked", context.Cause(sctx))
	}
	if _, _, err := s.Lookup(id); !errors.Is(err, ErrNoSession) || s.Len() != 0 {
		t.Errorf("Lookup after revocation: %v, %d sessions left", err, s.Len())
	}

	// Expiry of the key.
	tok2, _, _ := kr.Create(ctx, NewKey{Name: "bob", Scopes: []string{"read"}, TTL: 30 * time.Minute})
	id, _, _ = s.Login(tok2.String(), "10.0.0.2:1")
	clk.add(20 * time.Minute)
	s.Lookup(id)
	clk.add(20 * time.Minute)
	if _, _, err := s.Lookup(id); !errors.Is(err, ErrNoSession) {
		t.Errorf("Lookup after the key expired: %v", err)
	}

	// Throttle: 10 a minute per address, other addresses unaffected.
	var last error
	for range 11 {
		_, _, last = s.Login("nope", "10.0.0.3:5")
	}
	if !errors.Is(last, ErrTooManyLogins) {
		t.Errorf("11th login from one address: %v, want ErrTooManyLogins", last)
	}
	if _, _, err := s.Login("nope", "10.0.0.4:5"); !errors.Is(err, ErrBadKey) {
		t.Errorf("another address: %v, want ErrBadKey", err)
	}
	clk.add(time.Minute)
	if _, _, err := s.Login("nope", "10.0.0.3:6"); !errors.Is(err, ErrBadKey) {
		t.Errorf("a minute later: %v, want ErrBadKey", err)
	}
}
