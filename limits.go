package allot

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"time"
)

// maxPage is the most limits the server returns per page (a test checks
// it against the server's).
const maxPage = 200

// Limit is a named counter of slots, as the server reports it.
type Limit struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Limit is the number of slots.
	Limit int `json:"limit"`
	// Active is false for a limit that limits nothing.
	Active bool `json:"active"`
	// ActiveSlots is the slots in use: held by leases, plus rate-limit
	// slots not yet decayed, rounded up.
	ActiveSlots int `json:"active_slots"`
	// DeniedSlots is a decaying count of refused slots; it shapes
	// Retry-After.
	DeniedSlots int `json:"denied_slots"`
	// SlotDecayPerSecond is the rate at which rate-limit slots come back;
	// 0 for a limit that is not a rate limit.
	SlotDecayPerSecond float64 `json:"slot_decay_per_second"`
	// AvgSlotOccupancySeconds is how long a slot is held, on average.
	AvgSlotOccupancySeconds float64 `json:"avg_slot_occupancy_seconds"`
	// Template is true when the name has a '*': the limit is never held
	// itself but gives its settings to each new name it matches.
	Template bool `json:"template"`
	// IdleSeconds is, on a template, how long a limit it creates may sit
	// unused before the server removes it (0: never); on a limit a
	// template created (FromTemplate), its own, copied at its creation. It
	// is nil on other limits.
	IdleSeconds *float64 `json:"idle_seconds,omitempty"`
	// FromTemplate is true on a limit a template created on first use:
	// only such limits are removed when idle.
	FromTemplate bool `json:"from_template,omitempty"`
	// FencingToken is the token of the latest grant on the limit.
	FencingToken uint64 `json:"fencing_token"`
	// Waiting is the number of requests in line.
	Waiting int `json:"waiting"`
	// Holders are the leases holding the limit, and Waiters the requests in
	// line, first first. GetLimit and CreateLimit fill them; ListLimits
	// does not.
	Holders []Holding `json:"holders"`
	Waiters []Waiter  `json:"waiters"`
	// WhyWaiting explains in one sentence why the first request in line
	// still waits (GetLimit; empty when nobody waits).
	WhyWaiting string `json:"why_waiting,omitempty"`
}

// Holding is a lease holding slots of a limit.
type Holding struct {
	LeaseID string `json:"lease_id"`
	// Holder is nil for a lease taken without one.
	Holder       *Identity `json:"holder"`
	Slots        int       `json:"slots"`
	Since        time.Time `json:"since"`
	Expires      time.Time `json:"expires"`
	FencingToken uint64    `json:"fencing_token"`
}

// Waiter is a request in line for slots of a limit.
type Waiter struct {
	// Position is 1 for the next in line.
	Position int `json:"position"`
	Slots    int `json:"slots"`
	// Mode is "concurrency" or "rate_limit".
	Mode         string    `json:"mode"`
	Holder       *Identity `json:"holder"`
	WaitingSince time.Time `json:"waiting_since"`
}

// LimitSpec describes a limit to create.
type LimitSpec struct {
	// Name is the limit's name: no / % & > < or control characters. A
	// name with '*' makes a template (see Limit.Template).
	Name string
	// Limit is the number of slots.
	Limit int
	// Disabled creates the limit inactive: it limits nothing until it is
	// enabled.
	Disabled bool
	// SlotDecayPerSecond makes the limit a rate limit: slots taken by
	// RateLimit come back at this rate.
	SlotDecayPerSecond float64
	// ActiveSlots and DeniedSlots preset the counters.
	ActiveSlots int
	DeniedSlots int
	// IdleSeconds, for a template only (any other limit is refused with
	// ErrInvalid on the field idle_seconds), is how long a limit the
	// template creates may sit unused (no lease, no waiter, a rate limit's
	// level decayed) before the server removes it; 0 keeps them. nil is
	// the server's default: an hour. new(0.0) makes the pointer.
	IdleSeconds *float64
}

type createBody struct {
	Name               string   `json:"name"`
	Limit              int      `json:"limit"`
	Active             bool     `json:"active"`
	ActiveSlots        int      `json:"active_slots,omitempty"`
	DeniedSlots        int      `json:"denied_slots,omitempty"`
	SlotDecayPerSecond float64  `json:"slot_decay_per_second,omitempty"`
	IdleSeconds        *float64 `json:"idle_seconds,omitempty"`
}

