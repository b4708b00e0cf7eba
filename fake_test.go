package allot_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allot-dev/allot"
)

// fakeServer answers the SDK's requests in memory, without sockets, so
// that tests can run in a synctest bubble and script every answer. Its
// routes are set per test; it records every request it sees.
type fakeServer struct {
	t   testing.TB
	mux *http.ServeMux

	mu    sync.Mutex
	calls []fakeCall
	err   func(r *http.Request) error // if set and not nil: a connection error
}

type fakeCall struct {
	method, path string
	at           time.Time
	body         map[string]any
	header       http.Header
}

const fakeURL = "http://allot.test/api"

func newFake(t testing.TB) *fakeServer {
	return &fakeServer{t: t, mux: http.NewServeMux()}
}

// handle routes pattern (under /api) to fn, which gets the decoded body.
func (f *fakeServer) handle(pattern string, fn func(w http.ResponseWriter, r *http.Request, body map[string]any)) {
	method, path, _ := strings.Cut(pattern, " ")
	f.mux.HandleFunc(method+" /api"+path, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		fn(w, r, body)
	})
}

func (f *fakeServer) RoundTrip(r *http.Request) (*http.Response, error) {
	var raw []byte
	if r.Body != nil {
		raw, _ = io.ReadAll(r.Body)
	}
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{method: r.Method, path: strings.TrimPrefix(r.URL.EscapedPath(), "/api"),
		at: time.Now(), body: body, header: r.Header.Clone()})
	failer := f.err
	f.mu.Unlock()
	if failer != nil {
		if err := failer(r); err != nil {
			return nil, err
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// callsTo returns the recorded requests to path.
func (f *fakeServer) callsTo(path string) []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCall
	for _, c := range f.calls {
		if c.path == path {
			out = append(out, c)
		}
	}
	return out
}

// client returns a Client of the fake that retries without pausing long.
func (f *fakeServer) client(opts ...allot.ClientOption) *allot.Client {
	f.t.Helper()
	base := []allot.ClientOption{allot.WithURL(fakeURL), allot.WithAPIKey("k3y"),
		allot.WithHTTPClient(&http.Client{Transport: f}), allot.WithLogger(discardLogger()),
		allot.WithRetry(2, 100*time.Millisecond)}
	c, err := allot.NewClient(append(base, opts...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// grantLease answers increment-with-lease with a lease holding every
// named limit.
func grantLease(id string) func(w http.ResponseWriter, r *http.Request, body map[string]any) {
	return func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		var limits []map[string]any
		for _, n := range body["names"].([]any) {
			limits = append(limits, map[string]any{"id": "00000000-0000-0000-0000-000000000001", "name": n, "limit": 1})
		}
		writeJSON(w, http.StatusOK, map[string]any{"lease_id": id, "limits": limits, "fencing_token": 7,
			"expires": time.Now().Add(time.Minute), "waited_seconds": 0})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "https://allot.dev/problems/" + code,
		"title": http.StatusText(status), "status": status, "code": code, "detail": detail})
}

func noContent(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
	w.WriteHeader(http.StatusNoContent)
}
