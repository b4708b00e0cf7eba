package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// leasesPerLimit is how many slots each limit of the memory workload's
	// per-lease part has, and so how many of its leases share a limit.
	leasesPerLimit = 100
	// waiterWaitSeconds is how long a waiting request of the memory
	// workload asks to wait in line: longer than it takes to open all of
	// them, read the server's memory and hand the slot down the line.
	waiterWaitSeconds = 120
	// waitersReadyTimeout bounds how long the memory workload waits for
	// every waiting request to be in line.
	waitersReadyTimeout = 90 * time.Second
	// waitersOpening bounds how many waiting requests are being opened
	// (dialled and sent) at once, so as not to overflow the server's
	// listen backlog.
	waitersOpening = 64
	// pollFirst and pollMost bound how long the memory workload waits
	// between two checks of how many requests wait in line: it starts at
	// pollFirst and doubles up to pollMost, since a read of a limit lists
	// every waiter, a megabyte of garbage for the server at 10,000 that the
	// memory readings would count.
	pollFirst = 100 * time.Millisecond
	pollMost  = time.Second
)

// Memory is what the memory workload measured: the server's memory growth
// per held lease and per waiting request, each from a reading of the idle
// server before the leases or requests were added to one after.
type Memory struct {
	// PerLease is the memory of a held lease, nil if not measured.
	PerLease *MemoryPart `json:"per_lease,omitempty"`
	// PerWaiter is the memory of a request waiting in line, its connection
	// and goroutines included, nil if not measured.
	PerWaiter *MemoryPart `json:"per_waiter,omitempty"`
}

// MemoryPart is the memory the server took for Items leases or waiting
// requests: the difference between its memory before they were added and
// while they were held, over Items. Each reading is the lower of two taken
// a settle apart after a settle. Nothing is forced (no garbage collection),
// so the heap figures include garbage not yet collected; and memory that
// the Go runtime had freed before the first reading but not yet returned to
// the system is reused without growing the RSS, so a part run after another
// on the same server can show too low an RSS figure.
type MemoryPart struct {
	// Items is how many leases were held or requests waited.
	Items int `json:"items"`
	// Limits is how many limits they were spread over.
	Limits int `json:"limits"`
	// SetupSeconds is how long adding them took.
	SetupSeconds float64 `json:"setup_seconds"`
	// Before and After are the readings the figures are computed from.
	Before MemoryReading `json:"before"`
	After  MemoryReading `json:"after"`
	// RSSBytesPerItem is the growth of the server's resident set over
	// Items.
	RSSBytesPerItem float64 `json:"rss_bytes_per_item"`
	// HeapBytesPerItem is the growth of the Go heap in use over Items.
	HeapBytesPerItem float64 `json:"heap_bytes_per_item"`
	// StackBytesPerItem is the growth of goroutine stacks over Items.
	StackBytesPerItem float64 `json:"stack_bytes_per_item"`
	// GoroutinesPerItem is the growth of the server's goroutines over
	// Items.
	GoroutinesPerItem float64 `json:"goroutines_per_item"`
	// TargetBytes is the design's target per item.
	TargetBytes int `json:"target_bytes"`
	// Met says whether the RSS figure, the memory the machine pays for, is
	// within TargetBytes. (The heap and stack figures can exceed it: Go
	// counts as in use memory that was allocated but never written, such
	// as the buffer of a response not yet sent, which takes no RAM.)
	Met bool `json:"met"`
}

// newMemoryPart computes a MemoryPart from two readings.
func newMemoryPart(items, limits int, setup time.Duration, before, after MemoryReading, target int) *MemoryPart {
	per := func(from, to int64) float64 {
		if items <= 0 {
			return 0
		}
		return float64(to-from) / float64(items)
	}
	p := &MemoryPart{
		Items:             items,
		Limits:            limits,
		SetupSeconds:      setup.Seconds(),
		Before:            before,
		After:             after,
		RSSBytesPerItem:   per(before.RSSBytes, after.RSSBytes),
		HeapBytesPerItem:  per(before.HeapInuseBytes, after.HeapInuseBytes),
		StackBytesPerItem: per(before.StackInuseBytes, after.StackInuseBytes),
		GoroutinesPerItem: per(before.Goroutines, after.Goroutines),
		TargetBytes:       target,
	}
	p.Met = items > 0 && p.RSSBytesPerItem <= float64(target)
	return p
}

// summary formats p's figures per item, the deltas they come from and the
// verdict.
func (p *MemoryPart) summary() string {
	verdict := "ok"
	if !p.Met {
		verdict = "MISSED"
	}
	return fmt.Sprintf("rss=%.0fB heap=%.0fB (rss %+.1fMiB heap %+.1fMiB; target ≤%dB %s)",
		p.RSSBytesPerItem, p.HeapBytesPerItem,
		mib(p.After.RSSBytes-p.Before.RSSBytes), mib(p.After.HeapInuseBytes-p.Before.HeapInuseBytes),
		p.TargetBytes, verdict)
}

