package bench

import (
	"context"
	"fmt"
	"time"
)

// Scale is what the scale workload measured: the throughput workload's
// pairs per second while the server holds few and many leases.
type Scale struct {
	// LoadLimits is how many one-slot limits, apart from the held ones,
	// the throughput loop spreads its workers over.
	LoadLimits int `json:"load_limits"`
	// Steps are the measurements, one per size, in the order run.
	Steps []ScaleStep `json:"steps"`
	// Slowdown is the pairs per second with the fewest leases held over
	// those with the most: 1 when the cost per operation does not depend
	// on the state's size, 0 when it cannot be computed.
	Slowdown float64 `json:"slowdown"`
}

// ScaleStep is the throughput measured while Held leases were held.
type ScaleStep struct {
	// Held is how many leases were held, each on a limit of its own.
	Held int `json:"held"`
	// SetupSeconds is how long acquiring them took.
	SetupSeconds float64 `json:"setup_seconds"`
	// Seconds is the length of the measured window.
	Seconds float64 `json:"seconds"`
	Throughput
}

// slowdown returns the pairs per second of the step with the fewest leases
// held over that of the step with the most, or 0 if the steps do not
// differ in size or the larger one served nothing.
func slowdown(steps []ScaleStep) float64 {
	if len(steps) == 0 {
		return 0
	}
	small, large := steps[0], steps[0]
	for _, s := range steps[1:] {
		if s.Held < small.Held {
			small = s
		}
		if s.Held > large.Held {
			large = s
		}
	}
	if small.Held == large.Held || large.PairsPerSecond <= 0 {
		return 0
	}
	return small.PairsPerSecond / large.PairsPerSecond
}

// runScale runs the scale workload: for each of cfg.ScaleSizes, it fills
// the server with that many held leases and runs the throughput loop
// beside them.
func runScale(ctx context.Context, c *client, cfg Config) (Result, error) {
	r := Result{Workload: WorkloadScale, Workers: cfg.ThroughputWorkers}
	s := &Scale{LoadLimits: cfg.Limits}
	for _, size := range cfg.ScaleSizes {
		step, err := scaleStep(ctx, c, cfg, size, &r)
		if err != nil {
			return Result{}, fmt.Errorf("%d held: %w", size, err)
		}
		s.Steps = append(s.Steps, step)
		r.Seconds += step.Seconds
	}
	s.Slowdown = slowdown(s.Steps)
	r.Scale = s
	return r, nil
}

// scaleStep holds size leases, each on a limit of its own made on first
// use from a template, runs the throughput loop over cfg.Limits other
// limits, then releases the leases and, if cfg.Cleanup, deletes the
// limits. The loop's safety checks and every failure are counted in r.
func scaleStep(ctx context.Context, c *client, cfg Config, size int, r *Result) (ScaleStep, error) {
	template := fmt.Sprintf("%s-s%d:*", cfg.Prefix, size)
	held := make([]string, size)
	for i := range held {
		held[i] = fmt.Sprintf("%s-s%d:%d", cfg.Prefix, size, i)
	}
	if err := c.ensureLimit(ctx, template, 1); err != nil {
		return ScaleStep{}, fmt.Errorf("set up: %w", err)
	}
	if cfg.Cleanup {
		defer func() {
			r.count(deleteEach(ctx, c, cfg.ThroughputWorkers, held))
			if derr := c.deleteLimit(context.WithoutCancel(ctx), template); derr != nil {
				r.count(tally{n: 1, first: derr})
			}
		}()
	}
	start := time.Now()
	ids, err := holdEach(ctx, c, cfg.ThroughputWorkers, size, func(i int) string { return held[i] })
	setup := time.Since(start)
	defer func() { r.count(releaseEach(ctx, c, cfg.ThroughputWorkers, ids)) }()
	if err != nil {
		return ScaleStep{}, fmt.Errorf("set up: %w", err)
	}

	names := make([]string, cfg.Limits)
	for i := range names {
		names[i] = fmt.Sprintf("%s-s%d-t%d", cfg.Prefix, size, i)
	}
	o, err := runLoad(ctx, c, cfg, names, cfg.ThroughputWorkers, 0, "")
	if err != nil {
		return ScaleStep{}, err
	}
	lr := o.result(WorkloadScale, cfg.ThroughputWorkers, len(names))
	r.count(o.errs)
	r.Overlaps += lr.Overlaps
	r.FencingRegressions += lr.FencingRegressions
	r.LeakedSlots += lr.LeakedSlots
	return ScaleStep{
		Held:         size,
		SetupSeconds: setup.Seconds(),
		Seconds:      lr.Seconds,
		Throughput:   *o.throughput(len(names)),
	}, nil
}
