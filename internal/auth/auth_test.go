package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/internal/sema"
)

const testKey = "allot_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestGenerateParses(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		tok := Generate()
		got, ok := ParseToken(tok.String())
		if !ok || got != tok {
			t.Fatalf("ParseToken(Generate()) = %v, %v; want %v, true", got, ok, tok)
		}
		if seen[tok.Secret] {
			t.Fatalf("secret repeated")
		}
		seen[tok.Secret] = true
		if len(tok.Secret)*4 < 128 {
			t.Fatalf("secret of %d bits, want at least 128", len(tok.Secret)*4)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	want, _ := ParseToken(testKey)
	tests := []struct {
		name   string
		header string
		err    error
	}{
		{"bearer", "Bearer " + testKey, nil},
		{"bearer lower case", "bearer " + testKey, nil},
		{"bearer extra spaces", "Bearer   " + testKey + " ", nil},
		{"basic key", "Basic " + b64(testKey), nil},
		{"basic user:key", "Basic " + b64("prefect:"+testKey), nil},
		{"basic empty user", "Basic " + b64(":"+testKey), nil},
		{"empty", "", ErrNoKey},
		{"scheme only", "Bearer", ErrBadKey},
		{"unknown scheme", "Token " + testKey, ErrBadKey},
		{"bearer garbage", "Bearer nope", ErrBadKey},
		{"basic not base64", "Basic !!!", ErrBadKey},
		{"basic key:user", "Basic " + b64(testKey+":x"), ErrBadKey},
		{"upper case hex", "Bearer " + strings.ToUpper(testKey), ErrBadKey},
		{"short secret", "Bearer " + testKey[:len(testKey)-1], ErrBadKey},
		{"long secret", "Bearer " + testKey + "0", ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseAuthorization(tt.header)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseAuthorization(%q) error = %v, want %v", tt.header, err, tt.err)
			}
			if tt.err == nil && got != want {
				t.Errorf("ParseAuthorization(%q) = %v, want %v", tt.header, got, want)
			}
			if err != nil && strings.Contains(err.Error(), want.Secret) {
				t.Errorf("error %q repeats the secret", err)
			}
		})
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("Bearer " + testKey)
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testKey)))
	f.Add("Basic =")
	f.Add("bearer  allot__")
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := ParseAuthorization(h)
		if err != nil {
			if tok != (Token{}) {
				t.Fatalf("a token with an error: %v", tok)
			}
			if len(h) > 16 && strings.Contains(err.Error(), h) {
				t.Fatalf("error %q repeats the header", err)
			}
			return
		}
		if again, ok := ParseToken(tok.String()); !ok || again != tok {
			t.Fatalf("token %v does not round-trip", tok)
		}
	})
}

func TestScopes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scopes []string
		action Action
		name   string
		want   bool
	}{
		{[]string{"read"}, Read, "", true},
		{[]string{"read"}, Acquire, "x", false},
		{[]string{"acquire:warehouse"}, Acquire, "warehouse", true},
		{[]string{"acquire:warehouse"}, Acquire, "warehouse2", false},
		{[]string{"acquire:warehouse"}, Manage, "warehouse", false},
		{[]string{"acquire:warehouse"}, Read, "", false},
		{[]string{"acquire:resource:*"}, Acquire, "resource:42", true},
		{[]string{"acquire:resource:*"}, Acquire, "resource:", true},
		{[]string{"acquire:resource:*"}, Acquire, "other:42", false},
		{[]string{"acquire:*"}, Acquire, "anything", true},
		{[]string{"manage:tag:*"}, Manage, "tag:etl", true},
		{[]string{"manage:tag:*"}, Acquire, "tag:etl", false},
		{[]string{"read", "acquire:a"}, Acquire, "a", true},
		{[]string{"admin"}, Manage, "x", true},
		{[]string{"admin"}, Read, "", true},
		{[]string{"admin"}, Admin, "", true},
		{[]string{"manage:*"}, Admin, "", false},
	}
	for _, tt := range tests {
		scopes, err := ParseScopes(tt.scopes)
		if err != nil {
			t.Fatalf("ParseScopes(%q): %v", tt.scopes, err)
		}
		p := &Principal{KeyID: "0123456789ab", Name: "k", Scopes: scopes}
		if got := p.Can(tt.action, tt.name); got != tt.want {
			t.Errorf("%q Can(%v, %q) = %v, want %v", tt.scopes, tt.action, tt.name, got, tt.want)
		}
	}
}

func TestParseScopeRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "write", "acquire", "acquire:", "manage:a/b", "read:x", "admin:x", "acquire:a%b"} {
		if _, err := ParseScope(s); err == nil {
			t.Errorf("ParseScope(%q) = nil error, want one", s)
		}
	}
	if _, err := ParseScopes(nil); err == nil {
		t.Errorf("ParseScopes(nil) = nil error, want one")
	}
}

func TestCheckNamesKeyAndScope(t *testing.T) {
	t.Parallel()
	scopes, _ := ParseScopes([]string{"acquire:a", "acquire:b"})
	p := &Principal{KeyID: "0123456789ab", Name: "etl-workers", Scopes: scopes}
	err := p.Check(Acquire, "a", "b", "warehouse")
	var fe *ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("Check = %v, want a *ForbiddenError", err)
	}
	if got, want := err.Error(), "key etl-workers (0123456789ab) lacks acquire on warehouse"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if err := Check(context.Background(), Admin); err != nil {
		t.Errorf("Check without a principal = %v, want nil", err)
	}
}

