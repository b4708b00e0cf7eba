package coord

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// Prefect's v1 tag-limit operations, and allot's label limits that mirror
// them. A tag limit is the limit "tag:{tag}", a label limit "label:{label}":
// a run kind's LimitPrefix. They are ordinary limits, so one mechanism
// enforces both; these operations only find them by their key (the tag or
// the label) and speak for the holders of that kind (task runs, flow runs).

// TagLimitRef finds a tag or label limit: by ID when it is not the zero UUID,
// else by Key, the tag or label itself.
type TagLimitRef struct {
	ID  uuid.UUID
	Key string
}

// findTagLimit resolves ref among the limits of kind; a limit with that id but
// another prefix is not found.
func findTagLimit(m *sema.Machine, now time.Time, kind sema.RunKind, ref TagLimitRef, d sema.Detail) (sema.LimitView, error) {
	if ref.ID != uuid.Nil {
		v, err := m.LimitByID(now, ref.ID, d)
		if err == nil && !strings.HasPrefix(v.Name, kind.LimitPrefix()) {
			return sema.LimitView{}, sema.ErrLimitNotFound
		}
		return v, err
	}
	return m.LimitByName(now, kind.LimitPrefix()+ref.Key, d)
}

// tagLimitNames turns keys into limit names, checking each; field names the
// request field they came from.
func tagLimitNames(kind sema.RunKind, field string, keys []string) ([]string, error) {
	names := make([]string, len(keys))
	for i, k := range keys {
		if err := checkTag(kind, field, k); err != nil {
			return nil, err
		}
		names[i] = kind.LimitPrefix() + k
	}
	return names, nil
}

// checkTag checks a tag or label by the one rule of tags, the rule of a
// run's tags (sema.ValidateTag): a tag limit is the limit of a tag, so a key
// with '*' would make a template, which the tag-limit API does not create.
func checkTag(kind sema.RunKind, field, key string) error {
	if why := sema.ValidateTag(kind, key); why != "" {
		return &sema.InvalidError{Field: field, Detail: "\"" + key + "\" " + why}
	}
	return nil
}

