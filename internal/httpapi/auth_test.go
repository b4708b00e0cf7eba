package httpapi_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
)

// authClock is the keyring's clock, moved by the test.
type authClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *authClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *authClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// authBundle is a server with authentication on and a key per credential.
type authBundle struct {
	*testBundle
	kr    *auth.Keyring
	clk   *authClock
	creds map[string]string // credential → Authorization header ("" none)
	ids   map[string]string // credential → key id
}

func setupAuth(t *testing.T) *authBundle { return setupAuthWith(t, setupOpts{}) }

func setupAuthWith(t *testing.T, o setupOpts) *authBundle {
	t.Helper()
	a := &authBundle{clk: &authClock{}, creds: map[string]string{"none": ""}, ids: map[string]string{}}
	o.keys = func(c *coord.Coordinator) *auth.Keyring {
		kr, err := auth.NewKeyring(t.Context(), c, a.clk.now)
		if err != nil {
			t.Fatal(err)
		}
		a.kr = kr
		return kr
	}
	a.testBundle = setupWith(t, o)
	for name, scopes := range map[string][]string{
		"admin":         {"admin"},
		"read":          {"read"},
		"acquire-other": {"acquire:other", "acquire:tag:other", "acquire:label:other"},
		"acquire-name":  {"acquire:m", "acquire:tag:t", "acquire:label:l"},
		"manage":        {"manage:*"},
		"expired":       {"admin"},
		"revoked":       {"admin"},
		"victim":        {"read"},
	} {
		a.newKey(t, name, scopes, name == "expired")
	}
	a.clk.add(2 * time.Hour) // "expired" expires
	if _, _, err := a.kr.Revoke(t.Context(), a.ids["revoked"]); err != nil {
		t.Fatal(err)
	}
	a.creds["bad"] = "Bearer " + auth.Generate().String()
	a.creds["malformed"] = "Bearer not-a-key"
	return a
}

func (a *authBundle) newKey(t *testing.T, name string, scopes []string, expires bool) auth.Token {
	t.Helper()
	nk := auth.NewKey{Name: name, Scopes: scopes}
	if expires {
		nk.TTL = time.Hour
	}
	tok, _, err := a.kr.Create(t.Context(), nk)
	if err != nil {
		t.Fatal(err)
	}
	a.creds[name] = "Bearer " + tok.String()
	a.ids[name] = tok.ID
	return tok
}