// LimitUpdate is a change to a limit: only the fields that are not nil
// change. new(value) makes the pointers, e.g. LimitUpdate{Limit: new(5)}.
type LimitUpdate struct {
	Name   *string `json:"name,omitempty"`
	Limit  *int    `json:"limit,omitempty"`
	Active *bool   `json:"active,omitempty"`
	// ActiveSlots sets the slots taken without a lease (a rate limit's
	// level); 0 resets a rate limit. Slots held by leases stay held.
	ActiveSlots        *int     `json:"active_slots,omitempty"`
	DeniedSlots        *int     `json:"denied_slots,omitempty"`
	SlotDecayPerSecond *float64 `json:"slot_decay_per_second,omitempty"`
	// IdleSeconds changes a template's idle time (see
	// LimitSpec.IdleSeconds); limits it created before keep theirs.
	IdleSeconds *float64 `json:"idle_seconds,omitempty"`
}

// CreateLimit creates a limit. A name that is taken is an error matching
// ErrConflict; EnsureLimit tolerates it.
func (c *Client) CreateLimit(ctx context.Context, spec LimitSpec) (*Limit, error) {
	var l Limit
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/",
		body: jsonBody(createBody{Name: spec.Name, Limit: spec.Limit, Active: !spec.Disabled,
			ActiveSlots: spec.ActiveSlots, DeniedSlots: spec.DeniedSlots, SlotDecayPerSecond: spec.SlotDecayPerSecond,
			IdleSeconds: spec.IdleSeconds}),
		accept: []int{http.StatusCreated, http.StatusOK}}, &l)
	if err != nil {
		return nil, fmt.Errorf("create limit %q: %w", spec.Name, err)
	}
	return &l, nil
}

// GetLimit returns a limit by name or id, with its holders and waiters. A
// value that parses as a UUID is taken for an id. A limit that does not
// exist is an error matching ErrLimitNotFound (and ErrNotFound).
func (c *Client) GetLimit(ctx context.Context, nameOrID string) (*Limit, error) {
	var l Limit
	err := c.do(ctx, request{method: http.MethodGet, path: limitPath(nameOrID), accept: []int{http.StatusOK}}, &l)
	if err != nil {
		return nil, fmt.Errorf("get limit %q: %w", nameOrID, err)
	}
	return &l, nil
}

// ListLimits returns up to n limits (at most 200) ordered by name, from
// the offset-th on. It leaves Holders and Waiters empty.
func (c *Client) ListLimits(ctx context.Context, offset, n int) ([]*Limit, error) {
	var ls []*Limit
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/filter",
		body:   jsonBody(map[string]int{"offset": offset, "limit": n}),
		accept: []int{http.StatusOK}}, &ls)
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	return ls, nil
}

// AllLimits iterates over every limit, ordered by name, a page at a time.
// Limits created or deleted meanwhile may be missed or seen twice. It
// stops at the first error, which it yields.
func (c *Client) AllLimits(ctx context.Context) iter.Seq2[*Limit, error] {
	return allPages(ctx, c.ListLimits)
}

// allPages iterates over what list returns, maxPage at a time, until a page
// is short or list fails; it yields the error and stops.
func allPages[T any](ctx context.Context, list func(ctx context.Context, offset, n int) ([]*T, error)) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		for offset := 0; ; offset += maxPage {
			page, err := list(ctx, offset, maxPage)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, v := range page {
				if !yield(v, nil) {
					return
				}
			}
			if len(page) < maxPage {
				return
			}
		}
	}
}

