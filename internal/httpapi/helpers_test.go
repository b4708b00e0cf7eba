package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/store/memstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const v2 = "/api/v2/concurrency_limits"

// testBundle is one server on a real loopback listener over a coordinator
// and an in-memory store.
type testBundle struct {
	srv    *httptest.Server
	coord  *coord.Coordinator
	client *http.Client
}

type setupOpts struct {
	store   *memstore.Store // nil: a new one
	options func(*httpapi.Options)
	// runErr accepts an error from the coordinator's Run (a failed store).
	runErr bool
	// keys, if set, makes the keyring that turns authentication on.
	keys func(c *coord.Coordinator) *auth.Keyring
	// coordCfg, if set, changes the coordinator's settings.
	coordCfg func(*coord.Config)
}

func setup(t *testing.T) *testBundle { return setupWith(t, setupOpts{}) }

func setupWith(t *testing.T, o setupOpts) *testBundle {
	t.Helper()
	c, h, stop := newHandler(t, o)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		stop()
	})
	return &testBundle{srv: srv, coord: c, client: srv.Client()}
}

// newHandler starts a coordinator and returns the API handler over it, and
// the function that stops the coordinator.
func newHandler(t testing.TB, o setupOpts) (*coord.Coordinator, http.Handler, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := coord.DefaultConfig()
	cfg.Metrics = coord.NewMetrics(reg)
	if o.coordCfg != nil {
		o.coordCfg(&cfg)
	}
	st := o.store
	if st == nil {
		st = memstore.New()
	}
	c, err := coord.New(context.Background(), st, cfg)
	if err != nil {
		t.Fatalf("coord.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	opts := httpapi.Options{Registry: reg, Logger: slog.New(slog.DiscardHandler)}
	if o.keys != nil {
		opts.Keys = o.keys(c)
	}
	if o.options != nil {
		o.options(&opts)
	}
	return c, httpapi.New(c, opts), func() {
		cancel()
		if err := <-done; err != nil && !o.runErr {
			t.Errorf("coordinator Run: %v", err)
		}
	}
}

// response is an answer as a test sees it.
type response struct {
	status int
	header http.Header
	body   []byte
}

// encodeBody turns a test's body into bytes: nil is no body, a string or
// []byte is sent as it is, anything else is marshalled.
func encodeBody(t testing.TB, body any) io.Reader {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(b)
	case []byte:
		return bytes.NewReader(b)
	}
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("marshal body: %v", err)
	}
	return bytes.NewReader(data)
}

func (b *testBundle) do(t testing.TB, method, path string, body any) response {
	t.Helper()
	return b.doCtx(context.Background(), t, method, path, body)
}

func (b *testBundle) doCtx(ctx context.Context, t testing.TB, method, path string, body any) response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, b.srv.URL+path, encodeBody(t, body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// want fails the test unless the status is status.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("got status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

func decode[T any](t testing.TB, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

type problemDoc struct {
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Status     int      `json:"status"`
	Detail     string   `json:"detail"`
	Code       string   `json:"code"`
	Field      string   `json:"field"`
	RetryAfter *float64 `json:"retry_after"`
	Limits     []string `json:"limits"`
}

// checkProblem checks that r is a well-formed problem and returns it.
func checkProblem(t testing.TB, r response) problemDoc {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("got Content-Type %q, want application/problem+json; body %s", ct, r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var p problemDoc
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem %s does not decode: %v", r.body, err)
	}
	if p.Status != r.status || p.Code == "" || p.Type != "https://allot.dev/problems/"+p.Code ||
		p.Title != http.StatusText(r.status) || p.Detail == "" {
		t.Fatalf("malformed problem for status %d: %s", r.status, r.body)
	}
	return p
}

// wantProblem checks the status, code and field of a problem.
func (r response) wantProblem(t testing.TB, status int, code, field string) problemDoc {
	t.Helper()
	r.want(t, status)
	p := checkProblem(t, r)
	if p.Code != code || p.Field != field {
		t.Fatalf("got code %q field %q, want code %q field %q; body %s", p.Code, p.Field, code, field, r.body)
	}
	return p
}

// limitDoc is the limit as the API returns it.
type limitDoc struct {
	ID                      string      `json:"id"`
	Created                 string      `json:"created"`
	Updated                 string      `json:"updated"`
	Active                  bool        `json:"active"`
	Name                    string      `json:"name"`
	Limit                   int         `json:"limit"`
	ActiveSlots             int         `json:"active_slots"`
	DeniedSlots             int         `json:"denied_slots"`
	SlotDecayPerSecond      float64     `json:"slot_decay_per_second"`
	AvgSlotOccupancySeconds float64     `json:"avg_slot_occupancy_seconds"`
	Template                bool        `json:"template"`
	IdleSeconds             *float64    `json:"idle_seconds"`
	FromTemplate            bool        `json:"from_template"`
	FencingToken            uint64      `json:"fencing_token"`
	Waiting                 int         `json:"waiting"`
	Holders                 []holderDoc `json:"holders"`
	Waiters                 []waiterDoc `json:"waiters"`
}

type holderRef struct {
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type holderDoc struct {
	LeaseID      string     `json:"lease_id"`
	Holder       *holderRef `json:"holder"`
	Slots        int        `json:"slots"`
	Since        string     `json:"since"`
	Expires      string     `json:"expires"`
	FencingToken uint64     `json:"fencing_token"`
}

type waiterDoc struct {
	Position     int        `json:"position"`
	Slots        int        `json:"slots"`
	Mode         string     `json:"mode"`
	Holder       *holderRef `json:"holder"`
	WaitingSince string     `json:"waiting_since"`
}

type minimalDoc struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Limit int    `json:"limit"`
}

type grantDoc struct {
	LeaseID       string       `json:"lease_id"`
	Limits        []minimalDoc `json:"limits"`
	FencingToken  uint64       `json:"fencing_token"`
	Expires       string       `json:"expires"`
	WaitedSeconds float64      `json:"waited_seconds"`
}

type leaseDoc struct {
	LeaseID      string       `json:"lease_id"`
	Limits       []minimalDoc `json:"limits"`
	Slots        int          `json:"slots"`
	Mode         string       `json:"mode"`
	Holder       *holderRef   `json:"holder"`
	Created      string       `json:"created"`
	Expires      string       `json:"expires"`
	FencingToken uint64       `json:"fencing_token"`
}

// create makes a limit and returns it.
func (b *testBundle) create(t testing.TB, body map[string]any) limitDoc {
	t.Helper()
	return decode[limitDoc](t, b.do(t, "POST", v2+"/", body).want(t, http.StatusCreated))
}

// read reads a limit by id or name.
func (b *testBundle) read(t testing.TB, ref string) limitDoc {
	t.Helper()
	return decode[limitDoc](t, b.do(t, "GET", v2+"/"+ref, nil).want(t, http.StatusOK))
}

// retryAfter parses a 423's Retry-After header.
func retryAfter(t testing.TB, r response) float64 {
	t.Helper()
	s := r.header.Get("Retry-After")
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("Retry-After %q: %v", s, err)
	}
	return f
}

func parseTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return tm
}

// poll calls cond until it returns true or the deadline passes.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
