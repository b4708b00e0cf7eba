package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workload names, as Config.Workload takes them.
const (
	WorkloadBaseline   = "baseline"
	WorkloadThroughput = "throughput"
	WorkloadHandoff    = "handoff"
	WorkloadMemory     = "memory"
	WorkloadScale      = "scale"
	// WorkloadAll runs baseline, throughput and handoff; memory and scale
	// take minutes and are run only by name.
	WorkloadAll = "all"
)

// TargetPairsPerBareRequest is the design's throughput target stated
// relative to the machine it was set on: 15,000 acquire+release pairs per
// second on a 2-core machine where a bare Go HTTP/1.1 JSON round trip tops
// out near 67,000 requests per second (the design's Performance section).
// Machines differ too much for pairs per second alone to say whether the
// target is met; pairs per second over the baseline's requests per second
// on the same machine is comparable to this.
const TargetPairsPerBareRequest = 15_000.0 / 67_000.0

// The design's targets for the memory and scale workloads.
const (
	// TargetBytesPerLease is the most memory a held lease may cost.
	TargetBytesPerLease = 2 << 10
	// TargetBytesPerWaiter is the most memory a waiting request may cost,
	// its connection included.
	TargetBytesPerWaiter = 24 << 10
	// TargetSlowdown is the most that the acquire+release pairs per second
	// may drop, as a ratio, from the smallest state to the largest.
	TargetSlowdown = 1.3
)

// Config says which workloads Run runs, against which server, and how hard.
type Config struct {
	// URL is the API base URL, such as http://127.0.0.1:4200/api.
	URL string
	// APIKey, if set, is sent as a bearer token with every request, to a
	// server with --auth keys (it needs read, and acquire and manage on
	// the bench's limits, or admin).
	APIKey string
	// Workload is WorkloadBaseline, WorkloadThroughput, WorkloadHandoff,
	// WorkloadMemory, WorkloadScale or WorkloadAll.
	Workload string
	// MetricsURL is the server's Prometheus metrics, which the memory
	// workload reads for the server's memory and the throughput and handoff
	// workloads for its CPU time; empty puts /metrics in place of the /api
	// that ends URL.
	MetricsURL string
	// Executable is the program the baseline workload starts as its bare
	// server, with BareServerEnv set in its environment: allot-bench itself,
	// whose main calls ServeBare when it finds that variable set. The
	// baseline workload needs it.
	Executable string
	// FsyncDir is where the baseline workload times the disk's fsyncs;
	// empty is the system's temporary directory. Point it at the disk that
	// holds the server's data directory.
	FsyncDir string
	// ThroughputWorkers is how many workers the throughput workload runs,
	// and the baseline workload too; also how many requests at a time the
	// memory and scale workloads send to build up their state, and how
	// many workers the scale workload's throughput loop runs.
	ThroughputWorkers int
	// HandoffWorkers is how many workers contend for the one slot of the
	// handoff workload.
	HandoffWorkers int
	// Limits is how many limits of one slot the throughput workload spreads
	// its workers over.
	Limits int
	// Duration is how long each workload is measured.
	Duration time.Duration
	// Warmup is how long each workload runs before it is measured.
	Warmup time.Duration
	// Hold is how long a handoff worker holds the slot before releasing it.
	Hold time.Duration
	// Leases is how many leases the memory workload holds to measure the
	// memory of one, over limits of 100 slots; 0 skips that part.
	Leases int
	// Waiters is how many requests, each on its own connection, the memory
	// workload keeps waiting in line to measure the memory of one; 0 skips
	// that part.
	Waiters int
	// ScaleSizes are the numbers of leases, each on a limit of its own, that
	// the scale workload holds while it measures throughput.
	ScaleSizes []int
	// Settle is how long the memory workload lets the server settle before
	// reading its memory, and how far apart its two readings are.
	Settle time.Duration
	// Prefix starts the name of every limit the workloads create; empty
	// picks "bench-" and a random suffix.
	Prefix string
	// Cleanup deletes the limits after each workload.
	Cleanup bool
	// JSON writes each result as one JSON object per line instead of a
	// line for people.
	JSON bool
	// NetHTTP sends the workers' acquires and releases, and the baseline's
	// requests, through HTTPClient (Go's net/http client) instead of the
	// lean raw client, which costs the shared machine far less CPU per
	// request.
	NetHTTP bool
	// System names the server in the results (Result.System), when the
	// compare mode measures several.
	System string
	// HTTPClient sends the requests; nil uses a client tuned for the number
	// of workers (HTTP/1.1, keep-alive, one idle connection per worker).
	HTTPClient *http.Client
}