// ReadTagLimit reads a tag or label limit with its holders and waiters.
func (c *Coordinator) ReadTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef) (sema.LimitView, error) {
	var v sema.LimitView
	var err error
	if rerr := c.read(func(m *sema.Machine, now time.Time) { v, err = findTagLimit(m, now, kind, ref, sema.Full) }); rerr != nil {
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
// of the existing one. created reports which.
func (c *Coordinator) UpsertTagLimit(ctx context.Context, kind sema.RunKind, key string, limit int) (v sema.LimitView, created bool, err error) {
	if err := checkTag(kind, kind.Noun(), key); err != nil {
		return v, false, err
	}
	err = c.do(func(m *sema.Machine, now time.Time) error {
		name := kind.LimitPrefix() + key
		cur, err := m.LimitByName(now, name, sema.Summary)
		switch {
		case errors.Is(err, sema.ErrLimitNotFound):
			id, err := uuid.NewRandom()
			if err != nil {
				return err
			}
			if _, err := m.CreateLimit(now, id, sema.LimitSpec{Name: name, Limit: limit, Active: true}); err != nil {
				return err
			}
			created = true
			v, err = m.LimitByID(now, id, sema.Full)
			return err
		case err != nil:
			return err
		}
		if _, err := m.UpdateLimit(now, cur.ID, sema.LimitPatch{Limit: &limit}); err != nil {
			return err
		}
		v, err = m.LimitByID(now, cur.ID, sema.Full)
		return err
	})
	return v, created, err
}

// DeleteTagLimit deletes a tag or label limit. Leases that hold it keep
// their other holds (see sema.Machine.DeleteLimit): the runs holding it go
// on, no longer limited by it.
func (c *Coordinator) DeleteTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef) error {
	return c.do(func(m *sema.Machine, now time.Time) error {
		v, err := findTagLimit(m, now, kind, ref, sema.Summary)
		if err != nil {
			return err
		}
		return m.DeleteLimit(now, v.ID)
	})
}

// ResetResult is what a reset did.
type ResetResult struct {
	// Revoked is the number of leases revoked.
	Revoked int
	// Granted and Refused are the slot_override holders that got a slot
	// and those that did not fit.
	Granted, Refused []string
}

// ResetTagLimit revokes every lease on a tag or label limit (a run that held
// one is Crashed: its slot is gone), then gives a slot to each holder id in
// override, in order, as long as one is free and nobody waits for it: the
// waiters the revocation let in come first. Override leases last
// V1LeaseDuration.
func (c *Coordinator) ResetTagLimit(ctx context.Context, kind sema.RunKind, ref TagLimitRef, override []string) (ResetResult, error) {
	var res ResetResult
	err := c.do(func(m *sema.Machine, now time.Time) error {
		v, err := findTagLimit(m, now, kind, ref, sema.Summary)
		if err != nil {
			return err
		}
		if res.Revoked, err = m.RevokeLimitLeases(now, v.ID, "slot revoked by reset"); err != nil {
			return err
		}
		var seen []string
		for _, id := range override {
			if slices.Contains(seen, id) {
				continue
			}
			seen = append(seen, id)
			leaseID, err := uuid.NewV7()
			if err != nil {
				return err
			}
			out, err := m.Acquire(now, sema.Request{Names: []string{v.Name}, Slots: 1, LeaseID: leaseID,
				LeaseDuration: c.cfg.V1LeaseDuration, Holder: sema.Holder{Type: kind.HolderType(), ID: id}})
			if err != nil || !out.Granted {
				res.Refused = append(res.Refused, id)
				continue
			}
			res.Granted = append(res.Granted, id)
		}
		return nil
	})
	return res, err
}

// IncrementTagLimits takes one slot of every existing limit of keys at once
// for holderID (Prefect's v1 increment), in a lease of V1LeaseDuration, and
// returns the limits. Keys without a limit are skipped. A full limit fails
// with a *sema.LockedError whose RetryAfter is the tag wait (Prefect's
// fixed Retry-After for v1); a limit of 0 with a *sema.NeverError.
func (c *Coordinator) IncrementTagLimits(ctx context.Context, kind sema.RunKind, keys []string, holderID string) ([]sema.LimitRef, error) {
	names, err := tagLimitNames(kind, "names", keys)
	if err != nil {
		return nil, err
	}
	leaseID, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	var refs []sema.LimitRef
	err = c.do(func(m *sema.Machine, now time.Time) error {
		out, err := m.Acquire(now, sema.Request{Names: names, Slots: 1, LeaseID: leaseID,
			LeaseDuration: c.cfg.V1LeaseDuration, Holder: sema.Holder{Type: kind.HolderType(), ID: holderID}})
		refs = out.Limits
		return err
	})
	var le *sema.LockedError
	if errors.As(err, &le) {
		c.met.refusals.Inc()
		wait := c.cfg.Sema.TagMaxWait
		if wait <= 0 {
			wait = sema.DefaultConfig().TagMaxWait
		}
		out := *le
		out.RetryAfter = wait
		return nil, &out
	}
	return refs, err
}

// DecrementTagLimits releases every lease of holderID that holds one of the
// limits of keys, all its limits included (Prefect's v1 decrement), and
// returns the existing limits of keys.
func (c *Coordinator) DecrementTagLimits(ctx context.Context, kind sema.RunKind, keys []string, holderID string) ([]sema.LimitRef, error) {
	names, err := tagLimitNames(kind, "names", keys)
	if err != nil {
		return nil, err
	}
	var refs []sema.LimitRef
	err = c.do(func(m *sema.Machine, now time.Time) error {
		refs, _ = m.ReleaseHolderLeases(now, names, sema.Holder{Type: kind.HolderType(), ID: holderID})
		return nil
	})
	return refs, err
}
