package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/server"
)

// startServer runs a server with --metrics-limit db for the test.
func startServer(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Synchronous: "NORMAL", Coord: coord.DefaultConfig(),
		MetricsLimits: []string{"db"}, Listening: func(a net.Addr) { addr <- a }}
	go func() { done <- server.Run(ctx, cfg) }()
	select {
	case a := <-addr:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
		return "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("start server: %v", err)
	}
	return ""
}

// scrape reads /metrics into series → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsAfterScriptedSequence checks the coordinator's metrics after
// grants, a denial, a wait that times out, a wait that is granted, an
// expiry, a revocation and a run.
func TestMetricsAfterScriptedSequence(t *testing.T) {
	t.Parallel()
	base := startServer(t)
	ctx := t.Context()
	c, err := allot.NewClient(allot.WithURL(base+"/api"), allot.WithAPIKey(""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	for _, n := range []string{"db", "short"} {
		if _, err := c.CreateLimit(ctx, allot.LimitSpec{Name: n, Limit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := c.Acquire(ctx, []string{"db"}) // grant 1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, []string{"db"}); !errors.Is(err, allot.ErrLocked) { // denial 1
		t.Fatalf("TryAcquire on a full limit: %v", err)
	}
	if _, err := c.Acquire(ctx, []string{"db"}, allot.Timeout(200*time.Millisecond), allot.MaxRetries(0)); !errors.Is(err, allot.ErrTimeout) { // time-out 1, denial 2
		t.Fatalf("Acquire with a short timeout: %v", err)
	}
	got := make(chan *allot.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, []string{"db"}, allot.Timeout(time.Minute)) // waits, then grant 2
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	eventually(t, "the second request waits", func() bool { return scrape(t, base)["allot_waiters"] == 1 })
	if resp, err := http.Get(base + "/ui/limits/db"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the limit's page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Counted once the handler returns, which may be after the answer.
	eventually(t, "the web UI's request is counted by its route", func() bool {
		return scrape(t, base)[`allot_http_requests_total{code="200",route="GET /ui/limits/{id}"}`] == 1
	})
	m := scrape(t, base)
	if m[`allot_limit_waiting{limit="db"}`] != 1 || m[`allot_limit_held_slots{limit="db"}`] != 1 {
		t.Errorf("opt-in limit metrics: waiting %v held %v, want 1 and 1", m[`allot_limit_waiting{limit="db"}`], m[`allot_limit_held_slots{limit="db"}`])
	}
	if err := a.Release(ctx); err != nil { // release 1
		t.Fatal(err)
	}
	b := <-got
	if err := c.RevokeLease(ctx, b.ID(), "test"); err != nil { // revocation 1
		t.Fatal(err)
	}
	<-b.Done()
	// A lease of one second that nobody renews: expiry 1 (grant 3).
	resp, err := http.Post(base+"/api/v2/concurrency_limits/increment-with-lease", "application/json",
		strings.NewReader(`{"names":["short"],"slots":1,"lease_duration":1}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("short lease: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, "the short lease expires", func() bool { return scrape(t, base)["allot_expiries_total"] == 1 })
	if err := c.RunTask(ctx, "nightly", func(context.Context) error { return nil }, allot.RunLimits(1, "db")); err != nil { // grant 4, release 2
		t.Fatal(err)
	}

	m = scrape(t, base)
	want := map[string]float64{
		"allot_grants_total":                 4,
		"allot_releases_total":               2,
		"allot_expiries_total":               1,
		"allot_revocations_total":            1,
		"allot_refusals_total":               2,
		"allot_wait_timeouts_total":          1,
		"allot_acquire_wait_seconds_count":   1,
		"allot_leases":                       0,
		"allot_waiters":                      0,
		`allot_runs{state="Completed"}`:      1,
		`allot_runs{state="Running"}`:        0,
		`allot_limit_held_slots{limit="db"}`: 0,
	}
	gotWant := map[string]float64{}
	for k := range want {
		gotWant[k] = m[k]
	}
	if diff := cmp.Diff(want, gotWant); diff != "" {
		t.Errorf("metrics after the sequence (-want +got):\n%s", diff)
	}
	if m["allot_store_commit_changes_count"] < 1 || m["allot_store_commit_seconds_count"] < 1 {
		t.Errorf("no store commits counted")
	}
	for k := range m {
		if strings.HasPrefix(k, "allot_") && strings.Contains(k, `limit="short"`) {
			t.Errorf("%s: a limit not named with --metrics-limit is a label", k)
		}
	}

	// Every metric the shipped Grafana dashboard plots exists now.
	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, m)
	})
}

// checkDashboard reads docs/grafana/allot.json and checks that every
// allot metric its queries use is on /metrics.
func checkDashboard(t *testing.T, m map[string]float64) {
	b, err := os.ReadFile("../../docs/grafana/allot.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for series := range m {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
	}
	re := regexp.MustCompile(`allot_[a-z_]+`)
	used := 0
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range re.FindAllString(tg.Expr, -1) {
				used++
				if !names[name] {
					t.Errorf("panel %q uses %s, which /metrics does not have", p.Title, name)
				}
			}
		}
	}
	if used < 10 {
		t.Errorf("the dashboard uses only %d metrics", used)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
