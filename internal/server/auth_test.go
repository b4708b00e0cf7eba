package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// uiClient is a browser's view of a server with keys: its cookies, no
// redirects followed, and an Origin on every POST.
type uiClient struct {
	t      *testing.T
	base   string
	origin string
	cookie *http.Cookie
}

func (c *uiClient) do(method, path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequestWithContext(c.t.Context(), method, c.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == "POST" {
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		if c.origin != c.base {
			req.Header.Set("Sec-Fetch-Site", "cross-site")
		}
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == "allot_session" {
			c.cookie = ck
			if ck.MaxAge < 0 {
				c.cookie = nil
			}
		}
	}
	return resp, string(b)
}

// newKey makes a key with scopes through the API with the admin key.
func newKey(t *testing.T, base, admin string, scopes ...string) (id, token string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": strings.Join(scopes, "+"), "scopes": scopes})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/api/admin/keys", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k struct{ ID, Key string }
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create key: %d %v", resp.StatusCode, err)
	}
	return k.ID, k.Key
}

// TestWebUIBehindTheGate: with --auth keys the web UI needs a key too: a
// browser without one is sent to the login page (a script's Basic
// credentials, the key as password, still work).
func TestWebUIBehindTheGate(t *testing.T) {
	t.Parallel()
	key := "allot_0123456789ab_" + strings.Repeat("cd", 32)
	addr := runServer(t, Config{Auth: AuthKeys, BootstrapKey: key})
	get := func(auth string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/ui/limits", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get(""); r.StatusCode != 303 || r.Header.Get("Location") != "/ui/login?next=%2Fui%2Flimits" {
		t.Errorf("the UI without a key: %d to %q; want 303 to the login", r.StatusCode, r.Header.Get("Location"))
	}
	if r := get("Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+key))); r.StatusCode != 200 {
		t.Errorf("the UI with the key as a browser sends it: %d, want 200", r.StatusCode)
	}
	if r := get("Bearer allot_0123456789ab_" + strings.Repeat("00", 32)); r.StatusCode != 401 {
		t.Errorf("the UI with a wrong key: %d, want 401", r.StatusCode)
	}
}

