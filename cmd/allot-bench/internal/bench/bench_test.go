package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeMode says how the fake server hands out slots.
type fakeMode int

const (
	// fifo is a correct server: a semaphore whose waiters are served
	// first in, first out.
	fifo fakeMode = iota
	// lifo serves the newest waiter first: safe, but unfair.
	lifo
	// unsafe grants every request at once, whatever the limit.
	unsafe
	// failAcquire answers every acquire with 500.
	failAcquire
	// failCreate answers every limit creation with 500.
	failCreate
)

type fakeLimit struct {
	limit int
	held  int
	queue []chan struct{} // waiters; closing one hands it a slot
}

// fakeServer implements the routes the workloads use, over an in-memory
// semaphore per limit.
type fakeServer struct {
	mode fakeMode

	mu     sync.Mutex
	limits map[string]*fakeLimit
	leases map[string]string // lease id → limit name
	nextID int
	token  int64
	// waitedFrom is the client addresses requests waited in line from.
	waitedFrom map[string]bool
	// requests counts the acquires and releases received.
	requests int
	// cpuServed is every CPU time /metrics reported, in order.
	cpuServed []float64
}

func newFakeServer(mode fakeMode) *fakeServer {
	return &fakeServer{mode: mode, limits: map[string]*fakeLimit{}, leases: map[string]string{}, waitedFrom: map[string]bool{}}
}

// The fake's memory, as its /metrics reports it: a base plus a fixed cost
// per held lease and per waiting request.
const (
	fakeRSSPerLease   = 1000
	fakeHeapPerLease  = 600
	fakeRSSPerWaiter  = 20000
	fakeHeapPerWaiter = 9000
	fakeStackPerWait  = 8192
	// fakeCPUPerRequest is the CPU time, in seconds, that the fake's
	// /metrics reports for each acquire and release it received.
	fakeCPUPerRequest = 25e-6
)

// metrics serves the fake's memory in Prometheus's text format.
func (f *fakeServer) metrics(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	leases, waiters := len(f.leases), 0
	for _, l := range f.limits {
		waiters += len(l.queue)
	}
	cpu := float64(f.requests) * fakeCPUPerRequest
	f.cpuServed = append(f.cpuServed, cpu)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", 10+2*waiters)
	fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %g\n", float64(2e7+fakeHeapPerLease*leases+fakeHeapPerWaiter*waiters))
	fmt.Fprintf(w, "go_memstats_stack_inuse_bytes %g\n", float64(1e6+fakeStackPerWait*waiters))
	fmt.Fprintf(w, "process_resident_memory_bytes %g\n", float64(5e7+fakeRSSPerLease*leases+fakeRSSPerWaiter*waiters))
	fmt.Fprintf(w, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %g\n", cpu)
}

// served returns the CPU times the fake's /metrics reported, in order.
func (f *fakeServer) served() []float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cpuServed)
}

// limitLocked returns the limit called name, creating it from the first
// template ('*' standing for any text) that matches if there is none.
func (f *fakeServer) limitLocked(name string) (*fakeLimit, bool) {
	if l, ok := f.limits[name]; ok {
		return l, true
	}
	for pattern, t := range f.limits {
		before, after, ok := strings.Cut(pattern, "*")
		if ok && len(name) >= len(before)+len(after) && strings.HasPrefix(name, before) && strings.HasSuffix(name, after) {
			l := &fakeLimit{limit: t.limit}
			f.limits[name] = l
			return l, true
		}
	}
	return nil, false
}

func (f *fakeServer) handler() http.Handler {
	mux := http.NewServeMux()
	const p = "/api/v2/concurrency_limits/"
	mux.HandleFunc("POST "+p+"{$}", f.create)
	mux.HandleFunc("POST "+p+"increment-with-lease", f.acquire)
	mux.HandleFunc("POST "+p+"decrement-with-lease", f.release)
	mux.HandleFunc("GET "+p+"{name}", f.read)
	mux.HandleFunc("PATCH "+p+"{name}", f.update)
	mux.HandleFunc("DELETE "+p+"{name}", f.delete)
	mux.HandleFunc("GET /metrics", f.metrics)
	return mux
}

