package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// tagLimitAPI is Prefect's v1 tag-limit API for one kind of run: task runs'
// tags under /api/concurrency_limits (Prefect's own paths and shapes), and
// flow runs' labels under /api/label_limits (the same API with "label" for
// "tag" and flow_run_id for task_run_id). A tag limit is the limit
// "tag:{tag}", a label limit "label:{label}"; the handlers only translate.
type tagLimitAPI struct {
	h    *handler
	kind sema.RunKind
	// base is the routes' prefix; key the field and path segment that
	// names a limit ("tag" or "label"); holderField the request field
	// that names the holder ("task_run_id" or "flow_run_id").
	base, key, holderField string
}

func newTagLimitAPI(h *handler, kind sema.RunKind) *tagLimitAPI {
	if kind == sema.KindFlow {
		return &tagLimitAPI{h: h, kind: kind, base: "/api/label_limits", key: "label", holderField: "flow_run_id"}
	}
	return &tagLimitAPI{h: h, kind: kind, base: "/api/concurrency_limits", key: "tag", holderField: "task_run_id"}
}

// routes are the API's routes.
func (a *tagLimitAPI) routes() []route {
	h := a.h
	byKey := a.base + "/" + a.key + "/{key}"
	create := jsonOp(h, op[tagLimitSpec, made[sema.LimitView]]{statusOf: made[sema.LimitView].status, body: requiredBody, strict: true,
		decode: a.readSpec, call: a.upsert, encode: a.renderUpserted, errs: a.v1})
	read := jsonOp(h, op[coord.TagLimitRef, sema.LimitView]{status: http.StatusOK,
		decode: a.ref, call: a.read, encode: a.render, errs: a.v1})
	// 200 with null, as Prefect answers.
	del := jsonOp(h, op[coord.TagLimitRef, any]{status: http.StatusOK,
		decode: a.ref, call: a.delete, errs: a.v1})
	return []route{
		{"POST " + a.base + "/{$}", create},
		{"POST " + a.base, create},
		{"POST " + a.base + "/filter", jsonOp(h, op[tagLimitPage, []sema.LimitView]{status: http.StatusOK, body: optionalBody,
			decode: readTagLimitPage, call: a.list, encode: a.renderList, errs: a.v1})},
		{"POST " + a.base + "/increment", jsonOp(h, op[holderRequest, []sema.LimitRef]{status: http.StatusOK, body: requiredBody,
			decode: a.readHolderRequest, call: a.increment, encode: a.bare, errs: a.v1})},
		{"POST " + a.base + "/decrement", jsonOp(h, op[holderRequest, []sema.LimitRef]{status: http.StatusOK, body: requiredBody,
			decode: a.readHolderRequest, call: a.decrement, encode: a.bare, errs: a.v1})},
		{"GET " + a.base + "/{id}", read},
		{"DELETE " + a.base + "/{id}", del},
		{"GET " + byKey, read},
		{"DELETE " + byKey, del},
		{"POST " + byKey + "/reset", jsonOp(h, op[resetRequest, coord.ResetResult]{status: http.StatusOK, body: optionalBody,
			decode: a.readReset, call: a.reset, encode: renderReset, errs: a.v1})},
	}
}

// tagLimitJSON is Prefect's v1 ConcurrencyLimit (tag, concurrency_limit,
// active_slots = the holders' run ids) plus allot's extensions. A label
// limit has label where a tag limit has tag.
type tagLimitJSON struct {
	ID               uuid.UUID    `json:"id"`
	Created          stamp        `json:"created"`
	Updated          stamp        `json:"updated"`
	Tag              *string      `json:"tag,omitempty"`
	Label            *string      `json:"label,omitempty"`
	ConcurrencyLimit int          `json:"concurrency_limit"`
	ActiveSlots      []string     `json:"active_slots"`
	Active           bool         `json:"active"`
	FencingToken     uint64       `json:"fencing_token"`
	Waiting          int          `json:"waiting"`
	Holders          []holderJSON `json:"holders"`
}

