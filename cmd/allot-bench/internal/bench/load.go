package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// errorBackoff is how long a worker pauses after a failed request other
// than a 423, so that a server that is down is not hammered in a hot loop.
const errorBackoff = 10 * time.Millisecond

// tally counts errors and keeps the first.
type tally struct {
	n     int
	first error
}

func (t *tally) add(err error) {
	if t.first == nil {
		t.first = err
	}
	t.n++
}

func (t *tally) merge(u tally) {
	if t.first == nil {
		t.first = u.first
	}
	t.n += u.n
}

// outcome is what a load left behind: every attempt, the measured window,
// the errors and leaked slots seen, and the server's CPU time in the window
// if it was read.
type outcome struct {
	attempts []attempt
	window   window
	errs     tally
	leaked   int
	// cpuSeconds is the server's CPU time in the window; nil if unknown.
	cpuSeconds *float64
}

// cpuPer returns the server's CPU time in the window per pair, in
// microseconds, over pairs pairs; nil if unknown.
func (o *outcome) cpuPer(pairs int) *float64 {
	if o.cpuSeconds == nil {
		return nil
	}
	return cpuMicrosPer(*o.cpuSeconds, pairs)
}

// result returns the fields of a Result common to every workload, the
// safety checks included, for a load over nLimits limits.
func (o *outcome) result(workload string, workers, nLimits int) Result {
	r := Result{
		Workload:    workload,
		Workers:     workers,
		Seconds:     (o.window.to - o.window.from).Seconds(),
		Errors:      o.errs.n,
		LeakedSlots: o.leaked,
	}
	if o.errs.first != nil {
		r.FirstError = o.errs.first.Error()
	}
	byLimit := make([][]hold, nLimits)
	for _, a := range o.attempts {
		if a.granted {
			byLimit[a.limit] = append(byLimit[a.limit], a.hold())
		}
	}
	for _, hs := range byLimit {
		r.Overlaps += overlaps(hs)
		r.FencingRegressions += fencingRegressions(hs)
	}
	return r
}

// runLoad creates (or resets) names as limits of one slot, runs workers that
// acquire a random one of them, hold it for holdFor and release it, through
// cfg.Warmup and then cfg.Duration, checks that no slot is left held, and
// deletes the limits if cfg.Cleanup. Unless metrics is empty, it reads the
// server's CPU time from the /metrics there as the measured window opens
// and as it closes; if it cannot, the outcome's CPU time is unknown.
func runLoad(ctx context.Context, c *client, cfg Config, names []string, workers int, holdFor time.Duration, metrics string) (o outcome, err error) {
	if cfg.Cleanup {
		defer func() {
			// Clean up even when ctx was cancelled: the limits are ours.
			ctx := context.WithoutCancel(ctx)
			for _, name := range names {
				if derr := c.deleteLimit(ctx, name); derr != nil {
					o.errs.add(derr)
				}
			}
		}()
	}
	for _, name := range names {
		if err := c.ensureLimit(ctx, name, 1); err != nil {
			return outcome{}, fmt.Errorf("set up: %w", err)
		}
	}
	quoted := make([][]byte, len(names))
	for i, name := range names {
		quoted[i] = quote(name)
	}
	o.window = window{from: cfg.Warmup, to: cfg.Warmup + cfg.Duration}
	start := time.Now()
	var probe sync.WaitGroup
	if metrics != "" {
		probe.Go(func() { o.cpuSeconds = cpuInWindow(ctx, c.hc, metrics, start, o.window) })
	}
	open := func(w int) slotter {
		return &allotSlotter{p: c.worker(), names: quoted, holder: quote(fmt.Sprintf("bench-w%d", w))}
	}
	o.attempts, o.errs = drive(ctx, open, workers, len(names), holdFor, start, o.window.to)
	probe.Wait()
	if err := ctx.Err(); err != nil {
		return outcome{}, err
	}
	for _, name := range names {
		n, err := c.activeSlots(ctx, name)
		if err != nil {
			o.errs.add(fmt.Errorf("check: %w", err))
			continue
		}
		o.leaked += n
	}
	return o, nil
}

// slotter is one worker's way to take one slot of a load's limit (by its
// index) and to give it back: allot's increment-with-lease and
// decrement-with-lease, or a peer's own.
type slotter interface {
	take(ctx context.Context, limit int) (grant, error)
	give(ctx context.Context, g grant) error
	close()
}

// allotSlotter takes and gives slots of allot's limits through a pairer.
type allotSlotter struct {
	p            pairer
	names        [][]byte // JSON-quoted
	holder, body []byte
}

func (s *allotSlotter) take(ctx context.Context, limit int) (grant, error) {
	s.body = appendAcquireBody(s.body[:0], s.names[limit], s.holder)
	return s.p.acquire(ctx, s.body)
}

func (s *allotSlotter) give(ctx context.Context, g grant) error { return s.p.release(ctx, g.LeaseID) }
func (s *allotSlotter) close()                                  { s.p.close() }

// drive runs workers until stop (an offset from start) or until ctx is
// done. Each worker, with a slotter of its own from open, repeatedly picks
// one of nLimits limits at random, takes a slot of it (waiting in line, or
// polling, as the slotter does), holds it for holdFor, and gives it back;
// once stop has passed a worker finishes the attempt under way and starts
// no other. drive returns every attempt, timed as offsets from start on its
// monotonic clock, and the errors they met.
func drive(ctx context.Context, open func(worker int) slotter, workers, nLimits int, holdFor time.Duration, start time.Time, stop time.Duration) ([]attempt, tally) {
	perWorker := make([][]attempt, workers)
	errs := make([]tally, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			perWorker[w], errs[w] = work(ctx, open(w), w, start, nLimits, holdFor, stop)
		})
	}
	wg.Wait()

	var all []attempt
	var t tally
	for w := range workers {
		all = append(all, perWorker[w]...)
		t.merge(errs[w])
	}
	return all, t
}

// work is one worker of drive.
func work(ctx context.Context, p slotter, w int, start time.Time, nLimits int, holdFor, stop time.Duration) ([]attempt, tally) {
	defer p.close()
	var (
		attempts []attempt
		errs     tally
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pause := func(d time.Duration) {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
	for ctx.Err() == nil && time.Since(start) < stop {
		a := attempt{worker: w}
		if nLimits > 1 {
			a.limit = rand.IntN(nLimits)
		}
		a.sent = time.Since(start)
		g, err := p.take(ctx, a.limit)
		a.done = time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			errs.add(err)
			attempts = append(attempts, a)
			if !errors.Is(err, errLocked) {
				pause(errorBackoff)
			}
			continue
		}
		a.granted = true
		a.token = g.FencingToken
		if holdFor > 0 {
			pause(holdFor)
		}
		a.released = time.Since(start)
		if err := p.give(ctx, g); err != nil {
			if ctx.Err() == nil {
				errs.add(err)
			}
		} else {
			a.releasedOK = true
		}
		attempts = append(attempts, a)
	}
	return attempts, errs
}