// as sends a request with a credential's Authorization header.
func (a *authBundle) as(t testing.TB, cred, method, path string, body any) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, a.srv.URL+path, encodeBody(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h := a.creds[cred]; h != "" {
		req.Header.Set("Authorization", h)
	} else if cred != "none" {
		req.Header.Set("Authorization", cred) // a raw header
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if path == "/api/events" && resp.StatusCode == 200 {
		return response{status: resp.StatusCode, header: resp.Header} // a stream: its head is the answer
	}
	var buf strings.Builder
	_, _ = bufCopy(&buf, resp)
	return response{status: resp.StatusCode, header: resp.Header, body: []byte(buf.String())}
}

func bufCopy(b *strings.Builder, resp *http.Response) (int64, error) {
	var n int64
	p := make([]byte, 4096)
	for {
		m, err := resp.Body.Read(p)
		b.Write(p[:m])
		n += int64(m)
		if err != nil {
			return n, nil
		}
	}
}

// needOf is the decision the test expects of each operation: what the
// issue specifies, written out here independently of the server's table.
var needOf = map[string]string{
	"GET /health": "public", "GET /ready": "public",
	"GET /events": "read", "GET /events/in": "key", "GET /admin/version": "read",
	"POST /v2/concurrency_limits/delete": "manage", "PUT /v2/concurrency_limits/{id_or_name}": "manage",
	"DELETE /v2/concurrency_limits/tickets/{ticket}": "acquire",
	"GET /openapi.json": "read", "GET /openapi.yaml": "read", "GET /metrics": "read",
	"POST /v2/concurrency_limits/": "manage", "POST /v2/concurrency_limits/filter": "read",
	"POST /v2/concurrency_limits/increment": "acquire", "POST /v2/concurrency_limits/increment-with-lease": "acquire",
	"POST /v2/concurrency_limits/decrement": "acquire", "POST /v2/concurrency_limits/decrement-with-lease": "acquire",
	"POST /v2/concurrency_limits/leases/{lease_id}/renew": "acquire", "GET /v2/concurrency_limits/leases/{lease_id}/watch": "acquire",
	"POST /v2/concurrency_limits/leases/{lease_id}/revoke": "admin", "GET /v2/concurrency_limits/leases/{lease_id}": "read",
	"GET /v2/concurrency_limits/{id_or_name}": "read", "PATCH /v2/concurrency_limits/{id_or_name}": "manage",
	"DELETE /v2/concurrency_limits/{id_or_name}": "manage",
	"POST /concurrency_limits/":                  "manage", "POST /concurrency_limits/filter": "read",
	"POST /concurrency_limits/increment": "acquire", "POST /concurrency_limits/decrement": "acquire",
	"GET /concurrency_limits/{id}": "read", "DELETE /concurrency_limits/{id}": "manage",
	"GET /concurrency_limits/tag/{tag}": "read", "DELETE /concurrency_limits/tag/{tag}": "manage",
	"POST /concurrency_limits/tag/{tag}/reset": "manage",
	"POST /label_limits/":                      "manage", "POST /label_limits/filter": "read",
	"POST /label_limits/increment": "acquire", "POST /label_limits/decrement": "acquire",
	"GET /label_limits/{id}": "read", "DELETE /label_limits/{id}": "manage",
	"GET /label_limits/label/{label}": "read", "DELETE /label_limits/label/{label}": "manage",
	"POST /label_limits/label/{label}/reset": "manage",
	"POST /runs/":                            "acquire", "POST /runs/filter": "read", "GET /runs/{id}": "read",
	"POST /runs/{id}/set_state": "acquire", "POST /runs/{id}/heartbeat": "acquire",
	"GET /runs/{id}/wait": "read", "POST /runs/{id}/wait": "read",
	"GET /admin/keys": "admin", "POST /admin/keys": "admin", "GET /admin/keys/{id}": "admin",
	"POST /admin/keys/{id}/rotate": "admin", "POST /admin/keys/{id}/revoke": "admin", "GET /admin/audit": "admin",
}

// TestRouteCredentialMatrix sends every operation of the served OpenAPI
// document with every kind of credential and checks the gate's answer: an
// operation the test does not know, or a route the server has no decision
// for (a 500), fails it.
func TestRouteCredentialMatrix(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	// The fixtures: a limit m, a tag limit t, a label limit l, a lease of
	// acquire-name's on m, a task run tagged t.
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 100}).want(t, 201)
	tagID := decode[map[string]any](t, a.as(t, "admin", "POST", "/api/concurrency_limits/", map[string]any{"tag": "t", "concurrency_limit": 100}).want(t, 201))["id"].(string)
	labelID := decode[map[string]any](t, a.as(t, "admin", "POST", "/api/label_limits/", map[string]any{"label": "l", "concurrency_limit": 100}).want(t, 201))["id"].(string)
	lease := decode[grantDoc](t, a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)).LeaseID
	runID := decode[map[string]any](t, a.as(t, "admin", "POST", "/api/runs/", map[string]any{"kind": "task", "name": "r", "tags": []string{"t"}}).want(t, 201))["id"].(string)

	doc := a.as(t, "admin", "GET", "/api/openapi.json", nil).want(t, 200).body
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	bodies := map[string]any{
		"POST /v2/concurrency_limits/":                     map[string]any{"name": "m2", "limit": 1},
		"POST /v2/concurrency_limits/increment":            map[string]any{"names": []string{"m"}, "slots": 1, "mode": "concurrency"},
		"POST /v2/concurrency_limits/increment-with-lease": map[string]any{"names": []string{"m"}, "slots": 1},
		"POST /v2/concurrency_limits/decrement":            map[string]any{"names": []string{"m"}, "slots": 1},
		"POST /v2/concurrency_limits/decrement-with-lease": map[string]any{"lease_id": uuid.NewString()},
		"PATCH /v2/concurrency_limits/{id_or_name}":        map[string]any{"limit": 100},
		"POST /concurrency_limits/":                        map[string]any{"tag": "t", "concurrency_limit": 100},
		"POST /concurrency_limits/increment":               map[string]any{"names": []string{"t"}, "task_run_id": uuid.NewString()},
		"POST /concurrency_limits/decrement":               map[string]any{"names": []string{"t"}, "task_run_id": uuid.NewString()},
		"POST /label_limits/":                              map[string]any{"label": "l", "concurrency_limit": 100},
		"POST /label_limits/increment":                     map[string]any{"names": []string{"l"}, "flow_run_id": uuid.NewString()},
		"POST /label_limits/decrement":                     map[string]any{"names": []string{"l"}, "flow_run_id": uuid.NewString()},
		"POST /runs/":                                      map[string]any{"kind": "task", "name": "r2", "tags": []string{"t"}},
		"POST /runs/{id}/set_state":                        map[string]any{"state": "Running"},
		"POST /runs/{id}/wait":                             map[string]any{"timeout_seconds": 0},
		"POST /admin/keys":                                 map[string]any{"name": "new", "scopes": []string{"read"}},
	}
	query := map[string]string{
		"GET /v2/concurrency_limits/leases/{lease_id}/watch": "?timeout_seconds=0",
		"GET /runs/{id}/wait":                                "?timeout_seconds=0",
	}
	var ops []string
	for path, item := range d.Paths {
		for method := range item {
			switch method {
			case "get", "post", "patch", "delete", "put":
				ops = append(ops, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(ops)
	if len(ops) < len(needOf) {
		t.Errorf("the document has %d operations, the test knows %d", len(ops), len(needOf))
	}
	// Destructive credentials last, so that the others meet the fixtures.
	creds := []string{"none", "bad", "malformed", "expired", "revoked", "read", "acquire-other", "acquire-name", "manage", "admin"}
	for _, op := range ops {
		need, ok := needOf[op]
		if !ok {
			t.Errorf("%s: the test knows no decision for this operation; add it to needOf", op)
			continue
		}
		method, tmpl, _ := strings.Cut(op, " ")
		path := tmpl
		if path != "/metrics" {
			path = "/api" + path
		}
		repl := map[string]string{"{lease_id}": lease, "{id_or_name}": "m", "{tag}": "t", "{label}": "l", "{ticket}": "t-1"}
		switch {
		case strings.HasPrefix(tmpl, "/concurrency_limits/{id}"):
			repl["{id}"] = tagID
		case strings.HasPrefix(tmpl, "/label_limits/{id}"):
			repl["{id}"] = labelID
		case strings.HasPrefix(tmpl, "/runs/{id}"):
			repl["{id}"] = runID
		case strings.HasPrefix(tmpl, "/admin/keys/{id}"):
			repl["{id}"] = a.ids["victim"]
		}
		for k, v := range repl {
			path = strings.ReplaceAll(path, k, v)
		}
		path += query[op]
		for _, cred := range creds {
			body := bodies[op]
			if body == nil && method != "GET" && method != "DELETE" {
				body = map[string]any{}
			}
			r := a.as(t, cred, method, path, body)
			if r.status >= 500 {
				t.Errorf("%s as %s: %d, want no 5xx; body %s", op, cred, r.status, r.body)
				continue
			}
			switch want := expect(need, cred); want {
			case 401:
				if r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s as %s: %d (WWW-Authenticate %q), want 401 with a challenge; body %s", op, cred, r.status, r.header.Get("WWW-Authenticate"), r.body)
				} else {
					checkProblem(t, r)
				}
			case 403:
				if r.status != 403 {
					t.Errorf("%s as %s: %d, want 403; body %s", op, cred, r.status, r.body)
				} else if p := checkProblem(t, r); p.Code != "forbidden" || !strings.Contains(p.Detail, a.ids[cred]) {
					t.Errorf("%s as %s: problem %+v, want code forbidden naming key %s", op, cred, p, a.ids[cred])
				}
			case 0: // passes the gate
				if r.status == 401 || r.status == 403 {
					t.Errorf("%s as %s: %d, want past the gate; body %s", op, cred, r.status, r.body)
				}
			case -1: // acquire on another name: refused, by name or as absent
				// (a watch of an absent lease answers 200 not_found, a
				// release of one 204, as Prefect does)
				absentOK := strings.HasSuffix(tmpl, "/watch") || strings.HasSuffix(tmpl, "/decrement-with-lease") ||
					strings.Contains(tmpl, "/tickets/")
				if r.status == 401 || (r.status < 300 && !absentOK) {
					t.Errorf("%s as %s: %d, want a refusal; body %s", op, cred, r.status, r.body)
				}
			}
			if strings.Contains(string(r.body), a.creds["admin"][len("Bearer allot_0123456789ab_"):]) {
				t.Errorf("%s as %s: the answer carries a secret", op, cred)
			}
		}
	}
}

// expect is the answer the matrix wants: 401, 403, 0 (past the gate) or
// -1 (refused by name, or a lease of another key's that is absent).
func expect(need, cred string) int {
	if need == "public" {
		return 0
	}
	if need == "key" && cred != "none" && cred != "bad" && cred != "malformed" && cred != "expired" && cred != "revoked" {
		return 0
	}
	switch cred {
	case "none", "bad", "malformed", "expired", "revoked":
		return 401
	case "admin":
		return 0
	case "read":
		if need == "read" {
			return 0
		}
	case "acquire-name":
		if need == "acquire" {
			return 0
		}
	case "acquire-other":
		if need == "acquire" {
			return -1
		}
	case "manage":
		if need == "manage" {
			return 0
		}
	}
	return 403
}

func TestAuthWireFormats(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	key := strings.TrimPrefix(a.creds["read"], "Bearer ")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, h := range []string{
		"Bearer " + key,
		"bearer " + key,
		"Basic " + b64(key),
		"Basic " + b64("user:"+key),
	} {
		a.as(t, h, "GET", v2+"/m", nil).wantProblem(t, 404, "limit_not_found", "")
	}
	for _, h := range []string{"Basic " + b64(key+":user"), "Token " + key, "Bearer " + key + "x"} {
		a.as(t, h, "GET", v2+"/m", nil).wantProblem(t, 401, "unauthenticated", "")
	}
}

func TestAuthPathTricks(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 1}).want(t, 201)
	for _, tt := range []struct {
		cred, method, path string
		want               int
	}{
		{"none", "DELETE", v2 + "/m/", 401},
		{"read", "DELETE", v2 + "/m/", 403}, // no route: a 404 or 405 once authenticated
		{"none", "DELETE", "/api/health/../v2/concurrency_limits/m", 401},
		{"none", "DELETE", "/api/health/..%2Fv2/concurrency_limits/m", 401},
		{"acquire-name", "DELETE", v2 + "/m%2F..%2Fm", 403},
		{"none", "GET", "/api/csrf-token", 404},
		{"none", "GET", "/api/csrf-token/", 401},
		{"none", "GET", "/api/nothing", 401},
		{"read", "GET", "/api/nothing", 404},
		{"none", "GET", "/api//health", 200}, // redirected to the health probe
	} {
		r := a.as(t, tt.cred, tt.method, tt.path, nil)
		if tt.want == 403 && tt.path == v2+"/m/" {
			if r.status != 404 && r.status != 405 {
				t.Errorf("%s %s as %s: %d, want 404 or 405", tt.method, tt.path, tt.cred, r.status)
			}
			continue
		}
		if r.status != tt.want {
			t.Errorf("%s %s as %s: %d, want %d; body %s", tt.method, tt.path, tt.cred, r.status, tt.want, r.body)
		}
	}
	// The limit is still there.
	a.as(t, "read", "GET", v2+"/m", nil).want(t, 200)
}

