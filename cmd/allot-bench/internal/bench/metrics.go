package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The metrics a MemoryReading is read from: the process and Go collectors
// of Prometheus's client library, which allot's /metrics serves.
const (
	metricRSS        = "process_resident_memory_bytes"
	metricHeapInuse  = "go_memstats_heap_inuse_bytes"
	metricStackInuse = "go_memstats_stack_inuse_bytes"
	metricGoroutines = "go_goroutines"
	// metricCPU is the server's CPU time, user and system, in seconds.
	metricCPU = "process_cpu_seconds_total"
)

// maxMetricsBytes bounds how much of a /metrics answer is read.
const maxMetricsBytes = 8 << 20

// MemoryReading is the server's memory as its /metrics reported it at one
// moment.
type MemoryReading struct {
	// RSSBytes is the resident set size of the server process: everything
	// it holds in RAM, the Go heap, goroutine stacks and memory outside
	// Go's allocator (such as SQLite's page cache) included.
	RSSBytes int64 `json:"rss_bytes"`
	// HeapInuseBytes is the Go heap's spans in use: live objects and the
	// garbage not yet collected.
	HeapInuseBytes int64 `json:"heap_inuse_bytes"`
	// StackInuseBytes is the memory of goroutine stacks, which the heap
	// figure leaves out.
	StackInuseBytes int64 `json:"stack_inuse_bytes"`
	// Goroutines counts the server's goroutines.
	Goroutines int64 `json:"goroutines"`
}

// lower returns the smaller of a and b, field by field: of two readings of
// an idle server, the lower is the one least inflated by garbage that is
// about to be collected or memory about to be returned.
func lower(a, b MemoryReading) MemoryReading {
	return MemoryReading{
		RSSBytes:        min(a.RSSBytes, b.RSSBytes),
		HeapInuseBytes:  min(a.HeapInuseBytes, b.HeapInuseBytes),
		StackInuseBytes: min(a.StackInuseBytes, b.StackInuseBytes),
		Goroutines:      min(a.Goroutines, b.Goroutines),
	}
}

// metricsURL returns the address of the /metrics of the server whose API
// base URL is api: /metrics sits beside /api, not under it.
func metricsURL(api string) (string, error) {
	u, err := url.Parse(api)
	if err != nil {
		return "", fmt.Errorf("metrics URL: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("metrics URL: %q is not an absolute URL", api)
	}
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/api")
	u.Path = p + "/metrics"
	u.RawPath = ""
	u.RawQuery = ""
	u.Fragment = ""
	return u.String(), nil
}

// cpuMetricsURL returns the /metrics the throughput and handoff workloads
// read the server's CPU time from, or "" if there is none to read.
func cpuMetricsURL(cfg Config) string {
	if cfg.MetricsURL != "" {
		return cfg.MetricsURL
	}
	u, err := metricsURL(cfg.URL)
	if err != nil {
		return ""
	}
	return u
}

// metricValue returns the value of the sample of the metric called name
// that has no labels, from metrics in Prometheus's text exposition format.
func metricValue(metrics []byte, name string) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, name)
		if !ok || line[0] == '#' {
			continue
		}
		// The name must end here: go_goroutines is not
		// go_goroutines_total, and a labelled sample is not the
		// unlabelled one.
		if rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			return 0, fmt.Errorf("metric %s: malformed sample %q", name, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: malformed value %q", name, fields[0])
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("metric %s: %w", name, err)
	}
	return 0, fmt.Errorf("metric %s: not found", name)
}

// parseMemory reads a MemoryReading from metrics in Prometheus's text
// exposition format.
func parseMemory(metrics []byte) (MemoryReading, error) {
	var m MemoryReading
	var errs []error
	for _, f := range []struct {
		name string
		dst  *int64
	}{
		{metricRSS, &m.RSSBytes},
		{metricHeapInuse, &m.HeapInuseBytes},
		{metricStackInuse, &m.StackInuseBytes},
		{metricGoroutines, &m.Goroutines},
	} {
		v, err := metricValue(metrics, f.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		*f.dst = int64(v)
	}
	return m, errors.Join(errs...)
}

// readMetrics reads the server's metrics from its /metrics at u.
func readMetrics(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, unexpected("read metrics", resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes))
	finish(resp)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return b, nil
}

// readMemory reads the server's memory from its /metrics at u.
func readMemory(ctx context.Context, hc *http.Client, u string) (MemoryReading, error) {
	b, err := readMetrics(ctx, hc, u)
	if err != nil {
		return MemoryReading{}, err
	}
	m, err := parseMemory(b)
	if err != nil {
		return MemoryReading{}, fmt.Errorf("read metrics: %w", err)
	}
	return m, nil
}

// readCPU reads the server's CPU time, in seconds, from its /metrics at u.
func readCPU(ctx context.Context, hc *http.Client, u string) (float64, error) {
	b, err := readMetrics(ctx, hc, u)
	if err != nil {
		return 0, err
	}
	v, err := metricValue(b, metricCPU)
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	return v, nil
}

// cpuInWindow reads the server's CPU time from its /metrics at u as the
// window w (offsets from start) opens and as it closes, and returns the
// difference in seconds; nil if either reading failed, ctx was done first,
// or the counter went backwards (another server answered the second time).
// Each reading is late by the time the server takes to answer it, which
// varies much less than the window is long.
func cpuInWindow(ctx context.Context, hc *http.Client, u string, start time.Time, w window) *float64 {
	var readings [2]float64
	for i, at := range []time.Duration{w.from, w.to} {
		if err := sleep(ctx, time.Until(start.Add(at))); err != nil {
			return nil
		}
		v, err := readCPU(ctx, hc, u)
		if err != nil {
			return nil
		}
		readings[i] = v
	}
	d := readings[1] - readings[0]
	if d < 0 {
		return nil
	}
	return &d
}

// cpuMicrosPer returns seconds of CPU time over n operations, in
// microseconds; nil when there were no operations to share it or the time
// is negative.
func cpuMicrosPer(seconds float64, n int) *float64 {
	if n <= 0 || seconds < 0 {
		return nil
	}
	v := seconds / float64(n) * 1e6
	return &v
}

// settledMemory lets the server settle for settle, then reads its memory
// twice, settle apart, and returns the lower of the two readings. It forces
// nothing: no garbage collection, no return of memory to the system.
func settledMemory(ctx context.Context, hc *http.Client, u string, settle time.Duration) (MemoryReading, error) {
	if err := sleep(ctx, settle); err != nil {
		return MemoryReading{}, err
	}
	a, err := readMemory(ctx, hc, u)
	if err != nil {
		return MemoryReading{}, err
	}
	if err := sleep(ctx, settle); err != nil {
		return MemoryReading{}, err
	}
	b, err := readMemory(ctx, hc, u)
	if err != nil {
		return MemoryReading{}, err
	}
	return lower(a, b), nil
}

// sleep waits for d or until ctx is done, whichever comes first, and
// returns ctx's error in the second case.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
