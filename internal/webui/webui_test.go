package webui_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
	"github.com/allot-dev/allot/internal/webui"
)

// uiServer is a coordinator and the UI served from it on loopback.
type uiServer struct {
	c   *coord.Coordinator
	url string
}

func newUI(t *testing.T, opts webui.Options) *uiServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := coord.New(ctx, memstore.New(), coord.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	mux := http.NewServeMux()
	ui := webui.New(c, opts)
	mux.Handle("/ui/", ui)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	return &uiServer{c: c, url: srv.URL}
}

func (s *uiServer) do(t *testing.T, method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestSecurityHeaders checks the CSP, nosniff, no-store and the immutable
// content-hashed static files.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{})
	resp, body := s.do(t, "GET", "/ui/limits", nil, nil)
	h := resp.Header
	if got := h.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") || !strings.Contains(got, "style-src 'self'") || strings.Contains(got, "unsafe") {
		t.Errorf("CSP %q: want only the server's own scripts and styles", got)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: nosniff %q, cache %q", h.Get("X-Content-Type-Options"), h.Get("Cache-Control"))
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
		t.Errorf("the page has an inline script or style")
	}
	m := regexp.MustCompile(`src="(/ui/static/htmx-2\.0\.11\.min\.[0-9a-f]{12}\.js)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no content-hashed htmx in the page")
	}
	resp, js := s.do(t, "GET", m[1], nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || !strings.Contains(js, "htmx") {
		t.Errorf("static file: %d, cache %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	resp, _ = s.do(t, "GET", "/ui/limits?part=table", nil, map[string]string{"HX-Request": "true"})
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("fragment cache %q, want no-store", resp.Header.Get("Cache-Control"))
	}
}

// TestCrossOriginPostRefused checks that a form posted from another site
// changes nothing.
func TestCrossOriginPostRefused(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{})
	form := url.Values{"name": {"evil"}, "limit": {"1"}, "active": {"true"}}
	resp, _ := s.do(t, "POST", "/ui/limits", form, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	if _, err := s.c.ReadLimit(t.Context(), "evil", sema.Summary); !errors.Is(err, sema.ErrLimitNotFound) {
		t.Errorf("the cross-site POST created the limit: %v", err)
	}
	resp, _ = s.do(t, "POST", "/ui/limits", form, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin POST: %d, want 303", resp.StatusCode)
	}
}

// TestFormErrorsNamed checks that a bad field is named, marked and kept.
func TestFormErrorsNamed(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{})
	resp, body := s.do(t, "POST", "/ui/limits", url.Values{"name": {"db"}, "limit": {"many"}}, nil)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `id="limit" name="limit" value="many" inputmode="numeric" required aria-invalid="true"`) {
		t.Errorf("bad limit: %d, body without the marked field", resp.StatusCode)
	}
	s.do(t, "POST", "/ui/limits", url.Values{"name": {"db"}, "limit": {"1"}}, nil)
	resp, body = s.do(t, "POST", "/ui/limits", url.Values{"name": {"db"}, "limit": {"1"}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, `role="alert"`) {
		t.Errorf("taken name: %d", resp.StatusCode)
	}
	resp, _ = s.do(t, "GET", "/ui/limits/nope", nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown limit: %d, want 404", resp.StatusCode)
	}
}

// principal is a test principal allowed some actions.
type principal map[webui.Action]bool

func (p principal) Can(a webui.Action) bool { return p[a] }

// auth answers with the principal it holds; nil: no session.
type auth struct{ p atomic.Pointer[principal] }

func (a *auth) Principal(r *http.Request) (webui.Principal, error) {
	p := a.p.Load()
	if p == nil {
		return nil, errors.New("no session")
	}
	return *p, nil
}

// TestReadOnlyPrincipal checks that a principal that may only read sees
// no action and cannot post one.
func TestReadOnlyPrincipal(t *testing.T) {
	t.Parallel()
	a := &auth{}
	ro := principal{webui.Read: true}
	a.p.Store(&ro)
	s := newUI(t, webui.Options{Auth: a, LoginURL: "/ui/login"})
	v, err := s.c.CreateLimit(t.Context(), sema.LimitSpec{Name: "tag:db", Limit: 1, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.c.Acquire(t.Context(), coord.AcquireRequest{Names: []string{"tag:db"}, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, body := s.do(t, "GET", "/ui/limits/"+v.ID.String(), nil, nil)
	for _, action := range []string{"/edit", "/delete", "/reset", "/revoke", "/active", "/ui/limits/new"} {
		if strings.Contains(body, action) {
			t.Errorf("a read-only page offers %s", action)
		}
	}
	if !strings.Contains(body, g.Lease.ID.String()) {
		t.Errorf("the read-only page does not show the holder")
	}
	for _, p := range []string{"/ui/limits", "/ui/limits/" + v.ID.String() + "/delete", "/ui/limits/" + v.ID.String() + "/reset",
		"/ui/leases/" + g.Lease.ID.String() + "/revoke", "/ui/limits/" + v.ID.String() + "/active"} {
		resp, _ := s.do(t, "POST", p, url.Values{"name": {"x"}, "limit": {"1"}}, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("read-only POST %s: %d, want 403", p, resp.StatusCode)
		}
	}
	if _, err := s.c.ReadLimit(t.Context(), v.ID.String(), sema.Summary); err != nil {
		t.Errorf("the limit is gone after read-only posts: %v", err)
	}

	// Without a session: pages send to the login, posts are refused.
	a.p.Store(nil)
	resp, _ := s.do(t, "GET", "/ui/limits", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login?next=") {
		t.Errorf("no session GET: %d to %q, want 303 to the login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = s.do(t, "POST", "/ui/limits", url.Values{"name": {"x"}, "limit": {"1"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no session POST: %d, want 401", resp.StatusCode)
	}
}

// TestLiveStreamEndsWithSession checks that the live stream closes once
// its session is no longer valid (a revoked key).
func TestLiveStreamEndsWithSession(t *testing.T) {
	t.Parallel()
	a := &auth{}
	rw := principal{webui.Read: true}
	a.p.Store(&rw)
	s := newUI(t, webui.Options{Auth: a, Heartbeat: 50 * time.Millisecond})
	resp, err := http.Get(s.url + "/ui/live")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	// HEAD answers the headers and ends.
	if resp, err := http.Head(s.url + "/ui/live"); err != nil || resp.StatusCode != 200 {
		t.Errorf("HEAD /ui/live: %v %v", resp, err)
	}
	a.p.Store(nil)
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("the stream stayed open after the session ended")
	}
}

// TestLiveCoalesces checks that a burst of grants costs a page a few
// "change" events, not one per grant, and that events on other limits
// are not sent to a page that filters.
func TestLiveCoalesces(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{LiveInterval: 200 * time.Millisecond})
	ctx := t.Context()
	for _, n := range []string{"db", "other"} {
		if _, err := s.c.CreateLimit(ctx, sema.LimitSpec{Name: n, Limit: 1000, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get(s.url + "/ui/live?limit=db")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	changes := make(chan struct{}, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "event: change" {
				changes <- struct{}{}
			}
		}
	}()
	// Events on another limit send nothing.
	if _, err := s.c.Acquire(ctx, coord.AcquireRequest{Names: []string{"other"}, Slots: 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const n = 300
	for i := range n {
		if _, err := s.c.Acquire(ctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Holder: sema.Holder{Type: "process", ID: fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	burst := time.Since(start)
	// The last change comes at most one interval after the burst.
	got := 0
	deadline := time.After(burst + 2*time.Second)
loop:
	for {
		select {
		case <-changes:
			got++
		case <-deadline:
			break loop
		}
	}
	most := int(burst/(200*time.Millisecond)) + 2
	if got < 1 || got > most {
		t.Errorf("%d grants in %s sent %d change events; want 1 to %d", n, burst, got, most)
	}
}

// TestLimitsPaginationAndSearch checks the server-side filter and pages.
func TestLimitsPaginationAndSearch(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{})
	ctx := t.Context()
	for i := range 120 {
		if _, err := s.c.CreateLimit(ctx, sema.LimitSpec{Name: fmt.Sprintf("job-%03d", i), Limit: 1, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.c.CreateLimit(ctx, sema.LimitSpec{Name: "tag:etl", Limit: 1, Active: true}); err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile(`<th scope="row"><a href="/ui/limits/`)
	for _, tc := range []struct {
		query string
		rows  int
		has   string
	}{
		{"", 50, "121 limit(s), page 1 of 3"},
		{"page=3", 21, "page 3 of 3"},
		{"q=job-11", 10, "10 limit(s)"},
		{"kind=tag", 1, "tag:etl"},
		{"kind=template", 0, "No limits"},
	} {
		_, body := s.do(t, "GET", "/ui/limits?"+tc.query, nil, nil)
		if got := len(rows.FindAllString(body, -1)); got != tc.rows || !strings.Contains(body, tc.has) {
			t.Errorf("?%s: %d rows (want %d), has %q: %v", tc.query, got, tc.rows, tc.has, strings.Contains(body, tc.has))
		}
	}
	resp, _ := s.do(t, "GET", "/ui/limits?kind=bogus", nil, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad kind: %d, want 400", resp.StatusCode)
	}
}

// TestRowsEscaped checks that what holders and waiters call themselves
// reaches the page escaped (the rows are written outside the template).
func TestRowsEscaped(t *testing.T) {
	t.Parallel()
	s := newUI(t, webui.Options{})
	ctx := t.Context()
	if _, err := s.c.CreateLimit(ctx, sema.LimitSpec{Name: "db", Limit: 1, Active: true}); err != nil {
		t.Fatal(err)
	}
	evil := `<script>alert("x")</script>`
	if _, err := s.c.Acquire(ctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1,
		Holder: sema.Holder{Type: "process", ID: evil, Metadata: map[string]string{"k": evil}}}); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_, _ = s.c.Acquire(wctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1, Wait: time.Minute, Holder: sema.Holder{Type: "process", ID: evil}})
	}()
	var body string
	for deadline := time.Now().Add(3 * time.Second); ; {
		_, body = s.do(t, "GET", "/ui/limits/db", nil, nil)
		if strings.Contains(body, `class="position"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(body, evil) {
		t.Errorf("a holder's name reached the page unescaped")
	}
	if n := strings.Count(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"); n < 3 {
		t.Errorf("escaped holder names: %d, want holder, metadata and waiter", n)
	}
}