// DefaultConfig returns the settings that the design's performance targets
// are stated for: 32 workers over 64 limits (and 32 sending bare requests
// for the baseline), and 16 workers handing one slot around with 1 ms
// holds, each measured for 5 s after 1 s of warm-up; the memory of 100,000
// held leases and 10,000 waiting requests; throughput with 10 and with
// 100,000 leases held.
func DefaultConfig() Config {
	return Config{
		URL:               "http://127.0.0.1:4200/api",
		Workload:          WorkloadAll,
		ThroughputWorkers: 32,
		HandoffWorkers:    16,
		Limits:            64,
		Duration:          5 * time.Second,
		Warmup:            time.Second,
		Hold:              time.Millisecond,
		Leases:            100_000,
		Waiters:           10_000,
		ScaleSizes:        []int{10, 100_000},
		Settle:            time.Second,
		Cleanup:           true,
	}
}

// Validate reports what is wrong with cfg, if anything.
func (cfg Config) Validate() error {
	_, err := cfg.workloads()
	return err
}

// workloads checks cfg and returns the names of the workloads it selects.
func (cfg Config) workloads() ([]string, error) {
	var names []string
	switch cfg.Workload {
	case WorkloadBaseline, WorkloadThroughput, WorkloadHandoff, WorkloadMemory, WorkloadScale:
		names = []string{cfg.Workload}
	case WorkloadAll:
		names = []string{WorkloadBaseline, WorkloadThroughput, WorkloadHandoff}
	default:
		return nil, fmt.Errorf("unknown workload %q (want %s, %s, %s, %s, %s or %s)",
			cfg.Workload, WorkloadBaseline, WorkloadThroughput, WorkloadHandoff, WorkloadMemory, WorkloadScale, WorkloadAll)
	}
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("no server URL"))
	}
	if cfg.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %v is not positive", cfg.Duration))
	}
	if cfg.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warm-up %v is negative", cfg.Warmup))
	}
	for _, n := range names {
		switch n {
		case WorkloadBaseline:
			if cfg.ThroughputWorkers <= 0 {
				errs = append(errs, fmt.Errorf("baseline workers %d is not positive", cfg.ThroughputWorkers))
			}
			if cfg.Executable == "" {
				errs = append(errs, errors.New("no executable to start the baseline's bare server from"))
			}
		case WorkloadThroughput:
			if cfg.ThroughputWorkers <= 0 {
				errs = append(errs, fmt.Errorf("throughput workers %d is not positive", cfg.ThroughputWorkers))
			}
			if cfg.Limits <= 0 {
				errs = append(errs, fmt.Errorf("limits %d is not positive", cfg.Limits))
			}
		case WorkloadHandoff:
			if cfg.HandoffWorkers <= 0 {
				errs = append(errs, fmt.Errorf("handoff workers %d is not positive", cfg.HandoffWorkers))
			}
			if cfg.Hold < 0 {
				errs = append(errs, fmt.Errorf("hold %v is negative", cfg.Hold))
			}
		case WorkloadMemory:
			if cfg.ThroughputWorkers <= 0 {
				errs = append(errs, fmt.Errorf("workers %d is not positive", cfg.ThroughputWorkers))
			}
			if cfg.Leases < 0 || cfg.Waiters < 0 || cfg.Leases+cfg.Waiters == 0 {
				errs = append(errs, fmt.Errorf("leases %d and waiters %d: want neither negative and one positive", cfg.Leases, cfg.Waiters))
			}
			if cfg.Settle < 0 {
				errs = append(errs, fmt.Errorf("settle %v is negative", cfg.Settle))
			}
			if cfg.MetricsURL == "" && cfg.URL != "" {
				if _, err := metricsURL(cfg.URL); err != nil {
					errs = append(errs, err)
				}
			}
		case WorkloadScale:
			if cfg.ThroughputWorkers <= 0 {
				errs = append(errs, fmt.Errorf("workers %d is not positive", cfg.ThroughputWorkers))
			}
			if cfg.Limits <= 0 {
				errs = append(errs, fmt.Errorf("limits %d is not positive", cfg.Limits))
			}
			if len(cfg.ScaleSizes) == 0 {
				errs = append(errs, errors.New("no scale sizes"))
			}
			for _, s := range cfg.ScaleSizes {
				if s < 0 {
					errs = append(errs, fmt.Errorf("scale size %d is negative", s))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	return names, nil
}

// Result is what one workload measured. Exactly one of Baseline,
// Throughput, Handoff, Memory and Scale is set, according to Workload; as
// JSON their fields sit beside the common ones in one flat object, so no
// two of them may share a JSON name.
type Result struct {
	// Workload is the workload's name.
	Workload string `json:"workload"`
	// System names what was measured when it is not the allot server at
	// Config.URL: a peer (Peer.Name), or an allot server the compare mode
	// was given by name.
	System string `json:"system,omitempty"`
	// Workers is how many workers ran.
	Workers int `json:"workers"`
	// Seconds is the length of the measured window; for scale, the sum of
	// its windows; for memory, the whole run, set-up and clean-up
	// included.
	Seconds float64 `json:"seconds"`
	// Errors counts the failed requests of the whole run, warm-up
	// included: refusals after the wait timeout, unexpected statuses,
	// transport errors, and failures to check or delete the limits.
	Errors int `json:"errors"`
	// FirstError describes the first of them.
	FirstError string `json:"first_error,omitempty"`
	// Overlaps counts grants received while another client still held the
	// same one-slot limit; a correct server scores 0.
	Overlaps int `json:"overlaps"`
	// FencingRegressions counts grants whose fencing token did not exceed
	// the previous grant's on the same limit; a correct server scores 0.
	FencingRegressions int `json:"fencing_regressions"`
	// LeakedSlots counts the slots still held once every worker had
	// released what it held; a correct server scores 0.
	LeakedSlots int `json:"leaked_slots"`
	// ServerCPUMicrosPerPair is the server's CPU time (user and system, as
	// its /metrics reports process_cpu_seconds_total) from the start of
	// the measured window to its end, over the acquire+release pairs
	// measured in it (throughput's pairs, handoff's grants), in
	// microseconds. It is nil when not measured: for the other workloads,
	// and when /metrics could not be read.
	ServerCPUMicrosPerPair *float64 `json:"server_cpu_us_per_pair,omitempty"`

	*Baseline
	*Throughput
	*Handoff
	*Memory
	*Scale
}

// count adds failures to r's errors.
func (r *Result) count(t tally) {
	r.Errors += t.n
	if r.FirstError == "" && t.first != nil {
		r.FirstError = t.first.Error()
	}
}

// Throughput is what the throughput workload measured.
type Throughput struct {
	// Limits is how many one-slot limits the workers spread over.
	Limits int `json:"limits"`
	// Pairs counts the acquire+release pairs whose grant was received in
	// the measured window and whose release succeeded.
	Pairs int `json:"pairs"`
	// PairsPerSecond is Pairs over the window's length.
	PairsPerSecond float64 `json:"pairs_per_second"`
	// AcquireP50MS and AcquireP99MS are percentiles of how long a granted
	// acquire took, waiting in line included, in milliseconds.
	AcquireP50MS float64 `json:"acquire_p50_ms"`
	AcquireP99MS float64 `json:"acquire_p99_ms"`
	// PairsPerBareRequest is PairsPerSecond over the requests per second
	// of the baseline run before it on the same machine, and
	// TargetPairsPerBareRequest the design's target for it; both are 0 when
	// no baseline ran.
	PairsPerBareRequest       float64 `json:"pairs_per_bare_request,omitempty"`
	TargetPairsPerBareRequest float64 `json:"target_pairs_per_bare_request,omitempty"`
}

// compareTo sets t's figures relative to the baseline b; a baseline that
// served nothing leaves them unset.
func (t *Throughput) compareTo(b *Baseline) {
	if b == nil || b.RequestsPerSecond <= 0 {
		return
	}
	t.PairsPerBareRequest = t.PairsPerSecond / b.RequestsPerSecond
	t.TargetPairsPerBareRequest = TargetPairsPerBareRequest
}

// Handoff is what the handoff workload measured.
type Handoff struct {
	// HoldMS is how long each grant was held, in milliseconds.
	HoldMS float64 `json:"hold_ms"`
	// Grants counts the grants received in the measured window.
	Grants int `json:"grants"`
	// GrantsPerSecond is Grants over the window's length.
	GrantsPerSecond float64 `json:"grants_per_second"`
	// GapP50MS and GapP99MS are percentiles of the slot's idle time, from
	// the previous holder starting its release to the next grant being
	// received, in milliseconds.
	GapP50MS float64 `json:"gap_p50_ms"`
	GapP99MS float64 `json:"gap_p99_ms"`
	// WaitP99MS and WaitMaxMS describe how long an acquire waited for its
	// grant, in milliseconds.
	WaitP99MS float64 `json:"wait_p99_ms"`
	WaitMaxMS float64 `json:"wait_max_ms"`
	// Jain is Jain's fairness index over the workers' grant counts: 1 when
	// every worker was granted equally often.
	Jain float64 `json:"jain"`
	// FIFO is the fraction of grants that went to the worker that had
	// waited longest; about 1 for a first-in-first-out server.
	FIFO float64 `json:"fifo"`
	// IdleRoundTripP99MS is the baseline's idle round trip p99 from the
	// same run, the floor under GapP99MS on this machine; 0 when no
	// baseline ran.
	IdleRoundTripP99MS float64 `json:"idle_round_trip_p99_ms,omitempty"`
}

// compareTo records the baseline b's floor under h's gap.
func (h *Handoff) compareTo(b *Baseline) {
	if b != nil {
		h.IdleRoundTripP99MS = b.IdleP99MS
	}
}

// String formats r as the one line the benchmark prints for people.
func (r Result) String() string {
	var b strings.Builder
	if r.System != "" {
		fmt.Fprintf(&b, "[%s] ", r.System)
	}
	switch {
	case r.Baseline != nil:
		bl := r.Baseline
		fmt.Fprintf(&b, "%s: %.0f requests/s  p50=%.2fms p99=%.2fms  workers=%d (bare net/http JSON round trip on this machine)  idle round trip p50=%.2fms p99=%.2fms  fsync p50=%.2fms p99=%.2fms (this disk, 8 KiB)  errors=%d",
			r.Workload, bl.RequestsPerSecond, bl.RequestP50MS, bl.RequestP99MS, r.Workers, bl.IdleP50MS, bl.IdleP99MS, bl.FsyncP50MS, bl.FsyncP99MS, r.Errors)
		if r.FirstError != "" {
			fmt.Fprintf(&b, "  first_error=%q", r.FirstError)
		}
		return b.String()
	case r.Throughput != nil:
		t := r.Throughput
		fmt.Fprintf(&b, "%s: %.0f pairs/s", r.Workload, t.PairsPerSecond)
		if t.TargetPairsPerBareRequest > 0 {
			verdict := "ok"
			if t.PairsPerBareRequest < t.TargetPairsPerBareRequest {
				verdict = "MISSED"
			}
			fmt.Fprintf(&b, " = %.3f pairs per bare request (target ≥%.3f %s)",
				t.PairsPerBareRequest, t.TargetPairsPerBareRequest, verdict)
		}
		fmt.Fprintf(&b, "  acquire p50=%.2fms p99=%.2fms%s  workers=%d limits=%d",
			t.AcquireP50MS, t.AcquireP99MS, r.serverCPU(), r.Workers, t.Limits)
	case r.Handoff != nil:
		h := r.Handoff
		fmt.Fprintf(&b, "%s: %.0f grants/s  gap p50=%.2fms p99=%.2fms", r.Workload, h.GrantsPerSecond, h.GapP50MS, h.GapP99MS)
		if h.IdleRoundTripP99MS > 0 {
			fmt.Fprintf(&b, " (idle round trip p99=%.2fms)", h.IdleRoundTripP99MS)
		}
		fmt.Fprintf(&b, "  wait p99=%.1fms max=%.1fms  jain=%.3f fifo=%.2f%s  workers=%d hold=%sms",
			h.WaitP99MS, h.WaitMaxMS, h.Jain, h.FIFO, r.serverCPU(), r.Workers, strconv.FormatFloat(h.HoldMS, 'g', -1, 64))
	case r.Memory != nil:
		fmt.Fprintf(&b, "%s:", r.Workload)
		if p := r.Memory.PerLease; p != nil {
			fmt.Fprintf(&b, "  per held lease %s (%d leases on %d limits, set up in %.1fs)",
				p.summary(), p.Items, p.Limits, p.SetupSeconds)
		}
		if p := r.Memory.PerWaiter; p != nil {
			fmt.Fprintf(&b, "  per waiting request %s stack=%.0fB goroutines=%.2f (%d waiters, each on its own connection, set up in %.1fs)",
				p.summary(), p.StackBytesPerItem, p.GoroutinesPerItem, p.Items, p.SetupSeconds)
		}
		fmt.Fprintf(&b, "  workers=%d", r.Workers)
	case r.Scale != nil:
		s := r.Scale
		fmt.Fprintf(&b, "%s:", r.Workload)
		for _, st := range s.Steps {
			fmt.Fprintf(&b, "  %d held: %.0f pairs/s p50=%.2fms p99=%.2fms (set up in %.1fs)",
				st.Held, st.PairsPerSecond, st.AcquireP50MS, st.AcquireP99MS, st.SetupSeconds)
		}
		verdict := "n/a"
		if s.Slowdown > 0 {
			verdict = "ok"
			if s.Slowdown > TargetSlowdown {
				verdict = "MISSED"
			}
		}
		fmt.Fprintf(&b, "  small/large=%.2f (target ≤%.1f %s)  workers=%d limits=%d",
			s.Slowdown, TargetSlowdown, verdict, r.Workers, s.LoadLimits)
	default:
		fmt.Fprintf(&b, "%s:", r.Workload)
	}
	fmt.Fprintf(&b, "  errors=%d overlaps=%d", r.Errors, r.Overlaps)
	if r.FencingRegressions > 0 {
		fmt.Fprintf(&b, " fencing_regressions=%d", r.FencingRegressions)
	}
	if r.LeakedSlots > 0 {
		fmt.Fprintf(&b, " leaked=%d", r.LeakedSlots)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first_error=%q", r.FirstError)
	}
	return b.String()
}

// serverCPU formats r's server CPU time per pair as a field of the line
// String prints, or returns "" if it was not measured.
func (r Result) serverCPU() string {
	if r.ServerCPUMicrosPerPair == nil {
		return ""
	}
	return fmt.Sprintf("  server_cpu=%.0fµs/pair", *r.ServerCPUMicrosPerPair)
}

// writeResult writes r to w: a line for people, or a JSON object if
// cfg.JSON.
func writeResult(w io.Writer, cfg Config, r Result) error {
	var err error
	if cfg.JSON {
		err = json.NewEncoder(w).Encode(r)
	} else {
		_, err = fmt.Fprintln(w, r)
	}
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// Run runs the workloads cfg selects, one after the other, against the
// server at cfg.URL, writing each result to w as soon as it is known (a line
// for people, or a JSON object per line if cfg.JSON). A workload that cannot
// set up its limits, or a cancelled ctx, ends the run with an error and the
// results so far; failed requests during a workload are counted in its
// Result instead. When the baseline runs before workloads that need the
// server, Run first checks that the server answers at all, so as not to
// spend the baseline's seconds on a run that cannot go on. A throughput
// result that follows a baseline result is compared to it.
func Run(ctx context.Context, cfg Config, w io.Writer) ([]Result, error) {
	names, err := cfg.workloads()
	if err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("bench-%08x", rand.Uint32())
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := newTransport(2*max(cfg.ThroughputWorkers, cfg.HandoffWorkers) + 4)
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr}
	}
	if cfg.APIKey != "" {
		hc = withBearer(hc, cfg.APIKey)
	}
	c := newClient(hc, cfg.URL)
	c.raw = !cfg.NetHTTP
	c.apiKey = cfg.APIKey
	if names[0] == WorkloadBaseline && len(names) > 1 {
		if err := c.reach(ctx, cfg.Prefix+"-t0"); err != nil {
			return nil, err
		}
	}

	var (
		results  []Result
		baseline *Baseline
	)
	for _, name := range names {
		var r Result
		switch name {
		case WorkloadBaseline:
			r, err = runBaseline(ctx, hc, cfg)
			baseline = r.Baseline
		case WorkloadThroughput:
			r, err = runThroughput(ctx, c, cfg)
			if err == nil {
				r.Throughput.compareTo(baseline)
			}
		case WorkloadHandoff:
			r, err = runHandoff(ctx, c, cfg)
			if err == nil {
				r.Handoff.compareTo(baseline)
			}
		case WorkloadMemory:
			r, err = runMemory(ctx, c, cfg)
		case WorkloadScale:
			r, err = runScale(ctx, c, cfg)
		}
		if err != nil {
			return results, fmt.Errorf("%s: %w", name, err)
		}
		r.System = cfg.System
		results = append(results, r)
		if err := writeResult(w, cfg, r); err != nil {
			return results, err
		}
	}
	return results, nil
}

// runThroughput runs the throughput workload: workers acquire one slot of a
// random limit, waiting in line if they must, and release it at once.
func runThroughput(ctx context.Context, c *client, cfg Config) (Result, error) {
	names := make([]string, cfg.Limits)
	for i := range names {
		names[i] = fmt.Sprintf("%s-t%d", cfg.Prefix, i)
	}
	o, err := runLoad(ctx, c, cfg, names, cfg.ThroughputWorkers, 0, cpuMetricsURL(cfg))
	if err != nil {
		return Result{}, err
	}
	r := o.result(WorkloadThroughput, cfg.ThroughputWorkers, len(names))
	r.Throughput = o.throughput(len(names))
	r.ServerCPUMicrosPerPair = o.cpuPer(r.Pairs)
	return r, nil
}

// throughput computes what the throughput workload reports from a load
// over nLimits limits.
func (o *outcome) throughput(nLimits int) *Throughput {
	var lat []time.Duration
	t := &Throughput{Limits: nLimits}
	for _, a := range o.attempts {
		if !a.granted || !o.window.contains(a.done) {
			continue
		}
		lat = append(lat, a.done-a.sent)
		if a.releasedOK {
			t.Pairs++
		}
	}
	slices.Sort(lat)
	t.PairsPerSecond = float64(t.Pairs) / (o.window.to - o.window.from).Seconds()
	t.AcquireP50MS = ms(percentile(lat, 50))
	t.AcquireP99MS = ms(percentile(lat, 99))
	return t
}

// handoff computes what the handoff workload reports from a load of
// workers on one limit over a window of seconds.
func (o *outcome) handoff(cfg Config, workers int, seconds float64) *Handoff {
	h := &Handoff{HoldMS: ms(cfg.Hold)}
	var holds []hold
	var waits []time.Duration
	counts := make([]int, workers)
	for _, a := range o.attempts {
		if !a.granted {
			continue
		}
		holds = append(holds, a.hold())
		if o.window.contains(a.done) {
			h.Grants++
			counts[a.worker]++
			waits = append(waits, a.done-a.sent)
		}
	}
	slices.Sort(waits)
	gaps := idleGaps(holds, o.window)
	h.GrantsPerSecond = float64(h.Grants) / seconds
	h.GapP50MS = ms(percentile(gaps, 50))
	h.GapP99MS = ms(percentile(gaps, 99))
	h.WaitP99MS = ms(percentile(waits, 99))
	h.WaitMaxMS = ms(percentile(waits, 100))
	h.Jain = jain(counts)
	h.FIFO = fifoFraction(o.attempts, o.window)
	return h
}

// runHandoff runs the handoff workload: workers contend for one slot of one
// limit, each holding it for cfg.Hold.
func runHandoff(ctx context.Context, c *client, cfg Config) (Result, error) {
	names := []string{cfg.Prefix + "-h"}
	o, err := runLoad(ctx, c, cfg, names, cfg.HandoffWorkers, cfg.Hold, cpuMetricsURL(cfg))
	if err != nil {
		return Result{}, err
	}
	r := o.result(WorkloadHandoff, cfg.HandoffWorkers, len(names))
	h := o.handoff(cfg, cfg.HandoffWorkers, r.Seconds)
	r.Handoff = h
	r.ServerCPUMicrosPerPair = o.cpuPer(h.Grants)
	return r, nil
}