// memKeys is a KeyStore in memory, counting its writes.
type memKeys struct {
	mu     sync.Mutex
	keys   map[string]sema.Key
	writes int
}

func (m *memKeys) Keys(ctx context.Context) ([]sema.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []sema.Key
	for _, k := range m.keys {
		out = append(out, k)
	}
	return out, nil
}

func (m *memKeys) PutKeys(ctx context.Context, keys ...sema.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = map[string]sema.Key{}
	}
	for _, k := range keys {
		m.keys[k.ID] = k
	}
	m.writes++
	return nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func bearer(t Token) string { return "Bearer " + t.String() }

func TestKeyring(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := &memKeys{}
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	kr, err := NewKeyring(ctx, st, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	tok, rec, err := kr.Create(ctx, NewKey{Name: "etl", Scopes: []string{"acquire:warehouse"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Hash != nil || rec.ID != tok.ID {
		t.Errorf("Create record = %+v: want id %s, no hash", rec, tok.ID)
	}
	if stored := st.keys[tok.ID]; slices.Contains([]string{string(stored.Hash)}, tok.Secret) || len(stored.Hash) != 32 {
		t.Errorf("stored hash %x: want 32 bytes, never the secret", stored.Hash)
	}
	p, err := kr.Authenticate(bearer(tok))
	if err != nil || p.KeyID != tok.ID || p.Name != "etl" {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	wrong := tok
	wrong.Secret = strings.Repeat("0", 64)
	if _, err := kr.Authenticate(bearer(wrong)); !errors.Is(err, ErrBadKey) {
		t.Errorf("wrong secret: %v, want ErrBadKey", err)
	}
	if _, err := kr.Authenticate(bearer(Generate())); !errors.Is(err, ErrBadKey) {
		t.Errorf("unknown key: %v, want ErrBadKey", err)
	}

	// Last use is kept in memory: many requests, no write, until Flush.
	writes := st.writes
	for range 100 {
		if _, err := kr.Authenticate(bearer(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if st.writes != writes {
		t.Errorf("authentications wrote %d times, want none", st.writes-writes)
	}
	if err := kr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := st.keys[tok.ID].LastUsed; !got.Equal(clk.now()) {
		t.Errorf("flushed LastUsed = %v, want %v", got, clk.now())
	}
	if err := kr.Flush(ctx); err != nil || st.writes != writes+1 {
		t.Errorf("second Flush: %v, %d writes; want nil, 1 in all", err, st.writes-writes)
	}

	// Rotation: the successor works, the old key until the grace ends.
	succ, srec, err := kr.Rotate(ctx, tok.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec.Scopes, srec.Scopes); diff != "" {
		t.Errorf("successor scopes (-want +got):\n%s", diff)
	}
	if _, err := kr.Authenticate(bearer(tok)); err != nil {
		t.Errorf("old key in its grace: %v", err)
	}
	clk.add(time.Minute)
	if _, err := kr.Authenticate(bearer(tok)); !errors.Is(err, ErrBadKey) {
		t.Errorf("old key after its grace: %v, want ErrBadKey", err)
	}
	ps, err := kr.Authenticate(bearer(succ))
	if err != nil {
		t.Fatal(err)
	}

	// Revocation: refused at once, Done closed.
	if _, _, err := kr.Revoke(ctx, succ.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ps.Done():
	default:
		t.Errorf("Done not closed by Revoke")
	}
	if _, err := kr.Authenticate(bearer(succ)); !errors.Is(err, ErrBadKey) {
		t.Errorf("revoked key: %v, want ErrBadKey", err)
	}
	// Durable: a new keyring over the same store knows all of it.
	kr2, err := NewKeyring(ctx, st, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr2.Authenticate(bearer(succ)); !errors.Is(err, ErrBadKey) {
		t.Errorf("revoked key after reload: %v, want ErrBadKey", err)
	}
	if kr2.Len() != 2 {
		t.Errorf("reloaded %d keys, want 2", kr2.Len())
	}
	clk.add(time.Hour)
	if _, _, err := kr.Revoke(ctx, "ffffffffffff"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Revoke of an unknown key: %v, want ErrKeyNotFound", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	t.Parallel()
	kr, err := NewKeyring(t.Context(), &memKeys{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		nk    NewKey
		field string
	}{
		{NewKey{Name: "", Scopes: []string{"read"}}, "name"},
		{NewKey{Name: "a\nb", Scopes: []string{"read"}}, "name"},
		{NewKey{Name: "a", Scopes: nil}, "scopes"},
		{NewKey{Name: "a", Scopes: []string{"write"}}, "scopes"},
		{NewKey{Name: "a", Scopes: []string{"read"}, TTL: -time.Second}, "expires_seconds"},
	} {
		_, _, err := kr.Create(t.Context(), tt.nk)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != tt.field {
			t.Errorf("Create(%+v) = %v, want an InvalidError of %s", tt.nk, err, tt.field)
		}
	}
}
