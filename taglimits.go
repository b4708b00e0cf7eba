package allot

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// TagLimit is the limit of a tag: how many task runs with that tag may run
// at once (Prefect's v1 ConcurrencyLimit, plus allot's extensions). On the
// server it is the limit named "tag:" + Tag.
type TagLimit struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Tag     string    `json:"tag"`
	// ConcurrencyLimit is the number of slots.
	ConcurrencyLimit int `json:"concurrency_limit"`
	// ActiveSlots are the ids of the task runs holding a slot.
	ActiveSlots []string `json:"active_slots"`
	// Active is false for a limit that limits nothing.
	Active       bool   `json:"active"`
	FencingToken uint64 `json:"fencing_token"`
	// Waiting is the number of runs in line for a slot.
	Waiting int `json:"waiting"`
	// Holders are the leases holding slots, with their holders and since
	// when they hold them.
	Holders []Holding `json:"holders"`
}

// LabelLimit is the limit of a label: how many flow runs with that label
// may run at once. On the server it is the limit named "label:" + Label.
type LabelLimit struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Label   string    `json:"label"`
	// ConcurrencyLimit is the number of slots.
	ConcurrencyLimit int `json:"concurrency_limit"`
	// ActiveSlots are the ids of the flow runs holding a slot.
	ActiveSlots []string `json:"active_slots"`
	// Active is false for a limit that limits nothing.
	Active       bool   `json:"active"`
	FencingToken uint64 `json:"fencing_token"`
	// Waiting is the number of runs in line for a slot.
	Waiting int `json:"waiting"`
	// Holders are the leases holding slots, with their holders and since
	// when they hold them.
	Holders []Holding `json:"holders"`
}

// ResetResult is what resetting a tag or label limit did.
type ResetResult struct {
	// Revoked is the number of leases revoked; their runs are Crashed.
	Revoked int `json:"revoked"`
	// Granted are the slot overrides that got a slot, Refused those that
	// did not fit.
	Granted []string `json:"granted"`
	Refused []string `json:"refused"`
}

// tagLimitAPI is one of the v1-style limit APIs: tags under
// /api/concurrency_limits, labels under /api/label_limits. The calls of
// both share it.
type tagLimitAPI struct {
	base  string // the routes' prefix under the API's URL
	field string // the field and path segment naming a limit
}

func tagAPI() tagLimitAPI   { return tagLimitAPI{base: "/concurrency_limits", field: "tag"} }
func labelAPI() tagLimitAPI { return tagLimitAPI{base: "/label_limits", field: "label"} }

func (a tagLimitAPI) keyPath(key string) string {
	return a.base + "/" + a.field + "/" + url.PathEscape(key)
}