// TestWebUILogin logs in to the UI of a real server with keys: a read key
// sees no action and its posts are refused, a manage:<glob> key may
// change only the limits its glob matches, an admin key creates a limit;
// a cross-origin login or form is refused; logout and revocation end the
// session; logins are throttled per address.
func TestWebUILogin(t *testing.T) {
	t.Parallel()
	admin := "allot_0123456789ab_" + strings.Repeat("cd", 32)
	addr := runServer(t, Config{Auth: AuthKeys, BootstrapKey: admin})
	base := "http://" + addr
	_, readKey := newKey(t, base, admin, "read")
	_, manageKey := newKey(t, base, admin, "read", "manage:team-*")
	adminID, adminKey := newKey(t, base, admin, "admin")

	// The login page is open to anyone; pages are not.
	anon := &uiClient{t: t, base: base, origin: base}
	if resp, body := anon.do("GET", "/ui/login?next=/ui/runs", nil); resp.StatusCode != 200 || !strings.Contains(body, `<label for="key">`) {
		t.Fatalf("login page: %d", resp.StatusCode)
	}
	if resp, _ := anon.do("POST", "/ui/limits", url.Values{"name": {"x"}, "limit": {"1"}}); resp.StatusCode != 401 {
		t.Errorf("a POST without a session: %d, want 401", resp.StatusCode)
	}
	if resp, _ := anon.do("POST", "/ui/login", url.Values{"key": {"allot_0123456789ab_" + strings.Repeat("00", 32)}}); resp.StatusCode != 401 || anon.cookie != nil {
		t.Errorf("a wrong key: %d, cookie %v; want 401 and none", resp.StatusCode, anon.cookie)
	}
	// Another origin may not log in.
	evil := &uiClient{t: t, base: base, origin: "http://evil.example"}
	if resp, _ := evil.do("POST", "/ui/login", url.Values{"key": {adminKey}}); resp.StatusCode != 403 || evil.cookie != nil {
		t.Errorf("a cross-origin login: %d, cookie %v; want 403 and none", resp.StatusCode, evil.cookie)
	}

	// A read key: no action offered, every post refused.
	ro := &uiClient{t: t, base: base, origin: base}
	resp, _ := ro.do("POST", "/ui/login", url.Values{"key": {readKey}, "next": {"/ui/runs"}})
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/ui/runs" || ro.cookie == nil {
		t.Fatalf("login with the read key: %d to %q, cookie %v", resp.StatusCode, resp.Header.Get("Location"), ro.cookie)
	}
	if c := ro.cookie; !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/ui" || strings.Contains(c.Value, readKey[19:]) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/ui, not the key", c)
	}
	resp, body := ro.do("GET", "/ui/limits", nil)
	if resp.StatusCode != 200 || strings.Contains(body, "/ui/limits/new") || !strings.Contains(body, "Log out") {
		t.Errorf("the read key's limits page: %d, offers New: %v, offers Log out: %v", resp.StatusCode,
			strings.Contains(body, "/ui/limits/new"), strings.Contains(body, "Log out"))
	}
	if resp, _ := ro.do("POST", "/ui/limits", url.Values{"name": {"team-a"}, "limit": {"1"}}); resp.StatusCode != 403 {
		t.Errorf("the read key's POST: %d, want 403", resp.StatusCode)
	}

	// An admin key creates a limit; a cross-origin form is refused.
	ad := &uiClient{t: t, base: base, origin: base}
	if resp, _ := ad.do("POST", "/ui/login", url.Values{"key": {adminKey}}); resp.StatusCode != 303 || resp.Header.Get("Location") != "/ui/limits" {
		t.Fatalf("admin login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, name := range []string{"team-a", "other"} {
		if resp, _ := ad.do("POST", "/ui/limits", url.Values{"name": {name}, "limit": {"2"}, "active": {"on"}}); resp.StatusCode != 303 {
			t.Fatalf("admin creates %s: %d, want 303", name, resp.StatusCode)
		}
	}
	forged := &uiClient{t: t, base: base, origin: "http://evil.example", cookie: ad.cookie}
	if resp, _ := forged.do("POST", "/ui/limits", url.Values{"name": {"evil"}, "limit": {"1"}}); resp.StatusCode != 403 {
		t.Errorf("a cross-origin form with the admin's cookie: %d, want 403", resp.StatusCode)
	}

	// manage:team-* may edit team-a, not other.
	mg := &uiClient{t: t, base: base, origin: base}
	mg.do("POST", "/ui/login", url.Values{"key": {manageKey}})
	for name, want := range map[string]bool{"team-a": true, "other": false} {
		_, body := mg.do("GET", "/ui/limits/"+name, nil)
		if got := strings.Contains(body, "/edit"); got != want {
			t.Errorf("manage:team-* on %s offers Edit: %v, want %v", name, got, want)
		}
		status := 303
		if !want {
			status = 403
		}
		if resp, _ := mg.do("POST", "/ui/limits/"+name+"/active", url.Values{"active": {"false"}}); resp.StatusCode != status {
			t.Errorf("manage:team-* disables %s: %d, want %d", name, resp.StatusCode, status)
		}
	}

	// Logout ends the session.
	old := ro.cookie
	if resp, _ := ro.do("POST", "/ui/logout", nil); resp.StatusCode != 303 || ro.cookie != nil {
		t.Errorf("logout: %d, cookie %v", resp.StatusCode, ro.cookie)
	}
	ro.cookie = old
	if resp, _ := ro.do("GET", "/ui/limits", nil); resp.StatusCode != 303 {
		t.Errorf("after logout: %d, want 303 to the login", resp.StatusCode)
	}

	// Revoking the admin key ends its session, and its open live stream.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/ui/live", nil)
	req.AddCookie(ad.cookie)
	live, err := http.DefaultClient.Do(req)
	if err != nil || live.StatusCode != 200 {
		t.Fatalf("live stream: %v %v", live, err)
	}
	defer live.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, live.Body); ended <- err }()
	req, _ = http.NewRequestWithContext(t.Context(), "POST", base+"/api/admin/keys/"+adminID+"/revoke", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("the live stream stayed open after its key was revoked")
	}
	if resp, _ := ad.do("GET", "/ui/limits", nil); resp.StatusCode != 303 {
		t.Errorf("a revoked key's session: %d, want 303 to the login", resp.StatusCode)
	}

	// Logins are throttled per address: 10 a minute.
	var last int
	for range 12 {
		resp, _ := anon.do("POST", "/ui/login", url.Values{"key": {"nope"}})
		last = resp.StatusCode
	}
	if last != 429 {
		t.Errorf("the 12th and later logins from one address: %d, want 429", last)
	}
}

// TestReplicasRefuseClientCA: a follower forwards to the leader, which
// would not see the client's certificate, so --tls-client-ca with
// --database refuses to start rather than serve without it.
func TestReplicasRefuseClientCA(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), Config{DatabaseURL: "postgres://127.0.0.1:1/none", TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "--tls-client-ca is not available with --database") {
		t.Errorf("Run with --database and --tls-client-ca: %v, want a refusal naming the flag", err)
	}
}