// decode decodes a request body strictly, answering 422 if it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeServer) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string `json:"name"`
		Limit int    `json:"limit"`
	}
	if !decode(w, r, &req) {
		return
	}
	if f.mode == failCreate {
		http.Error(w, "create is broken", http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.limits[req.Name]; ok {
		http.Error(w, "exists", http.StatusConflict)
		return
	}
	f.limits[req.Name] = &fakeLimit{limit: req.Limit}
	writeJSON(w, http.StatusCreated, map[string]any{"name": req.Name, "limit": req.Limit, "active": true, "active_slots": 0})
}

func (f *fakeServer) update(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Limit  int  `json:"limit"`
		Active bool `json:"active"`
	}
	if !decode(w, r, &req) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.limits[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	l.limit = req.Limit
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeServer) read(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := r.PathValue("name")
	l, ok := f.limits[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "limit": l.limit, "active": true, "active_slots": l.held, "waiting": len(l.queue)})
}

func (f *fakeServer) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := r.PathValue("name")
	if _, ok := f.limits[name]; !ok {
		http.NotFound(w, r)
		return
	}
	delete(f.limits, name)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeServer) acquire(w http.ResponseWriter, r *http.Request) {
	f.count()
	var req struct {
		Names          []string `json:"names"`
		Slots          int      `json:"slots"`
		LeaseDuration  float64  `json:"lease_duration"`
		TimeoutSeconds float64  `json:"timeout_seconds"`
		Holder         struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"holder"`
	}
	if !decode(w, r, &req) {
		return
	}
	if len(req.Names) != 1 || req.Slots != 1 || req.LeaseDuration < 60 || req.TimeoutSeconds < 0 ||
		req.Holder.Type != "process" || !strings.HasPrefix(req.Holder.ID, "bench-w") {
		http.Error(w, fmt.Sprintf("unexpected request %+v", req), http.StatusUnprocessableEntity)
		return
	}
	if f.mode == failAcquire {
		http.Error(w, "acquire is broken", http.StatusInternalServerError)
		return
	}
	name := req.Names[0]

	f.mu.Lock()
	l, ok := f.limitLocked(name)
	if !ok {
		f.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	if f.mode == unsafe || (l.held < l.limit && len(l.queue) == 0) {
		l.held++
		g := f.leaseLocked(name)
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, g)
		return
	}
	ch := make(chan struct{})
	l.queue = append(l.queue, ch)
	f.waitedFrom[r.RemoteAddr] = true
	f.mu.Unlock()

	timer := time.NewTimer(time.Duration(req.TimeoutSeconds * float64(time.Second)))
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-r.Context().Done():
	}
	f.mu.Lock()
	select {
	case <-ch: // granted, perhaps while giving up
	default:
		l.queue = slices.DeleteFunc(l.queue, func(c chan struct{}) bool { return c == ch })
		f.mu.Unlock()
		w.WriteHeader(http.StatusLocked)
		return
	}
	if r.Context().Err() != nil {
		f.releaseLocked(l) // nobody is left to take the slot
		f.mu.Unlock()
		return
	}
	g := f.leaseLocked(name)
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, g)
}

// leaseLocked records a lease on a slot already counted as held and
// returns the grant to answer with.
func (f *fakeServer) leaseLocked(name string) map[string]any {
	f.nextID++
	f.token++
	id := fmt.Sprintf("lease-%d", f.nextID)
	f.leases[id] = name
	return map[string]any{"lease_id": id, "fencing_token": f.token, "limits": []map[string]any{{"name": name}}}
}

// releaseLocked gives a held slot to the next waiter, or frees it.
func (f *fakeServer) releaseLocked(l *fakeLimit) {
	if f.mode == unsafe || len(l.queue) == 0 {
		l.held--
		return
	}
	i := 0
	if f.mode == lifo {
		i = len(l.queue) - 1
	}
	close(l.queue[i])
	l.queue = slices.Delete(l.queue, i, i+1)
}

// count counts an acquire or release received.
func (f *fakeServer) count() {
	f.mu.Lock()
	f.requests++
	f.mu.Unlock()
}

func (f *fakeServer) release(w http.ResponseWriter, r *http.Request) {
	f.count()
	var req struct {
		LeaseID string `json:"lease_id"`
	}
	if !decode(w, r, &req) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if name, ok := f.leases[req.LeaseID]; ok {
		delete(f.leases, req.LeaseID)
		if l, ok := f.limits[name]; ok {
			f.releaseLocked(l)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// limitNames returns the names of the limits the fake holds, sorted.
func (f *fakeServer) limitNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.limits {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

type testBundle struct {
	fake *fakeServer
	cfg  Config
}

// setup starts a fake server in mode and returns a short configuration
// aimed at it.
func setup(t *testing.T, mode fakeMode) *testBundle {
	t.Helper()
	fake := newFakeServer(mode)
	srv := httptest.NewServer(fake.handler())
	t.Cleanup(srv.Close)
	cfg := DefaultConfig()
	cfg.URL = srv.URL + "/api/"
	cfg.ThroughputWorkers = 8
	cfg.HandoffWorkers = 4
	cfg.Limits = 8
	cfg.Duration = 300 * time.Millisecond
	cfg.Warmup = 50 * time.Millisecond
	cfg.Prefix = "test"
	cfg.Executable = testExecutable(t)
	return &testBundle{fake: fake, cfg: cfg}
}

func TestRunAgainstFIFOServer(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	var out bytes.Buffer
	results, err := Run(t.Context(), b.cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("output:\n%s", out.String())
	if got, want := len(results), 3; got != want {
		t.Fatalf("got %d results, want %d:\n%s", got, want, out.String())
	}
	for _, r := range results {
		if r.Errors != 0 || r.Overlaps != 0 || r.FencingRegressions != 0 || r.LeakedSlots != 0 {
			t.Errorf("%s: got errors=%d (%s) overlaps=%d fencing_regressions=%d leaked=%d, want all 0",
				r.Workload, r.Errors, r.FirstError, r.Overlaps, r.FencingRegressions, r.LeakedSlots)
		}
		if r.Seconds != 0.3 {
			t.Errorf("%s: got seconds=%v, want 0.3", r.Workload, r.Seconds)
		}
	}

	bl := results[0]
	if bl.Workload != WorkloadBaseline || bl.Baseline == nil {
		t.Fatalf("got first result %+v, want baseline", bl)
	}
	if bl.Workers != 8 || bl.Requests <= 0 || bl.RequestsPerSecond != float64(bl.Requests)/0.3 {
		t.Errorf("got workers=%d requests=%d requests/s=%v, want 8, > 0 and requests/0.3", bl.Workers, bl.Requests, bl.RequestsPerSecond)
	}
	if bl.ServerCPUMicrosPerPair != nil {
		t.Errorf("got baseline server CPU %v, want none", *bl.ServerCPUMicrosPerPair)
	}

	tp := results[1]
	if tp.Workload != WorkloadThroughput || tp.Throughput == nil {
		t.Fatalf("got second result %+v, want throughput", tp)
	}
	if tp.Workers != 8 || tp.Limits != 8 {
		t.Errorf("got workers=%d limits=%d, want 8 and 8", tp.Workers, tp.Limits)
	}
	if tp.Pairs <= 0 || tp.PairsPerSecond <= 0 {
		t.Errorf("got pairs=%d pairs/s=%v, want > 0", tp.Pairs, tp.PairsPerSecond)
	}
	if tp.AcquireP50MS <= 0 || tp.AcquireP50MS > tp.AcquireP99MS {
		t.Errorf("got acquire p50=%vms p99=%vms, want 0 < p50 <= p99", tp.AcquireP50MS, tp.AcquireP99MS)
	}
	if want := tp.PairsPerSecond / bl.RequestsPerSecond; tp.PairsPerBareRequest != want || tp.TargetPairsPerBareRequest != TargetPairsPerBareRequest {
		t.Errorf("got pairs per bare request %v (target %v), want %v (target %v)",
			tp.PairsPerBareRequest, tp.TargetPairsPerBareRequest, want, TargetPairsPerBareRequest)
	}

	// Throughput and handoff each read the CPU time twice.
	cpu := b.fake.served()
	if len(cpu) != 4 {
		t.Fatalf("got %d reads of /metrics, want 4", len(cpu))
	}
	checkCPU(t, tp, cpu[1]-cpu[0], tp.Pairs)

	h := results[2]
	if h.Workload != WorkloadHandoff || h.Handoff == nil {
		t.Fatalf("got third result %+v, want handoff", h)
	}
	checkCPU(t, h, cpu[3]-cpu[2], h.Grants)
	if h.Grants <= 0 || h.GrantsPerSecond <= 0 {
		t.Errorf("got grants=%d grants/s=%v, want > 0", h.Grants, h.GrantsPerSecond)
	}
	// Each grant is held for 1 ms, so no more than ~1000 grants fit in a second.
	if h.GrantsPerSecond > 1000 {
		t.Errorf("got %v grants/s with 1 ms holds, want at most 1000", h.GrantsPerSecond)
	}
	if h.GapP50MS > h.GapP99MS || h.WaitP99MS > h.WaitMaxMS || h.WaitMaxMS <= 0 {
		t.Errorf("got gap p50=%v p99=%v wait p99=%v max=%v, want ordered and positive",
			h.GapP50MS, h.GapP99MS, h.WaitP99MS, h.WaitMaxMS)
	}
	if h.Jain <= 0.9 {
		t.Errorf("got jain=%v, want > 0.9 from a FIFO server", h.Jain)
	}
	if h.FIFO <= 0.8 {
		t.Errorf("got fifo=%v, want > 0.8 from a FIFO server", h.FIFO)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var prefixes []string
	for _, l := range lines {
		prefixes = append(prefixes, l[:strings.Index(l, ":")+1])
		want := "errors=0 overlaps=0"
		if strings.HasPrefix(l, "baseline:") {
			want = "errors=0"
		}
		if !strings.Contains(l, want) {
			t.Errorf("got line %q, want it to report %s", l, want)
		}
	}
	if diff := cmp.Diff([]string{"baseline:", "throughput:", "handoff:"}, prefixes); diff != "" {
		t.Errorf("output lines mismatch (-want +got):\n%s\noutput:\n%s", diff, out.String())
	}
	if diff := cmp.Diff([]string(nil), b.fake.limitNames()); diff != "" {
		t.Errorf("limits left after clean-up (-want +got):\n%s", diff)
	}
}

// checkCPU checks that r gives the server's CPU time per pair as seconds
// over pairs, in microseconds.
func checkCPU(t *testing.T, r Result, seconds float64, pairs int) {
	t.Helper()
	if r.ServerCPUMicrosPerPair == nil {
		t.Errorf("%s: got no server CPU, want %vs over %d pairs", r.Workload, seconds, pairs)
		return
	}
	got, want := *r.ServerCPUMicrosPerPair, seconds/float64(pairs)*1e6
	if math.Abs(got-want) > 1e-9*want {
		t.Errorf("%s: got server CPU %vµs/pair, want %v", r.Workload, got, want)
	}
	// Each pair is an acquire and a release; few are cut by the window's
	// edges.
	if lo, hi := 1.5*fakeCPUPerRequest*1e6, 2.5*fakeCPUPerRequest*1e6; got < lo || got > hi {
		t.Errorf("%s: got server CPU %vµs/pair, want about %v", r.Workload, got, 2*fakeCPUPerRequest*1e6)
	}
	if line := r.String(); !strings.Contains(line, fmt.Sprintf("server_cpu=%.0fµs/pair", got)) {
		t.Errorf("%s: got line %q, want it to give server_cpu", r.Workload, line)
	}
}

func TestRunDetectsBadServers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mode  fakeMode
		check func(t *testing.T, r Result)
	}{
		{
			name: "double grants are overlaps",
			mode: unsafe,
			check: func(t *testing.T, r Result) {
				if r.Overlaps == 0 {
					t.Errorf("got overlaps=0 from a server that ignores the limit, want > 0")
				}
			},
		},
		{
			name: "newest first is not FIFO",
			mode: lifo,
			check: func(t *testing.T, r Result) {
				if r.Overlaps != 0 {
					t.Errorf("got overlaps=%d from a safe server, want 0", r.Overlaps)
				}
				if r.FIFO >= 0.5 {
					t.Errorf("got fifo=%v from a newest-first server, want < 0.5", r.FIFO)
				}
			},
		},
		{
			name: "failed acquires are errors",
			mode: failAcquire,
			check: func(t *testing.T, r Result) {
				if r.Errors == 0 || !strings.Contains(r.FirstError, "500") {
					t.Errorf("got errors=%d first_error=%q, want errors > 0 and a 500", r.Errors, r.FirstError)
				}
				if r.Grants != 0 {
					t.Errorf("got %d grants, want 0", r.Grants)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.mode)
			b.cfg.Workload = WorkloadHandoff
			var out bytes.Buffer
			results, err := Run(t.Context(), b.cfg, &out)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(results) != 1 || results[0].Handoff == nil {
				t.Fatalf("got results %+v, want one handoff result", results)
			}
			t.Logf("output:\n%s", out.String())
			tt.check(t, results[0])
		})
	}
}

func TestRunJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	b.cfg.Workload = WorkloadThroughput
	b.cfg.Duration = 100 * time.Millisecond
	b.cfg.Warmup = 0
	b.cfg.JSON = true
	var out bytes.Buffer
	if _, err := Run(t.Context(), b.cfg, &out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(out.Bytes(), &obj); err != nil {
		t.Fatalf("output %q is not one JSON object: %v", out.String(), err)
	}
	var keys []string
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{
		"acquire_p50_ms", "acquire_p99_ms", "errors", "fencing_regressions", "leaked_slots",
		"limits", "overlaps", "pairs", "pairs_per_second", "seconds", "server_cpu_us_per_pair", "workers", "workload",
	}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("JSON keys mismatch (-want +got):\n%s", diff)
	}
	if obj["workload"] != WorkloadThroughput {
		t.Errorf("got workload %v, want %s", obj["workload"], WorkloadThroughput)
	}
}

func TestRunResetsExistingLimitAndKeepsIt(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	b.cfg.Workload = WorkloadHandoff
	b.cfg.Duration = 100 * time.Millisecond
	b.cfg.Warmup = 0
	b.cfg.Cleanup = false
	// A limit of the same name with room for everyone would make every
	// worker a holder at once; the run must set it back to one slot.
	b.fake.limits["test-h"] = &fakeLimit{limit: 100}
	var out bytes.Buffer
	results, err := Run(t.Context(), b.cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r := results[0]; r.Overlaps != 0 || r.Errors != 0 || r.Grants == 0 {
		t.Errorf("got overlaps=%d errors=%d grants=%d, want 0, 0 and > 0", r.Overlaps, r.Errors, r.Grants)
	}
	if diff := cmp.Diff([]string{"test-h"}, b.fake.limitNames()); diff != "" {
		t.Errorf("limits after a run without clean-up (-want +got):\n%s", diff)
	}
	b.fake.mu.Lock()
	defer b.fake.mu.Unlock()
	if got := b.fake.limits["test-h"].limit; got != 1 {
		t.Errorf("got limit %d after the run, want 1", got)
	}
}

func TestRunFails(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		mode    fakeMode
		ctx     context.Context
		edit    func(*Config)
		wantErr string
	}{
		{name: "unknown workload", edit: func(c *Config) { c.Workload = "nope" }, wantErr: `unknown workload "nope"`},
		{name: "no workers", edit: func(c *Config) { c.HandoffWorkers = 0 }, wantErr: "handoff workers 0 is not positive"},
		{name: "no duration", edit: func(c *Config) { c.Duration = 0 }, wantErr: "duration 0s is not positive"},
		{name: "no executable for the baseline", edit: func(c *Config) { c.Executable = "" }, wantErr: "no executable to start the baseline's bare server from"},
		{name: "set-up refused", mode: failCreate, edit: func(c *Config) { c.Workload = WorkloadThroughput }, wantErr: "throughput: set up: create limit test-t0: unexpected status 500"},
		{name: "server gone", edit: func(c *Config) { c.URL = "http://127.0.0.1:1/api" }, wantErr: "reach server: "},
		{name: "server gone, throughput only", edit: func(c *Config) { c.URL = "http://127.0.0.1:1/api"; c.Workload = WorkloadThroughput }, wantErr: "throughput: set up: create limit test-t0"},
		{name: "cancelled", ctx: cancelled, wantErr: "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.mode)
			if tt.edit != nil {
				tt.edit(&b.cfg)
			}
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			var out bytes.Buffer
			results, err := Run(ctx, b.cfg, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
			if len(results) != 0 || out.Len() != 0 {
				t.Errorf("got results %+v and output %q, want none", results, out.String())
			}
		})
	}
}

func TestRunMemory(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	b.cfg.Workload = WorkloadMemory
	b.cfg.Leases = 1000
	b.cfg.Waiters = 50
	b.cfg.Settle = 10 * time.Millisecond
	var out bytes.Buffer
	results, err := Run(t.Context(), b.cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("output:\n%s", out.String())
	if len(results) != 1 || results[0].Memory == nil {
		t.Fatalf("got results %+v, want one memory result", results)
	}
	r := results[0]
	if r.Errors != 0 || r.Overlaps != 0 || r.FencingRegressions != 0 || r.LeakedSlots != 0 {
		t.Errorf("got errors=%d (%s) overlaps=%d fencing_regressions=%d leaked=%d, want all 0",
			r.Errors, r.FirstError, r.Overlaps, r.FencingRegressions, r.LeakedSlots)
	}
	type perItem struct {
		Items, Limits                int
		RSS, Heap, Stack, Goroutines float64
		Met                          bool
	}
	got := func(p *MemoryPart) perItem {
		if p == nil {
			return perItem{}
		}
		return perItem{p.Items, p.Limits, p.RSSBytesPerItem, p.HeapBytesPerItem, p.StackBytesPerItem, p.GoroutinesPerItem, p.Met}
	}
	wantLease := perItem{Items: 1000, Limits: 10, RSS: fakeRSSPerLease, Heap: fakeHeapPerLease, Met: true}
	if diff := cmp.Diff(wantLease, got(r.PerLease)); diff != "" {
		t.Errorf("per lease mismatch (-want +got):\n%s", diff)
	}
	wantWaiter := perItem{Items: 50, Limits: 1, RSS: fakeRSSPerWaiter, Heap: fakeHeapPerWaiter, Stack: fakeStackPerWait, Goroutines: 2, Met: true}
	if diff := cmp.Diff(wantWaiter, got(r.PerWaiter)); diff != "" {
		t.Errorf("per waiter mismatch (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(out.String(), "memory:  per held lease rss=1000B heap=600B") {
		t.Errorf("got output %q, want it to start with the per-lease figures", out.String())
	}

	b.fake.mu.Lock()
	defer b.fake.mu.Unlock()
	if got, want := len(b.fake.waitedFrom), 50; got != want {
		t.Errorf("requests waited from %d client addresses, want %d: one connection per waiter", got, want)
	}
	if got := len(b.fake.leases); got != 0 {
		t.Errorf("got %d leases left after the run, want 0", got)
	}
	if got := len(b.fake.limits); got != 0 {
		t.Errorf("got %d limits left after the run, want 0", got)
	}
}

func TestRunMemoryFailsWhenWaitersFail(t *testing.T) {
	t.Parallel()
	b := setup(t, failAcquire)
	b.cfg.Workload = WorkloadMemory
	b.cfg.Leases = 0
	b.cfg.Waiters = 5
	b.cfg.Settle = time.Millisecond
	var out bytes.Buffer
	_, err := Run(t.Context(), b.cfg, &out)
	// The holder's acquire fails first.
	if err == nil || !strings.Contains(err.Error(), "memory: per waiter: set up: hold test-wait") {
		t.Fatalf("got error %v, want the holder's acquire to fail", err)
	}
	if diff := cmp.Diff([]string(nil), b.fake.limitNames()); diff != "" {
		t.Errorf("limits left after clean-up (-want +got):\n%s", diff)
	}
}

func TestRunScale(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	b.cfg.Workload = WorkloadScale
	b.cfg.ScaleSizes = []int{3, 200}
	b.cfg.Limits = 4
	b.cfg.Duration = 150 * time.Millisecond
	b.cfg.Warmup = 0
	var out bytes.Buffer
	results, err := Run(t.Context(), b.cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("output:\n%s", out.String())
	if len(results) != 1 || results[0].Scale == nil {
		t.Fatalf("got results %+v, want one scale result", results)
	}
	r := results[0]
	if r.Errors != 0 || r.Overlaps != 0 || r.FencingRegressions != 0 || r.LeakedSlots != 0 {
		t.Errorf("got errors=%d (%s) overlaps=%d fencing_regressions=%d leaked=%d, want all 0",
			r.Errors, r.FirstError, r.Overlaps, r.FencingRegressions, r.LeakedSlots)
	}
	var held []int
	for _, st := range r.Steps {
		held = append(held, st.Held)
		if st.Pairs <= 0 || st.Limits != 4 || st.Seconds != 0.15 {
			t.Errorf("step %d: got pairs=%d limits=%d seconds=%v, want > 0, 4 and 0.15", st.Held, st.Pairs, st.Limits, st.Seconds)
		}
	}
	if diff := cmp.Diff([]int{3, 200}, held); diff != "" {
		t.Errorf("steps mismatch (-want +got):\n%s", diff)
	}
	if want := r.Steps[0].PairsPerSecond / r.Steps[1].PairsPerSecond; r.Slowdown != want {
		t.Errorf("got slowdown %v, want %v", r.Slowdown, want)
	}
	if r.Seconds != 0.3 {
		t.Errorf("got seconds %v, want 0.3", r.Seconds)
	}
	b.fake.mu.Lock()
	defer b.fake.mu.Unlock()
	if got := len(b.fake.leases); got != 0 {
		t.Errorf("got %d leases left after the run, want 0", got)
	}
	if got := len(b.fake.limits); got != 0 {
		t.Errorf("got %d limits left after the run, want 0", got)
	}
}

// TestResultJSONNamesUnique checks that the workloads' results share no JSON
// name: encoding/json silently drops both fields of a clash in a flat
// object.
func TestResultJSONNamesUnique(t *testing.T) {
	t.Parallel()
	var want []string
	rt := reflect.TypeFor[Result]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if !f.Anonymous {
			want = append(want, strings.Split(f.Tag.Get("json"), ",")[0])
			continue
		}
		et := f.Type.Elem()
		for j := range et.NumField() {
			want = append(want, strings.Split(et.Field(j).Tag.Get("json"), ",")[0])
		}
	}
	slices.Sort(want)
	cpu := 1.0
	r := Result{
		FirstError: "x", System: "x", ServerCPUMicrosPerPair: &cpu,
		Baseline:   &Baseline{},
		Throughput: &Throughput{PairsPerBareRequest: 1, TargetPairsPerBareRequest: 1}, Handoff: &Handoff{IdleRoundTripP99MS: 1},
		Memory: &Memory{PerLease: &MemoryPart{}, PerWaiter: &MemoryPart{}}, Scale: &Scale{},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(obj))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON keys mismatch (-want +got):\n%s", diff)
	}
}
