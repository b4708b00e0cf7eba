package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestMain makes the test binary the bare server when the baseline
// workload starts it as one, as allot-bench's main does.
func TestMain(m *testing.M) {
	if addr, ok := os.LookupEnv(BareServerEnv); ok {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := ServeBare(ctx, addr, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testExecutable returns the test binary, which serves as the bare server
// (see TestMain).
func testExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	return exe
}

// startServeBare runs ServeBare in this process until the test ends and
// returns the address it printed.
func startServeBare(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := ServeBare(ctx, "127.0.0.1:0", pw)
		_ = pw.CloseWithError(err)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeBare: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read the bare server's address: %v", err)
	}
	// Nothing more is written; let a late write fail rather than block.
	_ = pr.Close()
	return strings.TrimSpace(line)
}

func TestServeBareAnswersTheRawClient(t *testing.T) {
	t.Parallel()
	addr := startServeBare(t)
	rc, err := newRawConn("http://" + addr + "/api")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()

	body := appendAcquireBody(nil, quote("bench-x-t3"), quote("bench-w0"))
	for token := int64(1); token <= 2; token++ {
		code, resp, err := rc.post(t.Context(), shortTimeout, bareAcquirePath, body)
		if err != nil {
			t.Fatalf("POST %s: %v", bareAcquirePath, err)
		}
		if code != 200 {
			t.Fatalf("POST %s: got status %d (%s), want 200", bareAcquirePath, code, resp)
		}
		var got bareGrant
		if err := json.Unmarshal(resp, &got); err != nil {
			t.Fatalf("answer %q: %v", resp, err)
		}
		want := bareGrant{
			LeaseID:      fmt.Sprintf("00000000-0000-4000-8000-%012x", token),
			Limits:       []bareLimit{{ID: bareLimitID, Name: "bench-x-t3", Limit: 1}},
			FencingToken: token,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("grant %d mismatch (-want +got):\n%s", token, diff)
		}
	}

	// The workers' own client decodes the answer as it decodes allot's.
	c := newClient(nil, "http://"+addr+"/api")
	c.raw = true
	p := c.worker()
	defer p.close()
	g, err := p.acquire(t.Context(), body)
	if err != nil {
		t.Fatalf("acquire from the bare server: %v", err)
	}
	if g.LeaseID == "" || g.FencingToken != 3 {
		t.Errorf("got grant %+v, want a lease id and fencing token 3", g)
	}

	for _, tc := range []struct {
		name, path, body string
		wantCode         int
	}{
		{"not JSON", bareAcquirePath, "names=x", 400},
		{"no names", bareAcquirePath, `{"slots":1}`, 400},
		{"another path", "/api/v2/concurrency_limits/", `{}`, 404},
	} {
		code, resp, err := rc.post(t.Context(), shortTimeout, tc.path, []byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.wantCode {
			t.Errorf("%s: got status %d (%s), want %d", tc.name, code, resp, tc.wantCode)
		}
	}
}

func TestRunBaseline(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Workload = WorkloadBaseline
	cfg.URL = "http://127.0.0.1:1/api" // not needed: nothing listens there
	cfg.Executable = testExecutable(t)
	cfg.ThroughputWorkers = 4
	cfg.Duration = 200 * time.Millisecond
	cfg.Warmup = 50 * time.Millisecond
	for _, asJSON := range []bool{false, true} {
		cfg.JSON = asJSON
		var out bytes.Buffer
		results, err := Run(t.Context(), cfg, &out)
		if err != nil {
			t.Fatalf("Run (json %v): %v", asJSON, err)
		}
		t.Logf("output:\n%s", out.String())
		if len(results) != 1 || results[0].Baseline == nil {
			t.Fatalf("got results %+v, want one baseline result", results)
		}
		r := results[0]
		if r.Errors != 0 || r.Workers != 4 || r.Seconds != 0.2 || r.Requests <= 0 ||
			r.RequestsPerSecond != float64(r.Requests)/0.2 || r.RequestP50MS <= 0 || r.RequestP50MS > r.RequestP99MS ||
			r.FsyncP50MS <= 0 || r.FsyncP50MS > r.FsyncP99MS || r.IdleP50MS <= 0 || r.IdleP50MS > r.IdleP99MS {
			t.Errorf("got %+v %+v, want no errors, 4 workers, 0.2 s, requests > 0 at requests/0.2 per second, 0 < p50 <= p99 for requests and fsyncs",
				r, *r.Baseline)
		}
		if !asJSON {
			want := regexp.MustCompile(`^baseline: \d+ requests/s  p50=\d+\.\d\dms p99=\d+\.\d\dms  workers=4 \(bare net/http JSON round trip on this machine\)  idle round trip p50=\d+\.\d\dms p99=\d+\.\d\dms  fsync p50=\d+\.\d\dms p99=\d+\.\d\dms \(this disk, 8 KiB\)  errors=0\n$`)
			if !want.MatchString(out.String()) {
				t.Errorf("got output %q, want it to match %s", out.String(), want)
			}
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(out.Bytes(), &obj); err != nil {
			t.Fatalf("output %q is not one JSON object: %v", out.String(), err)
		}
		if obj["workload"] != WorkloadBaseline || obj["requests_per_second"] != r.RequestsPerSecond {
			t.Errorf("got JSON %v, want workload baseline and requests_per_second %v", obj, r.RequestsPerSecond)
		}
	}
}

func TestRunBaselineFailsToStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		exe     func(t *testing.T) string
		wantErr string
	}{
		{
			name:    "no such program",
			exe:     func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing") },
			wantErr: "baseline: start bare server",
		},
		{
			name: "exits without an address",
			exe: func(t *testing.T) string {
				if runtime.GOOS == "windows" {
					t.Skip("needs a shell script")
				}
				p := filepath.Join(t.TempDir(), "bad")
				if err := os.WriteFile(p, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: `want its address as the first line of its output, got "" (its stderr: broken)`,
		},
		{
			name: "prints something else",
			exe: func(t *testing.T) string {
				if runtime.GOOS == "windows" {
					t.Skip("needs a shell script")
				}
				p := filepath.Join(t.TempDir(), "chatty")
				if err := os.WriteFile(p, []byte("#!/bin/sh\necho hello\nexec sleep 60\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: `got "hello\n"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.Workload = WorkloadBaseline
			cfg.Executable = tt.exe(t)
			cfg.Duration = 100 * time.Millisecond
			var out bytes.Buffer
			start := time.Now()
			results, err := Run(t.Context(), cfg, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
			if len(results) != 0 || out.Len() != 0 {
				t.Errorf("got results %+v and output %q, want none", results, out.String())
			}
			if d := time.Since(start); d > bareStartTimeout/2 {
				t.Errorf("took %v to fail, want no waiting for the start timeout", d)
			}
		})
	}
}

func TestCPUMicrosPer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		seconds float64
		n       int
		want    *float64
	}{
		{name: "per pair", seconds: 0.65, n: 10_000, want: ptr(65.0)},
		{name: "none used", seconds: 0, n: 10, want: ptr(0.0)},
		{name: "no pairs", seconds: 1, n: 0, want: nil},
		{name: "negative time", seconds: -0.01, n: 10, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := cpuMicrosPer(tt.seconds, tt.n)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("cpuMicrosPer(%v, %d) mismatch (-want +got):\n%s", tt.seconds, tt.n, diff)
			}
		})
	}
}

func TestThroughputCompareTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		baseline   *Baseline
		wantRatio  float64
		wantTarget float64
	}{
		{name: "no baseline", baseline: nil},
		{name: "baseline served nothing", baseline: &Baseline{}},
		{name: "design machine", baseline: &Baseline{RequestsPerSecond: 67_000}, wantRatio: 15_000.0 / 67_000, wantTarget: TargetPairsPerBareRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tp := &Throughput{PairsPerSecond: 15_000}
			tp.compareTo(tt.baseline)
			if tp.PairsPerBareRequest != tt.wantRatio || tp.TargetPairsPerBareRequest != tt.wantTarget {
				t.Errorf("got ratio %v target %v, want %v and %v", tp.PairsPerBareRequest, tp.TargetPairsPerBareRequest, tt.wantRatio, tt.wantTarget)
			}
		})
	}
	if got := fmt.Sprintf("%.3f", TargetPairsPerBareRequest); got != "0.224" {
		t.Errorf("got target %s, want 0.224 (15,000 pairs/s where a bare round trip does 67,000/s)", got)
	}
}

