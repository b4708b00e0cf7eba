package coord

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// Prefect's v1 tag-limit operations, and allot's label limits that mirror
// them (see sema/taglimits.go, where their rules live). A tag limit is the
// limit "tag:{tag}", a label limit "label:{label}": a run kind's
// LimitPrefix.

// TagLimitRef finds a tag or label limit: by ID when it is not the zero UUID,
// else by Key, the tag or label itself.
type TagLimitRef = sema.TagLimitRef

// ReadTagLimit reads a tag or label limit with its holders and waiters.
func (c *Coordinator) ReadTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef) (sema.LimitView, error) {
	var v sema.LimitView
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { v, err = m.TagLimit(now, kind, ref, sema.Full) }); rerr != nil {
		return v, rerr
	}
	return v, err
}

// ListTagLimits lists up to n tag or label limits, by name, skipping the first
// offset: a page of those limits only, whatever other limits exist.
func (c *Coordinator) ListTagLimits(ctx context.Context, kind sema.RunKind, offset, n int) ([]sema.LimitView, error) {
	return c.ListLimits(ctx, kind.LimitPrefix(), offset, n, sema.Full)
}

// UpsertTagLimit creates the limit of key with limit slots, or sets the limit
// of the existing one (see sema.Machine.UpsertTagLimit). created reports
// which.
func (c *Coordinator) UpsertTagLimit(ctx context.Context, kind sema.RunKind, key string, limit int) (v sema.LimitView, created bool, err error) {
	if err := sema.CheckTag(kind, kind.Noun(), key); err != nil {
		return v, false, err
	}
	if err := allow(ctx, auth.Manage, kind.LimitPrefix()+key); err != nil {
		return v, false, err
	}
	return c.upsert(func(m *sema.Machine, now time.Time, id uuid.UUID) (sema.Limit, bool, error) {
		return m.UpsertTagLimit(now, kind, key, limit, id)
	})
}

// DeleteTagLimit deletes a tag or label limit. Leases that hold it keep
// their other holds (see sema.Machine.DeleteLimit): the runs holding it go
// on, no longer limited by it.
func (c *Coordinator) DeleteTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef) error {
	return c.do(func(m *sema.Machine, now time.Time) error {
		v, err := m.TagLimit(now, kind, ref, sema.Summary)
		if err != nil {
			return err
		}
		if err := allow(ctx, auth.Manage, v.Name); err != nil {
			return err
		}
		return m.DeleteLimit(now, v.ID)
	})
}

// ResetResult is what a reset did.
type ResetResult = sema.TagLimitReset

// ResetTagLimit revokes every lease on a tag or label limit and gives a
// slot to each holder id in override while one is free (see
// sema.Machine.ResetTagLimit). Override leases last V1LeaseDuration.
func (c *Coordinator) ResetTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef, override []string) (ResetResult, error) {
	ids := make([]uuid.UUID, len(override))
	for i := range ids {
		var err error
		if ids[i], err = uuid.NewV7(); err != nil {
			return ResetResult{}, err
		}
	}
	return doValue(c, func(m *sema.Machine, now time.Time) (ResetResult, error) {
		if v, err := m.TagLimit(now, kind, ref, sema.Summary); err == nil {
			if err := allow(ctx, auth.Manage, v.Name); err != nil {
				return ResetResult{}, err
			}
		}
		return m.ResetTagLimit(now, kind, ref, override, ids, c.cfg.V1LeaseDuration)
	})
}

// IncrementTagLimits takes one slot of every existing limit of keys at once
// for holderID (Prefect's v1 increment), in a lease of V1LeaseDuration, and
// returns the limits (see sema.Machine.IncrementTagLimits).
func (c *Coordinator) IncrementTagLimits(ctx context.Context, kind sema.RunKind, keys []string, holderID string) ([]sema.LimitRef, error) {
	if err := allow(ctx, auth.Acquire, tagNames(kind, keys)...); err != nil {
		return nil, err
	}
	leaseID, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	refs, err := doValue(c, func(m *sema.Machine, now time.Time) ([]sema.LimitRef, error) {
		return m.IncrementTagLimits(now, kind, keys, holderID, leaseID, c.cfg.V1LeaseDuration)
	})
	if errors.As(err, new(*sema.LockedError)) {
		c.met.refusals.Inc()
	}
	return refs, err
}

// DecrementTagLimits releases every lease of holderID that holds one of the
// limits of keys, all its limits included (Prefect's v1 decrement), and
// returns the existing limits of keys.
func (c *Coordinator) DecrementTagLimits(ctx context.Context, kind sema.RunKind, keys []string, holderID string) ([]sema.LimitRef, error) {
	if err := allow(ctx, auth.Acquire, tagNames(kind, keys)...); err != nil {
		return nil, err
	}
	return doValue(c, func(m *sema.Machine, now time.Time) ([]sema.LimitRef, error) {
		return m.DecrementTagLimits(now, kind, keys, holderID)
	})
}
