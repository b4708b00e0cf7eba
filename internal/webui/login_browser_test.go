package webui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/server"
)

// bootstrapKey is the admin key of the keyed test servers.
var bootstrapKey = "allot_0123456789ab_" + strings.Repeat("cd", 32)

// newKeyedTab starts a real server with --auth keys and opens a tab on
// it; the tab's SDK client uses the bootstrap admin key.
func newKeyedTab(t *testing.T) *tab {
	t.Helper()
	browser(t) // skips before starting a server without Chromium
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	cfg := server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Auth: server.AuthKeys, BootstrapKey: bootstrapKey,
		Listening: func(a net.Addr) { addr <- a.String() }}
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start in 30 s")
	}
	c, err := allot.NewClient(allot.WithURL(base+"/api"), allot.WithAPIKey(bootstrapKey))
	if err != nil {
		t.Fatal(err)
	}
	return openTab(t, base, c)
}

// apiKey makes a key with scopes through the API; it returns its id and
// token.
func apiKey(t *testing.T, base string, scopes ...string) (string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": strings.Join(scopes, " "), "scopes": scopes})
	resp := apiPost(t, base+"/api/admin/keys", body)
	defer resp.Body.Close()
	var k struct{ ID, Key string }
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %v", resp.StatusCode, err)
	}
	return k.ID, k.Key
}

