package allot

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"time"
)

// TagLimitKind says what a tag limit limits: task runs by tag, or flow runs
// by label.
type TagLimitKind string

// The kinds of tag limits.
const (
	// KindTag is the limit of a tag: how many task runs with that tag may
	// run at once (Prefect's v1 concurrency limits).
	KindTag TagLimitKind = "tag"
	// KindLabel is the limit of a label: how many flow runs with that
	// label may run at once (an allot extension).
	KindLabel TagLimitKind = "label"
)

// LimitPrefix returns what starts the names of the limits of this kind on
// the server: "tag:" or "label:". The limit of the tag "database" is the
// limit named "tag:database".
func (k TagLimitKind) LimitPrefix() string { return string(k) + ":" }

// HolderType returns the holder kind (Identity.Kind) of the runs that hold
// limits of this kind: "task_run" or "flow_run".
func (k TagLimitKind) HolderType() string {
	if k == KindLabel {
		return "flow_run"
	}
	return "task_run"
}

// TagLimit is the limit of a tag or a label (Kind): how many task runs with
// that tag, or flow runs with that label, may run at once. It is Prefect's
// v1 ConcurrencyLimit, plus allot's extensions. On the server it is the
// limit named Kind.LimitPrefix() + Name.
//
// Its JSON is the server's: the name is the field "tag" or "label".
type TagLimit struct {
	// Kind is KindTag or KindLabel.
	Kind    TagLimitKind
	ID      string
	Created time.Time
	Updated time.Time
	// Name is the tag or the label.
	Name string
	// ConcurrencyLimit is the number of slots.
	ConcurrencyLimit int
	// ActiveSlots are the ids of the runs holding a slot.
	ActiveSlots []string
	// Active is false for a limit that limits nothing.
	Active       bool
	FencingToken uint64
	// Waiting is the number of runs in line for a slot.
	Waiting int
	// Holders are the leases holding slots, with their holders and since
	// when they hold them.
	Holders []Holding
}

// tagLimitJSON is a TagLimit as the server writes it: Tag or Label is set.
type tagLimitJSON struct {
	ID               string    `json:"id"`
	Created          time.Time `json:"created"`
	Updated          time.Time `json:"updated"`
	Tag              *string   `json:"tag,omitempty"`
	Label            *string   `json:"label,omitempty"`
	ConcurrencyLimit int       `json:"concurrency_limit"`
	ActiveSlots      []string  `json:"active_slots"`
	Active           bool      `json:"active"`
	FencingToken     uint64    `json:"fencing_token"`
	Waiting          int       `json:"waiting"`
	Holders          []Holding `json:"holders"`
}