func TestRunWithoutMetricsOmitsServerCPU(t *testing.T) {
	t.Parallel()
	b := setup(t, fifo)
	b.cfg.Workload = WorkloadThroughput
	b.cfg.MetricsURL = "http://127.0.0.1:1/metrics" // nothing listens there
	b.cfg.Duration = 100 * time.Millisecond
	b.cfg.Warmup = 0
	var out bytes.Buffer
	results, err := Run(t.Context(), b.cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	r := results[0]
	if r.ServerCPUMicrosPerPair != nil {
		t.Errorf("got server CPU %vµs/pair, want none", *r.ServerCPUMicrosPerPair)
	}
	if r.Errors != 0 {
		t.Errorf("got %d errors (%s), want 0: an unreadable /metrics is not an error", r.Errors, r.FirstError)
	}
	if strings.Contains(out.String(), "server_cpu") || r.PairsPerBareRequest != 0 || strings.Contains(out.String(), "bare request") {
		t.Errorf("got output %q, want neither server_cpu nor a comparison to a baseline that did not run", out.String())
	}
}

func ptr[T any](v T) *T { return &v }

func TestMeasureFsync(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lat, err := measureFsync(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != fsyncSamples || !slices.IsSorted(lat) || lat[0] <= 0 {
		t.Fatalf("got %d latencies (sorted %v, first %v), want %d positive ones, sorted", len(lat), slices.IsSorted(lat), lat[0], fsyncSamples)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %d files behind", len(left))
	}
	if _, err := measureFsync(t.Context(), filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a missing directory: got no error")
	}
}

func TestIdleCount(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want int
	}{{5 * time.Second, idleSamples}, {200 * time.Millisecond, 100}, {0, 1}} {
		if got := idleCount(tt.d); got != tt.want {
			t.Errorf("idleCount(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestHandoffCompareTo(t *testing.T) {
	t.Parallel()
	h := &Handoff{GapP99MS: 5}
	h.compareTo(nil)
	if h.IdleRoundTripP99MS != 0 {
		t.Errorf("no baseline: got floor %v, want 0", h.IdleRoundTripP99MS)
	}
	h.compareTo(&Baseline{IdleP99MS: 2.4})
	if h.IdleRoundTripP99MS != 2.4 {
		t.Errorf("got floor %v, want the baseline's idle p99 2.4", h.IdleRoundTripP99MS)
	}
}