func (a *tagLimitAPI) toJSON(v sema.LimitView) tagLimitJSON {
	key := strings.TrimPrefix(v.Name, a.kind.LimitPrefix())
	out := tagLimitJSON{ID: v.ID, Created: stamp(v.Created), Updated: stamp(v.Updated), ConcurrencyLimit: v.Limit.Limit,
		ActiveSlots: []string{}, Active: v.Active, FencingToken: v.FencingToken, Waiting: v.Waiting,
		Holders: make([]holderJSON, len(v.Holders))}
	if a.kind == sema.KindFlow {
		out.Label = &key
	} else {
		out.Tag = &key
	}
	// One source of truth: the runs that hold a slot are the holders of
	// the limit's live leases.
	for i, h := range v.Holders {
		out.Holders[i] = holderJSON{LeaseID: h.LeaseID, Holder: holderPtr(h.Holder), Slots: h.Slots,
			Since: stamp(h.Since), Expires: stamp(h.Expires), FencingToken: h.FencingToken}
		if h.Holder.Type == a.kind.HolderType() && !slices.Contains(out.ActiveSlots, h.Holder.ID) {
			out.ActiveSlots = append(out.ActiveSlots, h.Holder.ID)
		}
	}
	return out
}

func (a *tagLimitAPI) render(v sema.LimitView) any { return a.toJSON(v) }

// ref reads the limit a request names: by {id} (a UUID, as Prefect's path
// converter requires) or by {key}.
func (a *tagLimitAPI) ref(r *http.Request, _ *jsonbody.Body) (coord.TagLimitRef, error) {
	if key := r.PathValue("key"); key != "" {
		return coord.TagLimitRef{Key: key}, nil
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return coord.TagLimitRef{}, sema.ErrLimitNotFound
	}
	return coord.TagLimitRef{ID: id}, nil
}

// v1 gives a limit not found Prefect's v1 text.
func (a *tagLimitAPI) v1(err error) error {
	if errors.Is(err, sema.ErrLimitNotFound) {
		return &requestError{Code: codeLimitNotFound, Detail: detailTagLimitNotFound}
	}
	return err
}

// tagLimitSpec is POST {base}/: {tag, concurrency_limit}; 201 for a new
// limit, 200 when it existed (its limit is set).
type tagLimitSpec struct {
	key   string
	limit int
}

func (a *tagLimitAPI) readSpec(_ *http.Request, b *jsonbody.Body) (tagLimitSpec, error) {
	var s tagLimitSpec
	b.Require(a.key, b.Str(a.key, &s.key))
	b.Require("concurrency_limit", b.Int("concurrency_limit", &s.limit, 0, sema.MaxSlots))
	return s, nil
}

// upsert creates a tag limit, or updates it.
func (a *tagLimitAPI) upsert(ctx context.Context, s tagLimitSpec) (made[sema.LimitView], error) {
	return madeOf(a.h.c.UpsertTagLimit(ctx, a.kind, s.key, s.limit))
}

func (a *tagLimitAPI) renderUpserted(u made[sema.LimitView]) any { return a.toJSON(u.v) }

// read is GET {base}/{id} and GET {base}/tag/{tag}.
func (a *tagLimitAPI) read(ctx context.Context, ref coord.TagLimitRef) (sema.LimitView, error) {
	return a.h.c.ReadTagLimit(ctx, a.kind, ref)
}

// tagLimitPage is POST {base}/filter {limit, offset}: a page of these
// limits only, by name (Prefect pages over every limit and can crowd them
// out).
type tagLimitPage struct{ limit, offset int }

func readTagLimitPage(_ *http.Request, b *jsonbody.Body) (tagLimitPage, error) {
	limit, offset := readPage(b)
	return tagLimitPage{limit, offset}, nil
}

func (a *tagLimitAPI) list(ctx context.Context, p tagLimitPage) ([]sema.LimitView, error) {
	return a.h.c.ListTagLimits(ctx, a.kind, p.offset, p.limit)
}

func (a *tagLimitAPI) renderList(vs []sema.LimitView) any {
	out := make([]tagLimitJSON, len(vs))
	for i, v := range vs {
		out[i] = a.toJSON(v)
	}
	return out
}

// readPage reads filter's limit (0 to 200, default 200) and offset, with
// Prefect's texts.
func readPage(b *jsonbody.Body) (limit, offset int) {
	limit = maxFilterLimit
	if b.Int("limit", &limit, math.MinInt64, math.MaxInt64) {
		switch {
		case limit < 0:
			b.Fail("limit", "Invalid limit: must be greater than or equal to 0.")
		case limit > maxFilterLimit:
			b.Fail("limit", "Invalid limit: must be less than or equal to 200.")
		}
	}
	b.Int("offset", &offset, 0, 1<<31-1)
	return limit, offset
}