func tagLimitCreate[T any](ctx context.Context, c *Client, a tagLimitAPI, key string, limit int) (*T, error) {
	var out T
	err := c.do(ctx, request{method: http.MethodPost, path: a.base + "/",
		body:   jsonBody(map[string]any{a.field: key, "concurrency_limit": limit}),
		accept: []int{http.StatusCreated, http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("create %s limit %q: %w", a.field, key, err)
	}
	return &out, nil
}

func tagLimitGet[T any](ctx context.Context, c *Client, a tagLimitAPI, key string) (*T, error) {
	var out T
	err := c.do(ctx, request{method: http.MethodGet, path: a.keyPath(key), accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("get %s limit %q: %w", a.field, key, err)
	}
	return &out, nil
}

func tagLimitList[T any](ctx context.Context, c *Client, a tagLimitAPI, offset, n int) ([]*T, error) {
	var out []*T
	err := c.do(ctx, request{method: http.MethodPost, path: a.base + "/filter",
		body:   jsonBody(map[string]int{"offset": offset, "limit": n}),
		accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("list %s limits: %w", a.field, err)
	}
	return out, nil
}

func (a tagLimitAPI) reset(ctx context.Context, c *Client, key string, slotOverride []string) (*ResetResult, error) {
	if slotOverride == nil {
		slotOverride = []string{}
	}
	var out ResetResult
	err := c.do(ctx, request{method: http.MethodPost, path: a.keyPath(key) + "/reset",
		body:   jsonBody(map[string][]string{"slot_override": slotOverride}),
		accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("reset %s limit %q: %w", a.field, key, err)
	}
	return &out, nil
}

func (a tagLimitAPI) delete(ctx context.Context, c *Client, key string) error {
	err := c.do(ctx, request{method: http.MethodDelete, path: a.keyPath(key),
		accept: []int{http.StatusOK, http.StatusNoContent}}, nil)
	if err != nil {
		return fmt.Errorf("delete %s limit %q: %w", a.field, key, err)
	}
	return nil
}

// CreateTagLimit creates the limit of a tag with limit slots, or sets the
// number of slots of the tag's limit if it has one. A tag follows the rules
// of a run's tags: a tag with '*' (not a tag, but a template's pattern) is
// an *APIError with CodeInvalidField on field "tag", matching ErrInvalid.
func (c *Client) CreateTagLimit(ctx context.Context, tag string, limit int) (*TagLimit, error) {
	return tagLimitCreate[TagLimit](ctx, c, tagAPI(), tag, limit)
}

// GetTagLimit returns the limit of a tag, with the task runs holding its
// slots. A tag without a limit is an error matching ErrLimitNotFound (and
// ErrNotFound).
func (c *Client) GetTagLimit(ctx context.Context, tag string) (*TagLimit, error) {
	return tagLimitGet[TagLimit](ctx, c, tagAPI(), tag)
}

// ListTagLimits returns up to n limits of tags (at most 200) ordered by
// tag, from the offset-th on.
func (c *Client) ListTagLimits(ctx context.Context, offset, n int) ([]*TagLimit, error) {
	return tagLimitList[TagLimit](ctx, c, tagAPI(), offset, n)
}

// ResetTagLimit revokes every lease on the limit of a tag (the runs
// holding them are Crashed), lets the runs in line take the freed slots,
// then gives a slot to each id of slotOverride while one is free. The
// result says which overrides got one.
func (c *Client) ResetTagLimit(ctx context.Context, tag string, slotOverride []string) (*ResetResult, error) {
	return tagAPI().reset(ctx, c, tag, slotOverride)
}

// DeleteTagLimit deletes the limit of a tag. Runs holding it go on, no
// longer limited by it.
func (c *Client) DeleteTagLimit(ctx context.Context, tag string) error {
	return tagAPI().delete(ctx, c, tag)
}

// CreateLabelLimit creates the limit of a label with limit slots, or sets
// the number of slots of the label's limit if it has one. A label with '*'
// is refused as CreateTagLimit refuses such a tag.
func (c *Client) CreateLabelLimit(ctx context.Context, label string, limit int) (*LabelLimit, error) {
	return tagLimitCreate[LabelLimit](ctx, c, labelAPI(), label, limit)
}

// GetLabelLimit returns the limit of a label, with the flow runs holding
// its slots. A label without a limit is an error matching
// ErrLimitNotFound (and ErrNotFound).
func (c *Client) GetLabelLimit(ctx context.Context, label string) (*LabelLimit, error) {
	return tagLimitGet[LabelLimit](ctx, c, labelAPI(), label)
}

// ListLabelLimits returns up to n limits of labels (at most 200) ordered
// by label, from the offset-th on.
func (c *Client) ListLabelLimits(ctx context.Context, offset, n int) ([]*LabelLimit, error) {
	return tagLimitList[LabelLimit](ctx, c, labelAPI(), offset, n)
}

// ResetLabelLimit is ResetTagLimit for the limit of a label.
func (c *Client) ResetLabelLimit(ctx context.Context, label string, slotOverride []string) (*ResetResult, error) {
	return labelAPI().reset(ctx, c, label, slotOverride)
}

// DeleteLabelLimit deletes the limit of a label. Runs holding it go on,
// no longer limited by it.
func (c *Client) DeleteLabelLimit(ctx context.Context, label string) error {
	return labelAPI().delete(ctx, c, label)
}