func TestAuthAllOrNothing(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	for _, n := range []string{"m", "warehouse", "resource:*"} {
		a.as(t, "admin", "POST", v2+"/", map[string]any{"name": n, "limit": 5}).want(t, 201)
	}
	a.newKey(t, "etl", []string{"acquire:m", "acquire:resource:4*"}, false)
	p := a.as(t, "etl", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m", "warehouse"}, "slots": 1}).
		wantProblem(t, 403, "forbidden", "")
	if want := "key etl (" + a.ids["etl"] + ") lacks acquire on warehouse"; p.Detail != want {
		t.Errorf("detail %q, want %q", p.Detail, want)
	}
	// Nothing was taken.
	if got := a.as(t, "admin", "GET", v2+"/m", nil).want(t, 200); decode[limitDoc](t, got).ActiveSlots != 0 {
		t.Errorf("m has slots taken after a refused request: %s", got.body)
	}
	// A template's name made on first use needs acquire on that name only.
	a.as(t, "etl", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"resource:42"}, "slots": 1}).want(t, 200)
	a.as(t, "etl", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"resource:7"}, "slots": 1}).wantProblem(t, 403, "forbidden", "")
	// manage is by name too.
	a.newKey(t, "ops", []string{"manage:resource:*"}, false)
	a.as(t, "ops", "PATCH", v2+"/resource:42", map[string]any{"limit": 2}).want(t, 204)
	a.as(t, "ops", "DELETE", v2+"/warehouse", nil).wantProblem(t, 403, "forbidden", "")
	id := a.read(t, "warehouse").ID
	a.as(t, "ops", "DELETE", v2+"/"+id, nil).wantProblem(t, 403, "forbidden", "")
}

