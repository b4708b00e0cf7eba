package bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// at is a time or a duration of n milliseconds.
func at(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// holds builds holds from [granted, released] pairs in milliseconds.
func holds(pairs ...[2]float64) []hold {
	hs := make([]hold, len(pairs))
	for i, p := range pairs {
		hs[i] = hold{granted: at(p[0]), released: at(p[1])}
	}
	return hs
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = at(float64(i + 1))
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{name: "no values", sorted: nil, p: 50, want: 0},
		{name: "one value p50", sorted: []time.Duration{at(5)}, p: 50, want: at(5)},
		{name: "one value p99", sorted: []time.Duration{at(5)}, p: 99, want: at(5)},
		{name: "four values p25", sorted: []time.Duration{at(1), at(2), at(3), at(4)}, p: 25, want: at(1)},
		{name: "four values p50 is the lower middle", sorted: []time.Duration{at(1), at(2), at(3), at(4)}, p: 50, want: at(2)},
		{name: "four values p51 rounds up", sorted: []time.Duration{at(1), at(2), at(3), at(4)}, p: 51, want: at(3)},
		{name: "four values p99 is the top", sorted: []time.Duration{at(1), at(2), at(3), at(4)}, p: 99, want: at(4)},
		{name: "p100 is the maximum", sorted: []time.Duration{at(1), at(2), at(9)}, p: 100, want: at(9)},
		{name: "p0 is the minimum", sorted: []time.Duration{at(1), at(2), at(9)}, p: 0, want: at(1)},
		{name: "hundred p50", sorted: hundred, p: 50, want: at(50)},
		{name: "hundred p99", sorted: hundred, p: 99, want: at(99)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := percentile(tt.sorted, tt.p)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("percentile(%v, %v) mismatch (-want +got):\n%s", tt.sorted, tt.p, diff)
			}
		})
	}
}

