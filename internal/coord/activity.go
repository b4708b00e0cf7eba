package coord

import (
	"context"
	"time"

	"github.com/allot-dev/allot/internal/sema"
)

// This file feeds the recent history of limits (sema.Activity) that the
// web UI shows, and reads it back with the views the pages need.

// activityKind maps an event to the history's kinds; 0: not recorded.
func activityKind(k sema.EventKind) sema.ActivityKind {
	switch k {
	case sema.Granted:
		return sema.ActGranted
	case sema.Released:
		return sema.ActReleased
	case sema.Expired:
		return sema.ActExpired
	case sema.Revoked:
		return sema.ActRevoked
	}
	return 0
}

// recordEvent adds a lease event to the history of its limits. Called with
// mu held, from dispatch.
func (c *Coordinator) recordEvent(now time.Time, e sema.Event) {
	if e.Kind == sema.LimitChanged && e.Deleted {
		for _, l := range e.Limits {
			c.act.Forget(l.Name)
		}
		return
	}
	if e.Kind == sema.Queued || e.Kind == sema.LeftLine {
		for _, l := range e.Limits {
			held, waiting, _ := c.m.Occupancy(l.Name)
			c.act.Sample(l.Name, now, held, waiting)
		}
		return
	}
	k := activityKind(e.Kind)
	if k == 0 || e.Lease.Mode == sema.ModeRateLimit && k == sema.ActGranted && e.Lease.Holder.IsZero() && len(e.Limits) == 0 {
		return
	}
	for _, l := range e.Limits {
		held, waiting, _ := c.m.Occupancy(l.Name)
		c.act.Record(l.Name, sema.ActivityEvent{At: now, Kind: k, LeaseID: e.Lease.ID, Holder: e.Lease.Holder,
			Slots: e.Lease.Slots}, held, waiting)
	}
}

// recordRefusal counts a denial or a time-out on the limits that were
// full. Called with mu held.
func (c *Coordinator) recordRefusal(now time.Time, k sema.ActivityKind, le *sema.LockedError, req sema.Request) {
	for _, name := range le.Full {
		held, waiting, _ := c.m.Occupancy(name)
		c.act.Record(name, sema.ActivityEvent{At: now, Kind: k, Holder: req.Holder, Slots: req.Slots}, held, waiting)
	}
}

// LimitSummary is a limit as the list of limits shows it.
type LimitSummary struct {
	sema.LimitView
	// Denied and TimedOut count the last hour's refusals (zero for a
	// limit not recently active).
	Denied, TimedOut int
}

// FindLimits returns up to n limits of kind k whose names contain query,
// skipping offset, with their counts of the last hour, and the number of
// matches.
func (c *Coordinator) FindLimits(ctx context.Context, k sema.LimitKind, query string, offset, n int) ([]LimitSummary, int, error) {
	var out []LimitSummary
	total := 0
	err := c.read(func(m *sema.Machine, now time.Time) {
		var vs []sema.LimitView
		vs, total = m.FindLimits(now, k, query, offset, n)
		out = make([]LimitSummary, len(vs))
		for i, v := range vs {
			out[i].LimitView = v
			out[i].Denied, out[i].TimedOut = c.act.Counts(now, v.Name)
		}
	})
	return out, total, err
}

// LimitDetail is one limit with its holders, line, explanation and recent
// history.
type LimitDetail struct {
	sema.LimitView
	Activity sema.ActivityView
	At       time.Time
}

// InspectLimit reads a limit by id or name with its holders and waiters
// and its recent history, and keeps tracking its history while it is
// inspected.
func (c *Coordinator) InspectLimit(ctx context.Context, ref string) (LimitDetail, error) {
	var d LimitDetail
	var err error
	rerr := c.read(func(m *sema.Machine, now time.Time) {
		d.LimitView, err = resolve(m, now, ref, sema.Full)
		if err != nil {
			return
		}
		c.act.Watch(d.Name)
		d.Activity = c.act.View(now, d.Name)
		d.At = now
	})
	if rerr != nil {
		return LimitDetail{}, rerr
	}
	return d, err
}

// RecentRuns lists up to n runs that f selects, newest first, skipping
// offset, and the number selected.
func (c *Coordinator) RecentRuns(ctx context.Context, f sema.RunFilter, offset, n int) ([]sema.Run, int, error) {
	var out []sema.Run
	total := 0
	err := c.read(func(m *sema.Machine, now time.Time) { out, total = m.RecentRuns(f, offset, n) })
	return out, total, err
}