func (a *authBundle) read(t *testing.T, name string) limitDoc {
	t.Helper()
	return decode[limitDoc](t, a.as(t, "admin", "GET", v2+"/"+name, nil).want(t, 200))
}

func TestLeaseBoundToItsKey(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 1}).want(t, 201)
	a.newKey(t, "a", []string{"acquire:m", "read"}, false)
	a.newKey(t, "b", []string{"acquire:m", "read"}, false)
	lease := decode[grantDoc](t, a.as(t, "a", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)).LeaseID
	renew := v2 + "/leases/" + lease + "/renew"
	a.as(t, "b", "POST", renew, map[string]any{}).wantProblem(t, 410, "lease_not_found", "")
	// A release of a lease that does not exist answers 204 (Prefect's
	// answer); it releases nothing.
	a.as(t, "b", "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": lease}).want(t, 204)
	w := decode[map[string]any](t, a.as(t, "b", "GET", v2+"/leases/"+lease+"/watch?timeout_seconds=0", nil).want(t, 200))
	if w["state"] != "not_found" {
		t.Errorf("b's watch of a's lease: %v, want state not_found", w)
	}
	// Still held, and a's own.
	a.as(t, "a", "POST", renew, map[string]any{}).want(t, 204)
	// A ticket is bound to its key too: another key's request with it
	// neither gets the lease back nor cancels it.
	a.as(t, "admin", "PATCH", v2+"/m", map[string]any{"limit": 3}).want(t, 204)
	tk := map[string]any{"names": []string{"m"}, "slots": 1, "ticket": "job-1"}
	mine := decode[grantDoc](t, a.as(t, "a", "POST", v2+"/increment-with-lease", tk).want(t, 200)).LeaseID
	a.as(t, "b", "POST", v2+"/increment-with-lease", tk).wantProblem(t, 409, "ticket_conflict", "")
	a.as(t, "b", "DELETE", v2+"/tickets/job-1", nil)
	if again := decode[grantDoc](t, a.as(t, "a", "POST", v2+"/increment-with-lease", tk).want(t, 200)).LeaseID; again != mine {
		t.Errorf("a's ticket gave lease %s, want its own %s back", again, mine)
	}
	a.as(t, "b", "POST", v2+"/leases/"+lease+"/revoke", map[string]any{}).wantProblem(t, 403, "forbidden", "")
	a.as(t, "admin", "POST", v2+"/leases/"+lease+"/revoke", map[string]any{}).want(t, 200)
	a.as(t, "a", "POST", renew, map[string]any{}).want(t, 410)
}