// mib converts bytes to fractional mebibytes.
func mib(n int64) float64 { return float64(n) / (1 << 20) }

// runMemory runs the memory workload: the memory of cfg.Leases held leases,
// then of cfg.Waiters waiting requests.
func runMemory(ctx context.Context, c *client, cfg Config) (Result, error) {
	metrics := cfg.MetricsURL
	if metrics == "" {
		var err error
		if metrics, err = metricsURL(cfg.URL); err != nil {
			return Result{}, err
		}
	}
	start := time.Now()
	r := Result{Workload: WorkloadMemory, Workers: cfg.ThroughputWorkers, Memory: &Memory{}}
	if cfg.Leases > 0 {
		p, err := measureLeases(ctx, c, cfg, metrics, &r)
		if err != nil {
			return Result{}, fmt.Errorf("per lease: %w", err)
		}
		r.PerLease = p
	}
	if cfg.Waiters > 0 {
		p, err := measureWaiters(ctx, c, cfg, metrics, &r)
		if err != nil {
			return Result{}, fmt.Errorf("per waiter: %w", err)
		}
		r.PerWaiter = p
	}
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

// measureLeases holds cfg.Leases leases spread over limits of
// leasesPerLimit slots, made on first use from a template, and measures the
// server's memory before and while they are held. It releases them
// afterwards, checks that no slot is left held, and counts the failures of
// clean-up in r.
func measureLeases(ctx context.Context, c *client, cfg Config, metrics string, r *Result) (_ *MemoryPart, err error) {
	n := cfg.Leases
	names := make([]string, (n+leasesPerLimit-1)/leasesPerLimit)
	for i := range names {
		names[i] = fmt.Sprintf("%s-lease:%d", cfg.Prefix, i)
	}
	template := cfg.Prefix + "-lease:*"
	if err := c.ensureLimit(ctx, template, leasesPerLimit); err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	if cfg.Cleanup {
		defer func() {
			r.count(deleteEach(ctx, c, cfg.ThroughputWorkers, names))
			if derr := c.deleteLimit(context.WithoutCancel(ctx), template); derr != nil {
				r.count(tally{n: 1, first: derr})
			}
		}()
	}

	before, err := settledMemory(ctx, c.hc, metrics, cfg.Settle)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ids, err := holdEach(ctx, c, cfg.ThroughputWorkers, n, func(i int) string { return names[i%len(names)] })
	setup := time.Since(start)
	defer func() {
		r.count(releaseEach(ctx, c, cfg.ThroughputWorkers, ids))
		if err == nil {
			r.LeakedSlots += heldSlots(ctx, c, cfg.ThroughputWorkers, names, r)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	after, err := settledMemory(ctx, c.hc, metrics, cfg.Settle)
	if err != nil {
		return nil, err
	}
	return newMemoryPart(n, len(names), setup, before, after, TargetBytesPerLease), nil
}

// heldSlots returns how many slots of the limits called names are held,
// counting the failures to read them in r.
func heldSlots(ctx context.Context, c *client, workers int, names []string, r *Result) int {
	var held atomic.Int64
	errs := forEach(ctx, workers, len(names), false, func(_, i int) error {
		n, err := c.activeSlots(ctx, names[i])
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		held.Add(int64(n))
		return nil
	})
	r.count(errs)
	return int(held.Load())
}

// newWaiterTransport returns a transport that opens a connection of its own
// for every request and closes it after the answer.
func newWaiterTransport() *http.Transport {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
		Protocols:          &p,
	}
}

// measureWaiters holds the one slot of a limit, keeps cfg.Waiters requests
// for it waiting in line, each on a connection of its own, and measures the
// server's memory before and while they wait. Then it releases the slot,
// and each waiter releases it in turn once granted; the hand-offs are
// checked for safety in r.
func measureWaiters(ctx context.Context, c *client, cfg Config, metrics string, r *Result) (_ *MemoryPart, err error) {
	name := cfg.Prefix + "-wait"
	if err := c.ensureLimit(ctx, name, 1); err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	if cfg.Cleanup {
		defer func() {
			if derr := c.deleteLimit(context.WithoutCancel(ctx), name); derr != nil {
				r.count(tally{n: 1, first: derr})
			}
		}()
	}

	// The holder's hold, on the clock the waiters' attempts are timed by.
	clock := time.Now()
	first := attempt{worker: -1, sent: time.Since(clock)}
	var g grant
	body := appendLeaseBody(nil, quote(name), quote("bench-w-holder"), longLeaseSeconds, 0)
	if err := c.acquireWithin(ctx, body, 0, &g); err != nil {
		return nil, fmt.Errorf("set up: hold %s: %w", name, err)
	}
	first.done, first.granted, first.token = time.Since(clock), true, g.FencingToken
	releaseFirst := sync.OnceFunc(func() {
		first.released = time.Since(clock)
		if rerr := c.release(context.WithoutCancel(ctx), g.LeaseID); rerr != nil {
			r.count(tally{n: 1, first: rerr})
			return
		}
		first.releasedOK = true
	})
	defer releaseFirst()

	before, err := settledMemory(ctx, c.hc, metrics, cfg.Settle)
	if err != nil {
		return nil, err
	}

	tr := newWaiterTransport()
	defer tr.CloseIdleConnections()
	wc := newClient(withBearer(&http.Client{Transport: tr}, cfg.APIKey), cfg.URL)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// On failure, the waiters give up before the slot is released.
	defer wg.Wait()
	defer cancel()

	n := cfg.Waiters
	attempts := make([]attempt, n)
	errs := make([]error, n)
	var failed sharedTally
	opening := make(chan struct{}, waitersOpening)
	start := time.Now()
	for i := range n {
		select {
		case opening <- struct{}{}:
		case <-wctx.Done():
			return nil, wctx.Err()
		}
		wg.Go(func() {
			attempts[i], errs[i] = waitInLine(wctx, wc, c, clock, i, name, opening)
			if errs[i] != nil {
				failed.add(errs[i])
			}
		})
	}
	if err := waitForWaiters(ctx, c, name, n, &failed); err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	setup := time.Since(start)
	after, err := settledMemory(ctx, c.hc, metrics, cfg.Settle)
	if err != nil {
		return nil, err
	}
	// The reading counts only if every waiter was still in line.
	if s, err := c.readLimit(ctx, name); err != nil {
		return nil, err
	} else if s.Waiting != n {
		return nil, fmt.Errorf("%d of %d requests still waiting after the memory was read", s.Waiting, n)
	}

	releaseFirst()
	wg.Wait()
	holds := []hold{first.hold()}
	var t tally
	for i, a := range attempts {
		if errs[i] != nil {
			t.add(errs[i])
		}
		if a.granted {
			holds = append(holds, a.hold())
		}
	}
	r.count(t)
	r.Overlaps += overlaps(holds)
	r.FencingRegressions += fencingRegressions(holds)
	if s, err := c.readLimit(ctx, name); err != nil {
		r.count(tally{n: 1, first: fmt.Errorf("check: %w", err)})
	} else {
		r.LeakedSlots += s.ActiveSlots
	}
	return newMemoryPart(n, 1, setup, before, after, TargetBytesPerWaiter), nil
}

// waitForWaiters polls the limit called name until n requests wait in
// line for it, and fails if that takes longer than waitersReadyTimeout or
// if a waiter has failed already.
func waitForWaiters(ctx context.Context, c *client, name string, n int, failed *sharedTally) error {
	deadline := time.Now().Add(waitersReadyTimeout)
	for pause := pollFirst; ; pause = min(2*pause, pollMost) {
		s, err := c.readLimit(ctx, name)
		if err != nil {
			return err
		}
		switch {
		case s.Waiting == n:
			return nil
		case s.Waiting > n:
			return fmt.Errorf("%d requests wait in line, want %d: is someone else using %s?", s.Waiting, n, name)
		}
		if f := failed.get(); f.n > 0 {
			return fmt.Errorf("%d of %d waiting requests failed, the first with: %w", f.n, n, f.first)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d requests waiting after %v", s.Waiting, n, waitersReadyTimeout)
		}
		if err := sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// sharedTally is a tally that goroutines add to while another reads it.
type sharedTally struct {
	mu sync.Mutex
	t  tally
}

func (s *sharedTally) add(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t.add(err)
}

func (s *sharedTally) get() tally {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

// waitInLine is one waiter of measureWaiters: it sends a request for the
// limit called name over a connection of its own (wc opens one per
// request), frees its place in opening once the request is written, waits
// for the grant, and releases it at once through c. It fails if its
// request went over a connection already used.
func waitInLine(ctx context.Context, wc, c *client, clock time.Time, i int, name string, opening <-chan struct{}) (attempt, error) {
	freeOpening := sync.OnceFunc(func() { <-opening })
	defer freeOpening()
	var reused atomic.Bool
	traced := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:      func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
		WroteRequest: func(httptrace.WroteRequestInfo) { freeOpening() },
	})
	body := appendLeaseBody(nil, quote(name), quote(fmt.Sprintf("bench-w%d", i)), leaseDurationSeconds, waiterWaitSeconds)
	a := attempt{worker: i, sent: time.Since(clock)}
	var g grant
	err := wc.acquireWithin(traced, body, waiterWaitSeconds*time.Second, &g)
	a.done = time.Since(clock)
	if err == nil && reused.Load() {
		err = errors.New("request sent over a connection already used")
	}
	if g.LeaseID != "" {
		a.granted, a.token = true, g.FencingToken
		a.released = time.Since(clock)
		if rerr := c.release(context.WithoutCancel(ctx), g.LeaseID); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			a.releasedOK = true
		}
	}
	if err != nil {
		return a, fmt.Errorf("waiter %d: %w", i, err)
	}
	return a, nil
}