// UpdateLimit changes the fields of u that are set. Lowering a limit never
// revokes held leases; it only stops new grants until usage falls below it.
func (c *Client) UpdateLimit(ctx context.Context, nameOrID string, u LimitUpdate) error {
	err := c.do(ctx, request{method: http.MethodPatch, path: limitPath(nameOrID),
		body: jsonBody(u), accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("update limit %q: %w", nameOrID, err)
	}
	return nil
}

// DeleteMatching selects limits by name for DeleteLimitsMatching.
type DeleteMatching struct {
	// Pattern matches names as a template does: '*' is any run of
	// characters; a pattern without '*' matches only that name.
	Pattern string `json:"pattern"`
	// All must be set for a pattern that matches every name ("" or "*").
	All bool `json:"all,omitempty"`
	// Templates deletes matching templates too.
	Templates bool `json:"templates,omitempty"`
	// DryRun only counts.
	DryRun bool `json:"dry_run,omitempty"`
}

// DeleteLimitsMatching deletes the limits that d selects (an allot
// extension) and returns how many matched. Leases holding them keep their
// other limits. With DryRun it deletes nothing.
func (c *Client) DeleteLimitsMatching(ctx context.Context, d DeleteMatching) (int, error) {
	var out struct {
		Matched int `json:"matched"`
	}
	err := c.do(ctx, request{method: http.MethodPost, path: limitsPrefix + "/delete",
		body: jsonBody(d), accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return 0, fmt.Errorf("delete limits matching %q: %w", d.Pattern, err)
	}
	return out.Matched, nil
}

// DeleteLimit deletes a limit. Leases holding it keep their other limits.
func (c *Client) DeleteLimit(ctx context.Context, nameOrID string) error {
	err := c.do(ctx, request{method: http.MethodDelete, path: limitPath(nameOrID),
		accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
	if err != nil {
		return fmt.Errorf("delete limit %q: %w", nameOrID, err)
	}
	return nil
}

// EnsureLimit makes sure a limit named name exists with limit slots, and
// returns it: the server creates it, or, if the name is taken, changes its
// number of slots if it differs, in one request (PUT
// /v2/concurrency_limits/{name}, an allot extension). It leaves everything
// else of an existing limit (active, decay) as it is. Concurrent calls with
// the same arguments all succeed and leave one limit; if they differ in
// limit, the last one wins.
//
// Against a server without that route (Prefect's, or an older allot, which
// answer 404 or 405) it does the same in several requests: it creates the
// limit, or, if the name is taken, reads it and updates it.
func (c *Client) EnsureLimit(ctx context.Context, name string, limit int) (*Limit, error) {
	var l Limit
	err := c.do(ctx, request{method: http.MethodPut, path: limitPath(name),
		body:   jsonBody(map[string]int{"limit": limit}),
		accept: []int{http.StatusCreated, http.StatusOK}}, &l)
	switch {
	case err == nil:
		return &l, nil
	case noRoute(err):
		return c.ensureInParts(ctx, name, limit)
	}
	return nil, wrapEnsure(name, err)
}

// noRoute reports whether err is the answer of a server that has no such
// route: a 405, or a 404 that is not about a limit (Prefect's says only
// "Not Found").
func noRoute(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Status == http.StatusMethodNotAllowed ||
		ae.Status == http.StatusNotFound && ae.Code != CodeLimitNotFound
}

// ensureTries bounds ensureInParts' rounds of create, read and update
// against concurrent deletes.
const ensureTries = 5

// ensureInParts is EnsureLimit for a server without the ensure route.
func (c *Client) ensureInParts(ctx context.Context, name string, limit int) (*Limit, error) {
	var err error
	for range ensureTries {
		var l *Limit
		l, err = c.CreateLimit(ctx, LimitSpec{Name: name, Limit: limit})
		if err == nil || !errors.Is(err, ErrConflict) {
			return l, wrapEnsure(name, err)
		}
		l, err = c.GetLimit(ctx, name)
		if errors.Is(err, ErrLimitNotFound) {
			continue // deleted since: create it again
		}
		if err != nil || l.Limit == limit {
			return l, wrapEnsure(name, err)
		}
		err = c.UpdateLimit(ctx, name, LimitUpdate{Limit: &limit})
		if errors.Is(err, ErrLimitNotFound) {
			continue
		}
		if err != nil {
			return nil, wrapEnsure(name, err)
		}
		l, err = c.GetLimit(ctx, name)
		if errors.Is(err, ErrLimitNotFound) {
			continue
		}
		return l, wrapEnsure(name, err)
	}
	return nil, wrapEnsure(name, err)
}

func wrapEnsure(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("ensure limit %q: %w", name, err)
}