func TestRevocationEndsStreamsAndWaiters(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 1}).want(t, 201)
	a.as(t, "admin", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)
	tok := a.newKey(t, "doomed", []string{"read", "acquire:m"}, false)

	// An open event stream and a waiting long poll.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", a.srv.URL+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok.String())
	stream, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 {
		t.Fatalf("events: %d", stream.StatusCode)
	}
	streamEnded := make(chan time.Time, 1)
	go func() {
		p := make([]byte, 512)
		for {
			if _, err := stream.Body.Read(p); err != nil {
				streamEnded <- time.Now()
				return
			}
		}
	}()
	waitEnded := make(chan time.Time, 1)
	go func() {
		r := a.as(t, "doomed", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1, "timeout_seconds": 60})
		if r.status == 200 {
			t.Errorf("the waiter was granted: %s", r.body)
		}
		waitEnded <- time.Now()
	}()
	poll(t, "the waiter to stand in line", func() bool { return a.read(t, "m").Waiting == 1 })

	start := time.Now()
	a.as(t, "admin", "POST", "/api/admin/keys/"+tok.ID+"/revoke", nil).want(t, 200)
	for what, ch := range map[string]chan time.Time{"event stream": streamEnded, "long poll": waitEnded} {
		select {
		case end := <-ch:
			if d := end.Sub(start); d > 3*time.Second {
				t.Errorf("%s ended %v after the revocation, want within about a second", what, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still open 10 s after the revocation", what)
		}
	}
	if n := a.read(t, "m").Waiting; n != 0 {
		t.Errorf("%d waiting after the revocation, want 0", n)
	}
	a.as(t, "doomed", "GET", v2+"/m", nil).wantProblem(t, 401, "unauthenticated", "")
}

func TestKeyRoutes(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	created := decode[map[string]any](t, a.as(t, "admin", "POST", "/api/admin/keys", map[string]any{
		"name": "etl-workers", "scopes": []string{"read", "acquire:warehouse"}, "expires_seconds": 3600}).want(t, 201))
	key, _ := created["key"].(string)
	tok, ok := auth.ParseToken(key)
	if !ok || tok.ID != created["id"] {
		t.Fatalf("created %v: want a key whose id is id", created)
	}
	a.creds["etl"] = "Bearer " + key
	a.as(t, "etl", "GET", "/api/health", nil).want(t, 200)
	a.as(t, "etl", "POST", v2+"/filter", map[string]any{}).want(t, 200)
	list := a.as(t, "admin", "GET", "/api/admin/keys", nil).want(t, 200)
	if strings.Contains(string(list.body), tok.Secret) || !strings.Contains(string(list.body), tok.ID) {
		t.Errorf("key list %s: want the id, never the secret", list.body)
	}
	var keys []map[string]any
	_ = json.Unmarshal(list.body, &keys)
	if slices.ContainsFunc(keys, func(k map[string]any) bool { _, has := k["key"]; return has }) {
		t.Errorf("key list %s shows a key", list.body)
	}
	rot := decode[map[string]any](t, a.as(t, "admin", "POST", "/api/admin/keys/"+tok.ID+"/rotate", map[string]any{"grace_seconds": 0}).want(t, 201))
	a.creds["succ"] = "Bearer " + rot["key"].(string)
	a.as(t, "etl", "POST", v2+"/filter", map[string]any{}).wantProblem(t, 401, "unauthenticated", "")
	a.as(t, "succ", "POST", v2+"/filter", map[string]any{}).want(t, 200)
	a.as(t, "admin", "POST", "/api/admin/keys", map[string]any{"name": "x", "scopes": []string{"write"}}).wantProblem(t, 422, "invalid_field", "scopes")
	a.as(t, "admin", "POST", "/api/admin/keys/ffffffffffff/revoke", nil).wantProblem(t, 404, "key_not_found", "")
}

func TestQuotaRateSparesRenewAndRelease(t *testing.T) {
	t.Parallel()
	// A token every 100 s, 3 at once: the fourth request is over.
	a := setupAuthWith(t, setupOpts{options: func(o *httpapi.Options) { o.Rates = auth.NewRates(0.01, 3) }})
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 5}).want(t, 201)
	lease := decode[grantDoc](t, a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)).LeaseID
	a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)
	a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)
	r := a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1})
	p := r.wantProblem(t, 429, "quota_exceeded", "")
	if ra := retryAfter(t, r); ra <= 0 || p.RetryAfter == nil {
		t.Errorf("429 Retry-After %v, retry_after %v: want a positive wait", ra, p.RetryAfter)
	}
	// Renewal and release of the same key still go through.
	for range 5 {
		a.as(t, "acquire-name", "POST", v2+"/leases/"+lease+"/renew", map[string]any{}).want(t, 204)
	}
	a.as(t, "acquire-name", "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": lease}).want(t, 204)
	if n := a.read(t, "m").ActiveSlots; n != 2 {
		t.Errorf("active slots %d after the release, want 2", n)
	}
	// Another key has a bucket of its own.
	a.as(t, "read", "GET", v2+"/m", nil).want(t, 200)
}

