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
	o.attempts, o.errs = drive(ctx, c, workers, quoted, holdFor, start, o.window.to)
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

// drive runs workers until stop (an offset from start) or until ctx is
// done. Each worker repeatedly picks one of names (JSON-quoted) at random,
// acquires a slot of it waiting in line, holds it for holdFor, and releases it;
// once stop has passed a worker finishes the attempt under way and starts
// no other. drive returns every attempt, timed as offsets from start on its
// monotonic clock, and the errors they met.
func drive(ctx context.Context, c *client, workers int, names [][]byte, holdFor time.Duration, start time.Time, stop time.Duration) ([]attempt, tally) {
	perWorker := make([][]attempt, workers)
	errs := make([]tally, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			perWorker[w], errs[w] = work(ctx, c, w, start, names, holdFor, stop)
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
func work(ctx context.Context, c *client, w int, start time.Time, names [][]byte, holdFor, stop time.Duration) ([]attempt, tally) {
	p := c.worker()
	defer p.close()
	var (
		attempts []attempt
		errs     tally
		body     []byte
	)
	holder := quote(fmt.Sprintf("bench-w%d", w))
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
		if len(names) > 1 {
			a.limit = rand.IntN(len(names))
		}
		body = appendAcquireBody(body[:0], names[a.limit], holder)
		a.sent = time.Since(start)
		g, err := p.acquire(ctx, body)
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
		if err := p.release(ctx, g.LeaseID); err != nil {
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