// MarshalJSON writes the limit as the server does: its name under "tag" or
// "label", after its Kind.
func (l TagLimit) MarshalJSON() ([]byte, error) {
	j := tagLimitJSON{ID: l.ID, Created: l.Created, Updated: l.Updated, ConcurrencyLimit: l.ConcurrencyLimit,
		ActiveSlots: l.ActiveSlots, Active: l.Active, FencingToken: l.FencingToken, Waiting: l.Waiting, Holders: l.Holders}
	name := l.Name
	if l.Kind == KindLabel {
		j.Label = &name
	} else {
		j.Tag = &name
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a limit as the server writes it: one with a "label"
// is of KindLabel, any other of KindTag.
func (l *TagLimit) UnmarshalJSON(b []byte) error {
	var j tagLimitJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = TagLimit{Kind: KindTag, ID: j.ID, Created: j.Created, Updated: j.Updated, ConcurrencyLimit: j.ConcurrencyLimit,
		ActiveSlots: j.ActiveSlots, Active: j.Active, FencingToken: j.FencingToken, Waiting: j.Waiting, Holders: j.Holders}
	switch {
	case j.Label != nil:
		l.Kind, l.Name = KindLabel, *j.Label
	case j.Tag != nil:
		l.Name = *j.Tag
	}
	return nil
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

// TagLimits is the API of the limits of one kind: Client.Tags for tags'
// limits (under /api/concurrency_limits), Client.Labels for labels' (under
// /api/label_limits). Get one from the Client; it is as safe for
// concurrent use as the Client.
type TagLimits struct {
	c    *Client
	kind TagLimitKind
	base string // the routes' prefix under the API's URL
}

// Tags returns the API of tags' limits, which bound task runs.
func (c *Client) Tags() TagLimits {
	return TagLimits{c: c, kind: KindTag, base: "/concurrency_limits"}
}

// Labels returns the API of labels' limits, which bound flow runs.
func (c *Client) Labels() TagLimits {
	return TagLimits{c: c, kind: KindLabel, base: "/label_limits"}
}

// Kind returns the kind of the limits t manages.
func (t TagLimits) Kind() TagLimitKind { return t.kind }

// path is the route of the limit of name: the kind ("tag" or "label") is
// also its path segment.
func (t TagLimits) path(name string) string {
	return t.base + "/" + string(t.kind) + "/" + url.PathEscape(name)
}

// Create creates the limit of a tag (or label) with limit slots, or sets
// the number of slots of its limit if it has one. A name follows the rules
// of a run's tags: a name with '*' (not a tag, but a template's pattern) is
// an *APIError with CodeInvalidField on the field "tag" (or "label"),
// matching ErrInvalid.
func (t TagLimits) Create(ctx context.Context, name string, limit int) (*TagLimit, error) {
	var out TagLimit
	err := t.c.do(ctx, request{method: http.MethodPost, path: t.base + "/",
		body:   jsonBody(map[string]any{string(t.kind): name, "concurrency_limit": limit}),
		accept: []int{http.StatusCreated, http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("create %s limit %q: %w", t.kind, name, err)
	}
	out.Kind = t.kind
	return &out, nil
}

// Get returns the limit of a tag (or label), with the runs holding its
// slots. A name without a limit is an error matching ErrLimitNotFound (and
// ErrNotFound).
func (t TagLimits) Get(ctx context.Context, name string) (*TagLimit, error) {
	var out TagLimit
	err := t.c.do(ctx, request{method: http.MethodGet, path: t.path(name), accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("get %s limit %q: %w", t.kind, name, err)
	}
	out.Kind = t.kind
	return &out, nil
}

// List returns up to n limits (at most 200) ordered by name, from the
// offset-th on. All reads them all.
func (t TagLimits) List(ctx context.Context, offset, n int) ([]*TagLimit, error) {
	var out []*TagLimit
	err := t.c.do(ctx, request{method: http.MethodPost, path: t.base + "/filter",
		body:   jsonBody(map[string]int{"offset": offset, "limit": n}),
		accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("list %s limits: %w", t.kind, err)
	}
	for _, l := range out {
		l.Kind = t.kind
	}
	return out, nil
}

// All iterates over every limit of the kind, ordered by name, a page at a
// time, as Client.AllLimits does.
func (t TagLimits) All(ctx context.Context) iter.Seq2[*TagLimit, error] {
	return allPages(ctx, t.List)
}

// Reset revokes every lease on the limit of a tag (or label): the runs
// holding them are Crashed. Then it lets the runs in line take the freed
// slots, and gives a slot to each run id of slotOverride while one is
// free. The result says which overrides got one.
func (t TagLimits) Reset(ctx context.Context, name string, slotOverride []string) (*ResetResult, error) {
	if slotOverride == nil {
		slotOverride = []string{}
	}
	var out ResetResult
	err := t.c.do(ctx, request{method: http.MethodPost, path: t.path(name) + "/reset",
		body:   jsonBody(map[string][]string{"slot_override": slotOverride}),
		accept: []int{http.StatusOK}}, &out)
	if err != nil {
		return nil, fmt.Errorf("reset %s limit %q: %w", t.kind, name, err)
	}
	return &out, nil
}

// Delete deletes the limit of a tag (or label). Runs holding it go on, no
// longer limited by it.
func (t TagLimits) Delete(ctx context.Context, name string) error {
	err := t.c.do(ctx, request{method: http.MethodDelete, path: t.path(name),
		accept: []int{http.StatusOK, http.StatusNoContent}}, nil)
	if err != nil {
		return fmt.Errorf("delete %s limit %q: %w", t.kind, name, err)
	}
	return nil
}