func TestJain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		counts []int
		want   float64
	}{
		{name: "no workers", counts: nil, want: 0},
		{name: "nothing granted", counts: []int{0, 0, 0}, want: 0},
		{name: "equal", counts: []int{5, 5, 5}, want: 1},
		{name: "one worker", counts: []int{7}, want: 1},
		{name: "one has everything", counts: []int{4, 0, 0, 0}, want: 0.25},
		{name: "one and two", counts: []int{1, 2}, want: 0.9},
		{name: "two of four starve", counts: []int{10, 10, 0, 0}, want: 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := jain(tt.counts)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("jain(%v) mismatch (-want +got):\n%s", tt.counts, diff)
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		holds []hold
		want  int
	}{
		{name: "no holds", holds: nil, want: 0},
		{name: "one after another", holds: holds([2]float64{0, 10}, [2]float64{11, 20}, [2]float64{21, 30}), want: 0},
		{name: "grant at the release instant", holds: holds([2]float64{0, 10}, [2]float64{10, 20}), want: 0},
		{name: "grant inside a hold", holds: holds([2]float64{0, 10}, [2]float64{5, 8}), want: 1},
		{name: "unsorted input", holds: holds([2]float64{20, 30}, [2]float64{0, 10}, [2]float64{5, 25}), want: 2},
		{name: "long hold covers later ones", holds: holds([2]float64{0, 100}, [2]float64{10, 20}, [2]float64{30, 40}, [2]float64{101, 110}), want: 2},
		{name: "simultaneous grants", holds: holds([2]float64{0, 10}, [2]float64{0, 10}), want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := overlaps(tt.holds)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("overlaps mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFencingRegressions(t *testing.T) {
	t.Parallel()
	withTokens := func(tokens ...int64) []hold {
		hs := make([]hold, len(tokens))
		for i, tok := range tokens {
			hs[i] = hold{granted: at(float64(10 * i)), released: at(float64(10*i + 5)), token: tok}
		}
		return hs
	}
	tests := []struct {
		name  string
		holds []hold
		want  int
	}{
		{name: "growing", holds: withTokens(1, 2, 7), want: 0},
		{name: "one step back", holds: withTokens(1, 3, 2), want: 1},
		{name: "repeated token", holds: withTokens(4, 4), want: 1},
		{name: "no tokens", holds: withTokens(0, 0, 0), want: 0},
		{name: "tokenless grant skipped", holds: withTokens(5, 0, 6), want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fencingRegressions(tt.holds)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("fencingRegressions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdleGaps(t *testing.T) {
	t.Parallel()
	three := func() []hold { return holds([2]float64{25, 30}, [2]float64{0, 10}, [2]float64{12, 20}) }
	tests := []struct {
		name   string
		holds  []hold
		window window
		want   []time.Duration
	}{
		{name: "no holds", holds: nil, window: window{0, at(100)}, want: nil},
		{name: "one hold has no gap", holds: holds([2]float64{0, 10}), window: window{0, at(100)}, want: nil},
		{name: "unsorted input, sorted gaps", holds: three(), window: window{0, at(100)}, want: []time.Duration{at(2), at(5)}},
		{name: "grants before the window skipped", holds: three(), window: window{at(20), at(100)}, want: []time.Duration{at(5)}},
		{name: "grants after the window skipped", holds: three(), window: window{0, at(25)}, want: []time.Duration{at(2)}},
		{name: "overlap gives a negative gap", holds: holds([2]float64{0, 10}, [2]float64{5, 8}), window: window{0, at(100)}, want: []time.Duration{at(-5)}},
		{name: "gap measured from release sent", holds: holds([2]float64{0, 1}, [2]float64{1.25, 3}), window: window{0, at(100)}, want: []time.Duration{at(0.25)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := idleGaps(tt.holds, tt.window)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("idleGaps mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFIFOFraction(t *testing.T) {
	t.Parallel()
	// grant is a granted attempt: sent, received, release sent.
	grant := func(worker int, sent, done, released float64) attempt {
		return attempt{worker: worker, sent: at(sent), done: at(done), released: at(released), granted: true}
	}
	// refused is an attempt that waited from sent to done and was refused.
	refused := func(worker int, sent, done float64) attempt {
		return attempt{worker: worker, sent: at(sent), done: at(done)}
	}
	all := window{0, at(1000)}
	tests := []struct {
		name     string
		attempts []attempt
		window   window
		want     float64
	}{
		{name: "nothing granted", attempts: []attempt{refused(0, 0, 30)}, window: all, want: 0},
		{
			name: "served in arrival order",
			attempts: []attempt{
				grant(0, 0, 0, 10), grant(1, 1, 11, 20), grant(2, 2, 21, 30),
				grant(0, 10.5, 31, 40), grant(1, 20.5, 41, 50),
			},
			window: all, want: 1,
		},
		{
			name: "a later arrival jumps the queue",
			attempts: []attempt{
				grant(0, 0, 0, 10), grant(1, 1, 21, 30), grant(2, 2, 11, 20),
			},
			window: all, want: 2.0 / 3,
		},
		{
			name: "a refused waiter was passed over",
			attempts: []attempt{
				grant(0, 0, 0, 10), refused(1, 1, 40), grant(2, 2, 11, 20),
			},
			window: all, want: 0.5,
		},
		{
			name: "requests sent after the release race fairly",
			attempts: []attempt{
				grant(0, 0, 0, 10), grant(1, 11, 12, 20), grant(2, 10.5, 21, 30),
			},
			window: all, want: 1,
		},
		{
			name: "only grants in the window count",
			attempts: []attempt{
				grant(0, 0, 0, 10), grant(1, 1, 21, 30), grant(2, 2, 11, 20),
			},
			window: window{at(15), at(1000)}, want: 1,
		},
		{
			name:     "empty window",
			attempts: []attempt{grant(0, 0, 0, 10)},
			window:   window{at(500), at(1000)}, want: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fifoFraction(tt.attempts, tt.window)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("fifoFraction mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResultString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		result Result
		want   string
	}{
		{
			name: "throughput",
			result: Result{
				Workload: WorkloadThroughput, Workers: 32,
				Throughput: &Throughput{Limits: 64, PairsPerSecond: 16234.4, AcquireP50MS: 1.62, AcquireP99MS: 4.1},
			},
			want: "throughput: 16234 pairs/s  acquire p50=1.62ms p99=4.10ms  workers=32 limits=64  errors=0 overlaps=0",
		},
		{
			name: "handoff",
			result: Result{
				Workload: WorkloadHandoff, Workers: 16,
				Handoff: &Handoff{
					HoldMS: 1, GrantsPerSecond: 812, GapP50MS: 0.21, GapP99MS: 0.74,
					WaitP99MS: 21.3, WaitMaxMS: 24, Jain: 0.999, FIFO: 1,
				},
			},
			want: "handoff: 812 grants/s  gap p50=0.21ms p99=0.74ms  wait p99=21.3ms max=24.0ms  jain=0.999 fifo=1.00  workers=16 hold=1ms  errors=0 overlaps=0",
		},
		{
			name: "failed checks are shown",
			result: Result{
				Workload: WorkloadHandoff, Workers: 2, Errors: 1, FirstError: "acquire: boom",
				Overlaps: 3, FencingRegressions: 2, LeakedSlots: 1,
				Handoff: &Handoff{HoldMS: 0.5},
			},
			want: `handoff: 0 grants/s  gap p50=0.00ms p99=0.00ms  wait p99=0.0ms max=0.0ms  jain=0.000 fifo=0.00  workers=2 hold=0.5ms  errors=1 overlaps=3 fencing_regressions=2 leaked=1  first_error="acquire: boom"`,
		},
		{
			name: "memory",
			result: Result{
				Workload: WorkloadMemory, Workers: 32,
				Memory: &Memory{
					PerLease: newMemoryPart(100000, 1000, 12300*time.Millisecond,
						MemoryReading{RSSBytes: 30 << 20, HeapInuseBytes: 10 << 20},
						MemoryReading{RSSBytes: 30<<20 + 150_000_000, HeapInuseBytes: 10<<20 + 90_000_000}, TargetBytesPerLease),
					PerWaiter: newMemoryPart(10000, 1, 8100*time.Millisecond,
						MemoryReading{RSSBytes: 200 << 20, HeapInuseBytes: 100 << 20, StackInuseBytes: 1 << 20, Goroutines: 10},
						MemoryReading{RSSBytes: 200<<20 + 300_000_000, HeapInuseBytes: 100<<20 + 100_000_000, StackInuseBytes: 1<<20 + 81_920_000, Goroutines: 20010},
						TargetBytesPerWaiter),
				},
			},
			want: "memory:  per held lease rss=1500B heap=900B (rss +143.1MiB heap +85.8MiB; target ≤2048B ok) (100000 leases on 1000 limits, set up in 12.3s)" +
				"  per waiting request rss=30000B heap=10000B (rss +286.1MiB heap +95.4MiB; target ≤24576B MISSED) stack=8192B goroutines=2.00 (10000 waiters, each on its own connection, set up in 8.1s)" +
				"  workers=32  errors=0 overlaps=0",
		},
		{
			name: "scale",
			result: Result{
				Workload: WorkloadScale, Workers: 32,
				Scale: &Scale{
					LoadLimits: 64, Slowdown: 1.25,
					Steps: []ScaleStep{
						{Held: 10, SetupSeconds: 0.01, Throughput: Throughput{PairsPerSecond: 15000, AcquireP50MS: 1.5, AcquireP99MS: 6}},
						{Held: 100000, SetupSeconds: 9.5, Throughput: Throughput{PairsPerSecond: 12000, AcquireP50MS: 2, AcquireP99MS: 8}},
					},
				},
			},
			want: "scale:  10 held: 15000 pairs/s p50=1.50ms p99=6.00ms (set up in 0.0s)  100000 held: 12000 pairs/s p50=2.00ms p99=8.00ms (set up in 9.5s)" +
				"  small/large=1.25 (target ≤1.3 ok)  workers=32 limits=64  errors=0 overlaps=0",
		},
		{
			name: "baseline",
			result: Result{Workload: WorkloadBaseline, Workers: 32,
				Baseline: &Baseline{RequestsPerSecond: 41234.4, RequestP50MS: 0.7, RequestP99MS: 2.345, IdleP50MS: 0.306, IdleP99MS: 3.2, FsyncP50MS: 0.171, FsyncP99MS: 0.9}},
			want: "baseline: 41234 requests/s  p50=0.70ms p99=2.35ms  workers=32 (bare net/http JSON round trip on this machine)  idle round trip p50=0.31ms p99=3.20ms  fsync p50=0.17ms p99=0.90ms (this disk, 8 KiB)  errors=0",
		},
		{
			name: "baseline with errors",
			result: Result{Workload: WorkloadBaseline, Workers: 2, Errors: 3, FirstError: "acquire: EOF",
				Baseline: &Baseline{RequestsPerSecond: 10}},
			want: `baseline: 10 requests/s  p50=0.00ms p99=0.00ms  workers=2 (bare net/http JSON round trip on this machine)  idle round trip p50=0.00ms p99=0.00ms  fsync p50=0.00ms p99=0.00ms (this disk, 8 KiB)  errors=3  first_error="acquire: EOF"`,
		},
		{
			name: "throughput alone",
			result: Result{Workload: WorkloadThroughput, Workers: 32,
				Throughput: &Throughput{Limits: 64, PairsPerSecond: 9080.2, AcquireP50MS: 1.654, AcquireP99MS: 5.4}},
			want: "throughput: 9080 pairs/s  acquire p50=1.65ms p99=5.40ms  workers=32 limits=64  errors=0 overlaps=0",
		},
		{
			name: "throughput that meets the target, with server CPU",
			result: Result{Workload: WorkloadThroughput, Workers: 32, ServerCPUMicrosPerPair: ptr(131.6),
				Throughput: &Throughput{Limits: 64, PairsPerSecond: 9080, AcquireP50MS: 1.65, AcquireP99MS: 5.4,
					PairsPerBareRequest: 9080.0 / 40000, TargetPairsPerBareRequest: TargetPairsPerBareRequest}},
			want: "throughput: 9080 pairs/s = 0.227 pairs per bare request (target ≥0.224 ok)  acquire p50=1.65ms p99=5.40ms  server_cpu=132µs/pair  workers=32 limits=64  errors=0 overlaps=0",
		},
		{
			name: "throughput that misses the target",
			result: Result{Workload: WorkloadThroughput, Workers: 32,
				Throughput: &Throughput{Limits: 64, PairsPerSecond: 4600, AcquireP50MS: 3, AcquireP99MS: 9,
					PairsPerBareRequest: 4600.0 / 30000, TargetPairsPerBareRequest: TargetPairsPerBareRequest}},
			want: "throughput: 4600 pairs/s = 0.153 pairs per bare request (target ≥0.224 MISSED)  acquire p50=3.00ms p99=9.00ms  workers=32 limits=64  errors=0 overlaps=0",
		},
		{
			name: "handoff with server CPU",
			result: Result{Workload: WorkloadHandoff, Workers: 16, ServerCPUMicrosPerPair: ptr(88.0),
				Handoff: &Handoff{HoldMS: 1, GrantsPerSecond: 680, GapP50MS: 0.46, GapP99MS: 0.95, WaitP99MS: 27.7, WaitMaxMS: 29.2, Jain: 1, FIFO: 1}},
			want: "handoff: 680 grants/s  gap p50=0.46ms p99=0.95ms  wait p99=27.7ms max=29.2ms  jain=1.000 fifo=1.00  server_cpu=88µs/pair  workers=16 hold=1ms  errors=0 overlaps=0",
		},
		{
			name: "handoff beside the idle round trip",
			result: Result{Workload: WorkloadHandoff, Workers: 16,
				Handoff: &Handoff{HoldMS: 1, GrantsPerSecond: 420, GapP50MS: 0.9, GapP99MS: 5.3, WaitP99MS: 58, WaitMaxMS: 62, Jain: 1, FIFO: 1, IdleRoundTripP99MS: 2.4}},
			want: "handoff: 420 grants/s  gap p50=0.90ms p99=5.30ms (idle round trip p99=2.40ms)  wait p99=58.0ms max=62.0ms  jain=1.000 fifo=1.00  workers=16 hold=1ms  errors=0 overlaps=0",
		},
		{
			name:   "scale without a ratio",
			result: Result{Workload: WorkloadScale, Workers: 1, Scale: &Scale{LoadLimits: 2}},
			want:   "scale:  small/large=0.00 (target ≤1.3 n/a)  workers=1 limits=2  errors=0 overlaps=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, tt.result.String()); diff != "" {
				t.Errorf("String mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendAcquireBody(t *testing.T) {
	t.Parallel()
	got := string(appendAcquireBody([]byte("junk"), quote(`a"b`), quote("bench-w7")))
	want := `junk{"names":["a\"b"],"slots":1,"lease_duration":60,"timeout_seconds":30,"holder":{"type":"process","id":"bench-w7"}}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appendAcquireBody mismatch (-want +got):\n%s", diff)
	}
}

func TestAppendLeaseBody(t *testing.T) {
	t.Parallel()
	got := string(appendLeaseBody(nil, quote("m:1"), quote("bench-w3"), 3600, 0))
	want := `{"names":["m:1"],"slots":1,"lease_duration":3600,"timeout_seconds":0,"holder":{"type":"process","id":"bench-w3"}}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appendLeaseBody mismatch (-want +got):\n%s", diff)
	}
}