func apiPost(t *testing.T, url string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bootstrapKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// login pastes key into the login form the tab was sent to.
func (tb *tab) login(key string) {
	tb.t.Helper()
	tb.do("open the login page", chromedp.Navigate(tb.base+"/ui/limits"), chromedp.WaitVisible(chromedp.CSS("#key")))
	tb.do("paste the key and log in",
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS(`form[action="/ui/login"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#limits-table")))
	tb.waitJS(5*time.Second, "htmx loaded", `typeof htmx !== "undefined" && document.readyState === "complete"`)
}

// forgive waits for a console error that contains s and from then on
// ignores every such error (the browser may log one twice): a test that provokes a refusal expects the browser to log its
// failed load.
func (tb *tab) forgive(s string) {
	tb.t.Helper()
	eventually(tb.t, liveWithin, "the browser logs the refusal ("+s+")", func() bool {
		for _, e := range tb.consoleErrors() {
			if strings.Contains(e, s) {
				return true
			}
		}
		return false
	})
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.expected = append(tb.expected, s)
}

// TestLoginWithReadKey logs in with a read key: the pages offer no action,
// and a POST forged from the page is refused.
func TestLoginWithReadKey(t *testing.T) {
	t.Parallel()
	tb := newKeyedTab(t)
	if _, err := tb.c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 2}); err != nil {
		t.Fatal(err)
	}
	_, readKey := apiKey(t, tb.base, "read")
	tb.login(readKey)
	if got := tb.text("#limits-table tbody th a"); got != "db" {
		t.Errorf("the read key's list: first limit %q, want db", got)
	}
	if n := eval[int](tb, `document.querySelectorAll('a[href="/ui/limits/new"]').length`); n != 0 {
		t.Errorf("the read key is offered New limit")
	}
	tb.open("/ui/limits/db")
	if n := eval[int](tb, `document.querySelectorAll('a[href$="/edit"], a[href$="/delete"], form[action$="/active"]').length`); n != 0 {
		t.Errorf("the read key is offered %d actions on a limit's page", n)
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/ui/limits/db/delete", {method: "POST"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Errorf("a POST forged by the read key's page: %d, %v; want 403", status, err)
	}
	tb.forgive("403")
	if _, err := tb.c.GetLimit(t.Context(), "db"); err != nil {
		t.Errorf("the limit after the forged delete: %v", err)
	}
	// Logging out lands on the login page.
	tb.do("log out", chromedp.Click(chromedp.CSS(`form[action="/ui/logout"] button`)), chromedp.WaitVisible(chromedp.CSS("#key")))
}

// TestLoginWithAdminKeyThenRevoke logs in with an admin key and creates a
// limit through the form; revoking the key through the API closes the open
// page's live stream and the page lands on the login page.
func TestLoginWithAdminKeyThenRevoke(t *testing.T) {
	t.Parallel()
	tb := newKeyedTab(t)
	id, adminKey := apiKey(t, tb.base, "admin")
	tb.login(adminKey)
	tb.do("go to the form", chromedp.Click(chromedp.CSS(`a[href="/ui/limits/new"]`)), chromedp.WaitVisible(chromedp.CSS("#name")))
	tb.do("fill in and submit",
		chromedp.SendKeys(chromedp.CSS("#name"), "db-pool"),
		chromedp.SetValue(chromedp.CSS("#limit"), "3"),
		chromedp.Click(chromedp.CSS(`main button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#holders")))
	if l, err := tb.c.GetLimit(t.Context(), "db-pool"); err != nil || l.Limit != 3 {
		t.Fatalf("SDK: %+v, %v; want db-pool with limit 3", l, err)
	}
	tb.waitJS(5*time.Second, "htmx loaded", `typeof htmx !== "undefined" && document.readyState === "complete"`)
	// The page's live stream is open once a change refreshes it.
	lease, err := tb.c.Acquire(t.Context(), []string{"db-pool"}, allot.Holder("process", "p1", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.WithoutCancel(t.Context()))
	tb.within(liveWithin, "the holder shows live", chromedp.WaitVisible(chromedp.CSS(`tr[data-lease="`+lease.ID()+`"]`)))
	resp := apiPost(t, tb.base+"/api/admin/keys/"+id+"/revoke", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	tb.within(liveWithin, "the page lands on the login page", chromedp.WaitVisible(chromedp.CSS("#key")))
	if got := eval[string](tb, `location.pathname + location.search`); !strings.HasPrefix(got, "/ui/login?next=%2Fui%2Flimits%2F") {
		t.Errorf("after the revocation the page is at %q, want the login", got)
	}
	tb.open("/ui/runs")
	if got := eval[string](tb, `location.pathname`); got != "/ui/login" {
		t.Errorf("the next navigation lands on %q, want /ui/login", got)
	}
}

// TestCrossOriginPostsRefused posts the login form and a limit form from
// another origin (a page served by another server): both are refused.
func TestCrossOriginPostsRefused(t *testing.T) {
	t.Parallel()
	tb := newKeyedTab(t)
	_, adminKey := apiKey(t, tb.base, "admin")
	tb.login(adminKey)
	evil := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		action, field := tb.base+"/ui/limits", `<input name="name" value="evil"><input name="limit" value="1">`
		if r.URL.Path == "/login" {
			action, field = tb.base+"/ui/login", `<input name="key" value="`+adminKey+`">`
		}
		_, _ = w.Write([]byte(`<!doctype html><title>evil</title><form method="post" action="` + action + `">` + field +
			`<button id="go" type="submit">go</button></form>`))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = evil.Serve(ln) }()
	t.Cleanup(func() { _ = evil.Close() })
	// localhost and 127.0.0.1 are different sites to the browser.
	evilBase := "http://localhost:" + strings.Split(ln.Addr().String(), ":")[1]
	for _, path := range []string{"/login", "/form"} {
		tb.do("open the other origin's "+path, chromedp.Navigate(evilBase+path), chromedp.WaitVisible(chromedp.CSS("#go")))
		tb.do("submit it", chromedp.Click(chromedp.CSS("#go")))
		// The page navigates: poll, and let an evaluation that meets the
		// navigation try again.
		var got string
		eventually(t, liveWithin, "the post answered", func() bool {
			ctx, cancel := context.WithTimeout(tb.ctx, time.Second)
			defer cancel()
			v, err := chromedp.Run(ctx, chromedp.Evaluate[string](
				`location.href.startsWith("`+tb.base+`") && document.readyState === "complete" ? document.body.innerText : ""`))
			got = v
			return err == nil && v != ""
		})
		if !strings.Contains(strings.ToLower(got), "cross-origin") {
			t.Errorf("the cross-origin POST to %s answered %q, want a refusal", path, got)
		}
		tb.forgive("403")
	}
	// The refusals are plain text, so the browser asks for /favicon.ico,
	// which the API refuses without a key.
	tb.forgive("favicon.ico")
	if _, err := tb.c.GetLimit(t.Context(), "evil"); err == nil {
		t.Errorf("the cross-origin form created a limit")
	}
}
