package coord

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// resolve finds a limit by id or by name. As Prefect does, a reference that
// parses as a UUID is an id.
func resolve(m *sema.Machine, now time.Time, ref string, d sema.Detail) (sema.LimitView, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return m.LimitByID(now, id, d)
	}
	return m.LimitByName(now, ref, d)
}

// CreateLimit creates a limit.
func (c *Coordinator) CreateLimit(ctx context.Context, s sema.LimitSpec) (sema.LimitView, error) {
	var v sema.LimitView
	if err := allow(ctx, auth.Manage, s.Name); err != nil {
		return v, err
	}
	err := c.do(func(m *sema.Machine, now time.Time) error {
		id, err := uuid.NewRandom()
		if err != nil {
			return err
		}
		if _, err := m.CreateLimit(now, id, s); err != nil {
			return err
		}
		v, err = m.LimitByID(now, id, sema.Full)
		return err
	})
	return v, err
}

// ReadLimit reads a limit by id or name.
func (c *Coordinator) ReadLimit(ctx context.Context, ref string, d sema.Detail) (sema.LimitView, error) {
	var v sema.LimitView
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { v, err = resolve(m, now, ref, d) }); rerr != nil {
		return v, rerr
	}
	return v, err
}

// ListLimits lists limits whose names start with prefix, by name.
func (c *Coordinator) ListLimits(ctx context.Context, prefix string, offset, n int, d sema.Detail) ([]sema.LimitView, error) {
	var out []sema.LimitView
	err := c.read(func(m *sema.Machine, now time.Time) { out = m.Limits(now, prefix, offset, n, d) })
	return out, err
}

// UpdateLimit changes a limit found by id or name.
func (c *Coordinator) UpdateLimit(ctx context.Context, ref string, p sema.LimitPatch) (sema.LimitView, error) {
	var v sema.LimitView
	err := c.do(func(m *sema.Machine, now time.Time) error {
		cur, err := resolve(m, now, ref, sema.Summary)
		if err != nil {
			return err
		}
		if err := allow(ctx, auth.Manage, cur.Name); err != nil {
			return err
		}
		if _, err := m.UpdateLimit(now, cur.ID, p); err != nil {
			return err
		}
		v, err = m.LimitByID(now, cur.ID, sema.Full)
		return err
	})
	return v, err
}

// DeleteLimit deletes a limit found by id or name.
func (c *Coordinator) DeleteLimit(ctx context.Context, ref string) (sema.LimitView, error) {
	var v sema.LimitView
	err := c.do(func(m *sema.Machine, now time.Time) error {
		var err error
		v, err = resolve(m, now, ref, sema.Summary)
		if err != nil {
			return err
		}
		if err := allow(ctx, auth.Manage, v.Name); err != nil {
			return err
		}
		return m.DeleteLimit(now, v.ID)
	})
	return v, err
}

// DeleteMatching deletes the limits that d selects and returns how many
// it matched.
func (c *Coordinator) DeleteMatching(ctx context.Context, d sema.DeleteMatch) (int, error) {
	if err := allow(ctx, auth.Manage, d.Pattern); err != nil {
		return 0, err
	}
	return doValue(c, func(m *sema.Machine, now time.Time) (int, error) {
		return m.DeleteMatching(now, d)
	})
}

// EnsureLimit makes sure the limit called e.Name exists with e's settings
// (see sema.Machine.EnsureLimit) in one command: created, changed where it
// differs, or left alone. created reports whether it was created.
// Concurrent ensures of one name leave one limit.
func (c *Coordinator) EnsureLimit(ctx context.Context, e sema.LimitEnsure) (v sema.LimitView, created bool, err error) {
	if err := allow(ctx, auth.Manage, e.Name); err != nil {
		return v, false, err
	}
	return c.upsert(func(m *sema.Machine, now time.Time, id uuid.UUID) (sema.Limit, bool, error) {
		return m.EnsureLimit(now, id, e)
	})
}