func TestQuotaLeasesAndWaiting(t *testing.T) {
	t.Parallel()
	a := setupAuthWith(t, setupOpts{coordCfg: func(c *coord.Config) { c.KeyMaxLeases, c.KeyMaxWaiting = 2, 1 }})
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 2}).want(t, 201)
	acquire := func(wait float64) response {
		return a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1, "timeout_seconds": wait})
	}
	first := decode[grantDoc](t, acquire(0).want(t, 200)).LeaseID
	acquire(0).want(t, 200)
	acquire(0).wantProblem(t, 429, "quota_exceeded", "") // two held
	a.as(t, "acquire-name", "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": first}).want(t, 204)

	// One waiter of the key stands in line (the admin's lease fills m);
	// a second is over the quota.
	a.as(t, "admin", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)
	done := make(chan response, 1)
	go func() { done <- acquire(30) }()
	poll(t, "the waiter to stand in line", func() bool { return a.read(t, "m").Waiting == 1 })
	acquire(30).wantProblem(t, 429, "quota_exceeded", "")
	if n := a.read(t, "m").Waiting; n != 1 {
		t.Errorf("%d waiting, want 1", n)
	}
	// The waiter leaves when its time is up... here, it gets the slot the
	// admin frees.
	for _, h := range a.read(t, "m").Holders {
		a.as(t, "admin", "POST", v2+"/leases/"+h.LeaseID+"/revoke", map[string]any{}).want(t, 200)
		break
	}
	if r := <-done; r.status != 200 && r.status != 429 {
		t.Errorf("the waiter: %d %s", r.status, r.body)
	}
}

// auditRec is an audit record as the API shows it.
type auditRec struct {
	Seq     uint64          `json:"seq"`
	KeyID   string          `json:"key_id"`
	KeyName string          `json:"key_name"`
	Action  string          `json:"action"`
	Target  string          `json:"target"`
	Status  int             `json:"status"`
	Before  json.RawMessage `json:"before"`
	After   json.RawMessage `json:"after"`
}