// resetJSON is what a reset did: an allot extension (Prefect answers null).
type resetJSON struct {
	Revoked int      `json:"revoked"`
	Granted []string `json:"granted"`
	Refused []string `json:"refused"`
}

// resetRequest is POST {base}/tag/{tag}/reset {slot_override?}: every
// lease on the limit is revoked, then each slot_override id gets a slot
// while one is free.
type resetRequest struct {
	ref coord.TagLimitRef
	ids []string
}

func (a *tagLimitAPI) readReset(r *http.Request, b *jsonbody.Body) (resetRequest, error) {
	ref, err := a.ref(r, b)
	if err != nil {
		return resetRequest{}, err
	}
	var ids []string
	if b.StrArray("slot_override", &ids, 0, maxNames) {
		for i, id := range ids {
			u, err := uuid.Parse(id)
			if err != nil {
				b.Fail("slot_override", "item "+strconv.Itoa(i)+" must be a UUID")
				break
			}
			ids[i] = u.String()
		}
	}
	return resetRequest{ref, ids}, nil
}

func (a *tagLimitAPI) reset(ctx context.Context, req resetRequest) (coord.ResetResult, error) {
	return a.h.c.ResetTagLimit(ctx, a.kind, req.ref, req.ids)
}

func renderReset(res coord.ResetResult) any {
	out := resetJSON{Revoked: res.Revoked, Granted: res.Granted, Refused: res.Refused}
	if out.Granted == nil {
		out.Granted = []string{}
	}
	if out.Refused == nil {
		out.Refused = []string{}
	}
	return out
}

// delete is DELETE {base}/{id} and DELETE {base}/tag/{tag}: 200 with
// null, as Prefect answers.
func (a *tagLimitAPI) delete(ctx context.Context, ref coord.TagLimitRef) (any, error) {
	return nil, a.h.c.DeleteTagLimit(ctx, a.kind, ref)
}

// holderRequest is {names, task_run_id} of increment and decrement.
type holderRequest struct {
	keys   []string
	holder string
}

func (a *tagLimitAPI) readHolderRequest(_ *http.Request, b *jsonbody.Body) (holderRequest, error) {
	var keys []string
	b.Require("names", b.Strs("names", &keys, maxNames))
	var id uuid.UUID
	b.Require(a.holderField, b.UUID(a.holderField, &id))
	// Prefect's client sends occupancy_seconds with decrement; ignored.
	b.Number("occupancy_seconds", new(float64), 0, maxOccupancy, false)
	return holderRequest{keys, id.String()}, nil
}

// bare names limits by their keys, as Prefect's v1 increment does (and,
// unlike Prefect, decrement too).
func (a *tagLimitAPI) bare(refs []sema.LimitRef) any {
	out := toMinimal(refs)
	for i := range out {
		out[i].Name = strings.TrimPrefix(out[i].Name, a.kind.LimitPrefix())
	}
	return out
}

// increment is POST {base}/increment {names, task_run_id}: one slot of
// every limited tag at once, held by the task run until decrement (or for
// V1LeaseDuration). Unknown tags are skipped. A refusal has Prefect's v1
// texts.
func (a *tagLimitAPI) increment(ctx context.Context, req holderRequest) ([]sema.LimitRef, error) {
	refs, err := a.h.c.IncrementTagLimits(ctx, a.kind, req.keys, req.holder)
	var (
		le *sema.LockedError
		ne *sema.NeverError
	)
	switch {
	case errors.As(err, &le):
		full := le.Full
		if len(full) == 0 {
			full = []string{le.Blocking}
		}
		key := strings.TrimPrefix(full[0], a.kind.LimitPrefix())
		s := retryAfterSeconds(le)
		err = &tagLockedError{code: codeLocked, detail: "Concurrency limit for the " + key + " " + a.key + " has been reached",
			limits: full, retryAfter: &s}
	case errors.As(err, &ne) && ne.Reason == "slots_exceed_limit":
		key := strings.TrimPrefix(ne.Names[0], a.kind.LimitPrefix())
		err = &tagLockedError{code: codeLimitZero, detail: sema.ZeroLimitDetail(a.kind, key), limits: ne.Names}
	}
	return refs, err
}

// decrement is POST {base}/decrement {names, task_run_id}: releases the
// task run's leases on those tags.
func (a *tagLimitAPI) decrement(ctx context.Context, req holderRequest) ([]sema.LimitRef, error) {
	return a.h.c.DecrementTagLimits(ctx, a.kind, req.keys, req.holder)
}
