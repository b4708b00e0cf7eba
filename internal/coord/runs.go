package coord

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// runWatcher is a WaitRun request: ch is signalled when its run changes,
// and b is the batch that carries the run's latest change.
type runWatcher struct {
	ch chan struct{}
	b  *batch
}

// CreateRun creates a Pending run. A zero ID gets a random one, a zero
// LeaseDuration the configured RunLeaseDuration. A run that exists with
// the same id and spec (a retry after a lost answer) is returned as it is,
// with created false.
func (c *Coordinator) CreateRun(ctx context.Context, s sema.RunSpec) (r sema.Run, created bool, err error) {
	if s.ID == uuid.Nil {
		id, err := uuid.NewRandom()
		if err != nil {
			return sema.Run{}, false, err
		}
		s.ID = id
	}
	if s.LeaseDuration == 0 {
		s.LeaseDuration = c.cfg.RunLeaseDuration
	} else if _, err := c.LeaseDuration(s.LeaseDuration); err != nil {
		return sema.Run{}, false, err
	}
	err = c.do(func(m *sema.Machine, now time.Time) error {
		_, notFound := m.Run(s.ID)
		created = notFound != nil
		if err := allowRun(ctx, m, now, s); err != nil {
			return err
		}
		var err error
		r, err = m.CreateRun(now, s)
		return err
	})
	return r, created && err == nil, err
}

// SetRunState moves a run to Running (or in line for it) or to a final
// state (see sema.Machine.SetRunState). A refused change returns the run as
// it is with a *sema.TransitionError.
func (c *Coordinator) SetRunState(ctx context.Context, id uuid.UUID, s sema.RunState, message string) (sema.Run, error) {
	return doValue(c, func(m *sema.Machine, now time.Time) (sema.Run, error) {
		if err := allowRunID(ctx, m, now, id); err != nil {
			return sema.Run{}, err
		}
		return m.SetRunState(now, id, s, message)
	})
}

// HeartbeatRun renews a Running run's lease and returns its new expiry
// (the zero time for a run that holds no lease yet). A run in a final state
// fails with sema.ErrRunFinished.
func (c *Coordinator) HeartbeatRun(ctx context.Context, id uuid.UUID) (time.Time, error) {
	return doValue(c, func(m *sema.Machine, now time.Time) (time.Time, error) {
		if err := allowRunID(ctx, m, now, id); err != nil {
			return time.Time{}, err
		}
		return m.HeartbeatRun(now, id)
	})
}

// ReadRun reads a run.
func (c *Coordinator) ReadRun(ctx context.Context, id uuid.UUID) (sema.Run, error) {
	var r sema.Run
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { r, err = m.Run(id) }); rerr != nil {
		return r, rerr
	}
	return r, err
}

// ListRuns lists up to n runs that f selects, oldest first, skipping the
// first offset.
func (c *Coordinator) ListRuns(ctx context.Context, f sema.RunFilter, offset, n int) ([]sema.Run, error) {
	var out []sema.Run
	err := c.read(func(m *sema.Machine, now time.Time) { out = m.Runs(f, offset, n) })
	return out, err
}

// WaitRun waits up to timeout for a run to reach state until or any final
// state, and returns the run: in that state once the change is durable, or
// as it is when the time is up (the caller looks at its state). It returns
// ctx's error if ctx ends first.
func (c *Coordinator) WaitRun(ctx context.Context, id uuid.UUID, until sema.RunState, timeout time.Duration) (sema.Run, error) {
	reached := func(r sema.Run) bool { return r.State == until || r.State.IsFinal() }
	w := &runWatcher{ch: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return sema.Run{}, ErrUnavailable
	}
	r, err := c.m.Run(id)
	if err != nil || reached(r) || timeout <= 0 {
		c.mu.Unlock()
		return r, err
	}
	defer watch(c, c.runWatch, id, w)()
	c.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return sema.Run{}, ctx.Err()
		case <-timer.C:
			return c.ReadRun(ctx, id)
		case <-w.ch:
		}
		c.mu.Lock()
		r, err := c.m.Run(id)
		b := w.b
		c.mu.Unlock()
		if err != nil {
			return r, err
		}
		if reached(r) {
			if b != nil {
				if err := wait(b); err != nil {
					return sema.Run{}, err
				}
			}
			return r, nil
		}
	}
}