// changed lists the fields whose values differ between a record's before
// and after, both of which must be JSON objects.
func (rec auditRec) changed(t *testing.T) []string {
	t.Helper()
	var before, after map[string]json.RawMessage
	if err := json.Unmarshal(rec.Before, &before); err != nil || before == nil {
		t.Fatalf("%s's before %s: want an object (%v)", rec.Action, rec.Before, err)
	}
	if err := json.Unmarshal(rec.After, &after); err != nil || after == nil {
		t.Fatalf("%s's after %s: want an object (%v)", rec.Action, rec.After, err)
	}
	var out []string
	for k, v := range after {
		if w, ok := before[k]; !ok || string(w) != string(v) {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// limitState is a limit in an audit record's before or after.
type limitState struct {
	Name  string `json:"name"`
	Limit int    `json:"limit"`
}

func TestAuditBeforeAndAfter(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	audit := func() []auditRec {
		return decode[[]auditRec](t, a.as(t, "admin", "GET", "/api/admin/audit?limit=1000", nil).want(t, 200))
	}
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 2}).want(t, 201)
	lease := decode[grantDoc](t, a.as(t, "acquire-name", "POST", v2+"/increment-with-lease",
		map[string]any{"names": []string{"m"}, "slots": 1, "holder": map[string]any{"type": "task_run", "id": "4b6e1f3e-3f0a-4d5e-9a7b-2c1d0e9f8a7b"}}).want(t, 200)).LeaseID
	a.as(t, "admin", "POST", "/api/concurrency_limits/", map[string]any{"tag": "etl", "concurrency_limit": 2}).want(t, 201)
	tests := []struct {
		name, cred, method, path string
		body                     any
		action                   string
		changed                  []string
	}{
		{"limit update", "manage", "PATCH", v2 + "/m", map[string]any{"limit": 3}, "limit.update", []string{"limit"}},
		{"limit disable", "manage", "PATCH", v2 + "/m", map[string]any{"active": false}, "limit.update", []string{"active"}},
		{"limit ensure", "manage", "PUT", v2 + "/m", map[string]any{"limit": 4}, "limit.ensure", []string{"limit"}},
		{"tag limit upsert", "manage", "POST", "/api/concurrency_limits/", map[string]any{"tag": "etl", "concurrency_limit": 3}, "tag_limit.upsert", []string{"limit"}},
		{"lease revoke", "admin", "POST", v2 + "/leases/" + lease + "/revoke", map[string]any{"reason": "stuck"}, "lease.revoke", []string{"reason", "state"}},
		{"key revoke", "admin", "POST", "/api/admin/keys/" + a.ids["victim"] + "/revoke", nil, "key.revoke", []string{"revoked"}},
	}
	for _, tt := range tests {
		n := len(audit())
		if r := a.as(t, tt.cred, tt.method, tt.path, tt.body); r.status >= 300 {
			t.Fatalf("%s: %d %s", tt.name, r.status, r.body)
		}
		recs := audit()
		if len(recs) != n+1 {
			t.Fatalf("%s: %d new records, want 1", tt.name, len(recs)-n)
		}
		if recs[0].Action != tt.action {
			t.Errorf("%s: action %s, want %s", tt.name, recs[0].Action, tt.action)
		}
		if diff := cmp.Diff(tt.changed, recs[0].changed(t)); diff != "" {
			t.Errorf("%s: fields changed between before %s and after %s (-want +got):\n%s", tt.name, recs[0].Before, recs[0].After, diff)
		}
	}
	// The lease's record says whose it was and how many slots it held.
	recs := audit()
	var revoked auditRec
	for _, rec := range recs {
		if rec.Action == "lease.revoke" {
			revoked = rec
		}
	}
	var was struct {
		Slots  int            `json:"slots"`
		Limits []string       `json:"limits"`
		Holder map[string]any `json:"holder"`
	}
	if err := json.Unmarshal(revoked.Before, &was); err != nil || was.Slots != 1 || !slices.Equal(was.Limits, []string{"m"}) || was.Holder["id"] != "4b6e1f3e-3f0a-4d5e-9a7b-2c1d0e9f8a7b" {
		t.Errorf("the revoked lease's before %s: want 1 slot of m held by the task run", revoked.Before)
	}
	// A bulk delete's before lists the limits it matched.
	for _, name := range []string{"etl-a", "etl-b", "other"} {
		a.as(t, "admin", "POST", v2+"/", map[string]any{"name": name, "limit": 1}).want(t, 201)
	}
	a.as(t, "manage", "POST", v2+"/delete", map[string]any{"pattern": "etl-*"}).want(t, 200)
	bulk := audit()[0]
	var matched struct {
		Matched int          `json:"matched"`
		Limits  []limitState `json:"limits"`
	}
	if err := json.Unmarshal(bulk.Before, &matched); err != nil || bulk.Action != "limit.delete_matching" || matched.Matched != 2 ||
		len(matched.Limits) != 2 || matched.Limits[0].Name != "etl-a" || matched.Limits[1].Name != "etl-b" {
		t.Errorf("the bulk delete's record: %s before %s, want etl-a and etl-b", bulk.Action, bulk.Before)
	}
	// A deletion's after is null; its before is the limit.
	a.as(t, "manage", "DELETE", v2+"/m", nil).want(t, 204)
	del := audit()[0]
	if del.Action != "limit.delete" || string(del.After) != "null" || !strings.Contains(string(del.Before), `"limit":4`) {
		t.Errorf("the deletion's record: %s before %s after %s", del.Action, del.Before, del.After)
	}
}

func TestAuditOneRecordPerAction(t *testing.T) {
	t.Parallel()
	a := setupAuth(t)
	audit := func() []auditRec {
		return decode[[]auditRec](t, a.as(t, "admin", "GET", "/api/admin/audit?limit=1000", nil).want(t, 200))
	}
	type step struct {
		cred, method, path string
		body               any
		action, target     string
	}
	a.as(t, "admin", "POST", v2+"/", map[string]any{"name": "m", "limit": 1}).want(t, 201)
	held := decode[grantDoc](t, a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)).LeaseID
	steps := []step{
		{"manage", "POST", v2 + "/", map[string]any{"name": "db", "limit": 1}, "limit.create", "db"},
		{"manage", "PATCH", v2 + "/db", map[string]any{"active": false}, "limit.update", "db"},
		{"manage", "DELETE", v2 + "/db", nil, "limit.delete", "db"},
		{"admin", "POST", v2 + "/leases/" + held + "/revoke", map[string]any{}, "lease.revoke", held},
		{"manage", "POST", "/api/concurrency_limits/", map[string]any{"tag": "etl", "concurrency_limit": 2}, "tag_limit.upsert", "etl"},
		{"manage", "POST", "/api/concurrency_limits/tag/etl/reset", map[string]any{}, "tag_limit.reset", "etl"},
		{"manage", "DELETE", "/api/concurrency_limits/tag/etl", nil, "tag_limit.delete", "etl"},
		{"admin", "POST", "/api/admin/keys", map[string]any{"name": "new", "scopes": []string{"read"}}, "key.create", ""},
		{"admin", "POST", "/api/admin/keys/" + a.ids["victim"] + "/revoke", nil, "key.revoke", a.ids["victim"]},
		{"read", "DELETE", v2 + "/m", nil, "auth.refused", "DELETE " + v2 + "/m"},
		{"bad", "GET", v2 + "/m", nil, "auth.refused", "GET " + v2 + "/m"},
	}
	var secrets []string
	for _, h := range a.creds {
		if tok, err := auth.ParseAuthorization(h); err == nil {
			secrets = append(secrets, tok.Secret)
		}
	}
	for _, s := range steps {
		before := len(audit())
		r := a.as(t, s.cred, s.method, s.path, s.body)
		if s.action == "key.create" {
			k := decode[map[string]any](t, r)
			s.target = k["id"].(string)
			tok, _ := auth.ParseToken(k["key"].(string))
			secrets = append(secrets, tok.Secret)
		}
		recs := audit()
		if len(recs) != before+1 {
			t.Errorf("%s %s as %s: %d new records, want 1", s.method, s.path, s.cred, len(recs)-before)
			continue
		}
		got := recs[0]
		if got.Action != s.action || got.Target != s.target || (s.cred != "bad" && got.KeyID != a.ids[s.cred]) {
			t.Errorf("%s %s as %s: record %+v, want action %s target %s key %s", s.method, s.path, s.cred, got, s.action, s.target, a.ids[s.cred])
		}
	}
	// Reads and acquisitions leave none.
	n := len(audit())
	a.as(t, "read", "GET", v2+"/m", nil).want(t, 200)
	a.as(t, "acquire-name", "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"m"}, "slots": 1}).want(t, 200)
	if got := len(audit()); got != n {
		t.Errorf("a read and an acquisition left %d records, want 0", got-n)
	}
	body := string(a.as(t, "admin", "GET", "/api/admin/audit?limit=1000", nil).want(t, 200).body)
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("the audit log carries a secret")
		}
	}
}
