package bench

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// exposition is a piece of a real allot server's /metrics.
const exposition = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 12
# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 4.554752e+06
# HELP go_memstats_stack_inuse_bytes Number of bytes obtained from system for stack allocator.
# TYPE go_memstats_stack_inuse_bytes gauge
go_memstats_stack_inuse_bytes 655360
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.5e-05
go_gc_duration_seconds_sum 0.000512
go_gc_duration_seconds_count 4
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.1733376e+07
`

func TestMetricValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		metrics string
		metric  string
		want    float64
		wantErr string
	}{
		{name: "integer", metrics: exposition, metric: "go_goroutines", want: 12},
		{name: "scientific notation", metrics: exposition, metric: "process_resident_memory_bytes", want: 21733376},
		{name: "plain bytes", metrics: exposition, metric: "go_memstats_stack_inuse_bytes", want: 655360},
		{name: "longer name sharing the prefix skipped", metrics: "go_gc_duration_seconds_sum 0.5\ngo_gc_duration_seconds 7\n", metric: "go_gc_duration_seconds", want: 7},
		{name: "labelled sample skipped", metrics: exposition, metric: "go_gc_duration_seconds", wantErr: "metric go_gc_duration_seconds: not found"},
		{name: "comment lines skipped", metrics: "# TYPE x gauge\n# HELP x what x is\nx 3\n", metric: "x", want: 3},
		{name: "timestamp ignored", metrics: "x 3 1700000000000\n", metric: "x", want: 3},
		{name: "indented and CRLF", metrics: "  x\t42\r\n", metric: "x", want: 42},
		{name: "NaN", metrics: "x NaN\n", metric: "x", want: math.NaN()},
		{name: "missing", metrics: exposition, metric: "allot_leases", wantErr: "metric allot_leases: not found"},
		{name: "bad value", metrics: "x twelve\n", metric: "x", wantErr: `metric x: malformed value "twelve"`},
		{name: "no value", metrics: "x \n", metric: "x", wantErr: "metric x: not found"},
		{name: "too many fields", metrics: "x 1 2 3\n", metric: "x", wantErr: `metric x: malformed sample "x 1 2 3"`},
		{name: "empty", metrics: "", metric: "x", wantErr: "metric x: not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := metricValue([]byte(tt.metrics), tt.metric)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("metricValue(%q) = %v, %v; want error %q", tt.metric, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("metricValue(%q): %v", tt.metric, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("metricValue(%q) mismatch (-want +got):\n%s", tt.metric, diff)
			}
		})
	}
}

func TestParseMemory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		metrics string
		want    MemoryReading
		wantErr []string
	}{
		{
			name:    "all present",
			metrics: exposition,
			want:    MemoryReading{RSSBytes: 21733376, HeapInuseBytes: 4554752, StackInuseBytes: 655360, Goroutines: 12},
		},
		{
			name:    "missing ones named",
			metrics: "go_goroutines 3\ngo_memstats_heap_inuse_bytes 100\n",
			wantErr: []string{"metric process_resident_memory_bytes: not found", "metric go_memstats_stack_inuse_bytes: not found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseMemory([]byte(tt.metrics))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("parseMemory = %+v, nil; want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got error %q, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMemory: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseMemory mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMetricsURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     string
		want    string
		wantErr string
	}{
		{name: "api base", api: "http://127.0.0.1:4200/api", want: "http://127.0.0.1:4200/metrics"},
		{name: "trailing slash", api: "http://127.0.0.1:4200/api/", want: "http://127.0.0.1:4200/metrics"},
		{name: "behind a path prefix", api: "https://h.example/allot/api", want: "https://h.example/allot/metrics"},
		{name: "no api path", api: "http://h:1", want: "http://h:1/metrics"},
		{name: "query dropped", api: "http://h/api?x=1", want: "http://h/metrics"},
		{name: "relative", api: "/api", wantErr: `metrics URL: "/api" is not an absolute URL`},
		{name: "unparsable", api: "http://h:port/api", wantErr: "metrics URL: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := metricsURL(tt.api)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("metricsURL(%q) = %q, %v; want error %q", tt.api, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("metricsURL(%q): %v", tt.api, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("metricsURL(%q) mismatch (-want +got):\n%s", tt.api, diff)
			}
		})
	}
}

func TestLower(t *testing.T) {
	t.Parallel()
	a := MemoryReading{RSSBytes: 100, HeapInuseBytes: 50, StackInuseBytes: 8, Goroutines: 3}
	b := MemoryReading{RSSBytes: 90, HeapInuseBytes: 60, StackInuseBytes: 8, Goroutines: 2}
	want := MemoryReading{RSSBytes: 90, HeapInuseBytes: 50, StackInuseBytes: 8, Goroutines: 2}
	for _, tt := range []struct {
		name string
		x, y MemoryReading
	}{{"a then b", a, b}, {"b then a", b, a}} {
		if diff := cmp.Diff(want, lower(tt.x, tt.y)); diff != "" {
			t.Errorf("%s: lower mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestNewMemoryPart(t *testing.T) {
	t.Parallel()
	before := MemoryReading{RSSBytes: 10 << 20, HeapInuseBytes: 4 << 20, StackInuseBytes: 1 << 20, Goroutines: 10}
	tests := []struct {
		name   string
		items  int
		after  MemoryReading
		target int
		want   MemoryPart
	}{
		{
			name:   "within target",
			items:  1000,
			after:  MemoryReading{RSSBytes: 10<<20 + 1_500_000, HeapInuseBytes: 4<<20 + 1_000_000, StackInuseBytes: 1 << 20, Goroutines: 10},
			target: 2048,
			want:   MemoryPart{RSSBytesPerItem: 1500, HeapBytesPerItem: 1000, Met: true},
		},
		{
			name:   "rss over target",
			items:  1000,
			after:  MemoryReading{RSSBytes: 10<<20 + 3_000_000, HeapInuseBytes: 4<<20 + 1_000_000, StackInuseBytes: 1 << 20, Goroutines: 10},
			target: 2048,
			want:   MemoryPart{RSSBytesPerItem: 3000, HeapBytesPerItem: 1000},
		},
		{
			name:   "heap and stack over target do not decide",
			items:  10,
			after:  MemoryReading{RSSBytes: 10<<20 + 200_000, HeapInuseBytes: 4<<20 + 150_000, StackInuseBytes: 1<<20 + 100_000, Goroutines: 30},
			target: 24576,
			want:   MemoryPart{RSSBytesPerItem: 20000, HeapBytesPerItem: 15000, StackBytesPerItem: 10000, GoroutinesPerItem: 2, Met: true},
		},
		{
			name:   "memory returned counts as negative",
			items:  4,
			after:  MemoryReading{RSSBytes: 10<<20 - 400, HeapInuseBytes: 4 << 20, StackInuseBytes: 1 << 20, Goroutines: 10},
			target: 2048,
			want:   MemoryPart{RSSBytesPerItem: -100, Met: true},
		},
		{
			name:   "no items",
			after:  before,
			target: 2048,
			want:   MemoryPart{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := newMemoryPart(tt.items, 1, 1500*time.Millisecond, before, tt.after, tt.target)
			want := tt.want
			want.Items, want.Limits, want.SetupSeconds = tt.items, 1, 1.5
			want.Before, want.After, want.TargetBytes = before, tt.after, tt.target
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("newMemoryPart mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSlowdown(t *testing.T) {
	t.Parallel()
	step := func(held int, pps float64) ScaleStep {
		return ScaleStep{Held: held, Throughput: Throughput{PairsPerSecond: pps}}
	}
	tests := []struct {
		name  string
		steps []ScaleStep
		want  float64
	}{
		{name: "no steps", steps: nil, want: 0},
		{name: "one step", steps: []ScaleStep{step(10, 100)}, want: 0},
		{name: "flat", steps: []ScaleStep{step(10, 100), step(100000, 100)}, want: 1},
		{name: "slower when large", steps: []ScaleStep{step(10, 150), step(100000, 100)}, want: 1.5},
		{name: "order given does not matter", steps: []ScaleStep{step(100000, 100), step(10, 120)}, want: 1.2},
		{name: "middle sizes ignored", steps: []ScaleStep{step(10, 200), step(1000, 1), step(100000, 100)}, want: 2},
		{name: "large served nothing", steps: []ScaleStep{step(10, 200), step(100000, 0)}, want: 0},
		{name: "same size twice", steps: []ScaleStep{step(10, 200), step(10, 100)}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, slowdown(tt.steps), cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("slowdown mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
