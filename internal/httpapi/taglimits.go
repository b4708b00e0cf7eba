package httpapi

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
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

// routes registers the API's routes on mux.
func (a *tagLimitAPI) routes(mux *http.ServeMux) {
	byKey := a.base + "/" + a.key + "/{key}"
	for _, r := range []struct {
		pattern string
		fn      http.HandlerFunc
	}{
		{"POST " + a.base + "/{$}", a.create},
		{"POST " + a.base, a.create},
		{"POST " + a.base + "/filter", a.filter},
		{"POST " + a.base + "/increment", a.increment},
		{"POST " + a.base + "/decrement", a.decrement},
		{"GET " + a.base + "/{id}", a.read},
		{"DELETE " + a.base + "/{id}", a.delete},
		{"GET " + byKey, a.read},
		{"DELETE " + byKey, a.delete},
		{"POST " + byKey + "/reset", a.reset},
	} {
		mux.HandleFunc(r.pattern, r.fn)
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

// ref reads the limit a request names: by {id} (a UUID, as Prefect's path
// converter requires) or by {key}.
func (a *tagLimitAPI) ref(r *http.Request) (coord.TagLimitRef, error) {
	if key := r.PathValue("key"); key != "" {
		return coord.TagLimitRef{Key: key}, nil
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return coord.TagLimitRef{}, sema.ErrLimitNotFound
	}
	return coord.TagLimitRef{ID: id}, nil
}

// fail answers err, with Prefect's v1 text for a limit not found.
func (a *tagLimitAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, sema.ErrLimitNotFound) {
		err = &requestError{Status: http.StatusNotFound, Code: "limit_not_found", Detail: detailTagLimitNotFound}
	}
	a.h.writeProblem(w, r, err)
}

// create is POST {base}/: {tag, concurrency_limit}; 201 for a new limit,
// 200 when it existed (its limit is set).
func (a *tagLimitAPI) create(w http.ResponseWriter, r *http.Request) {
	b, err := a.h.readBody(w, r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var key string
	var limit int
	b.require(a.key, b.str(a.key, &key))
	b.require("concurrency_limit", b.integer("concurrency_limit", &limit, 0, sema.MaxSlots))
	if err := b.finish(true); err != nil {
		a.fail(w, r, err)
		return
	}
	v, created, err := a.h.c.UpsertTagLimit(r.Context(), a.kind, key, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, a.toJSON(v))
}

// read is GET {base}/{id} and GET {base}/tag/{tag}.
func (a *tagLimitAPI) read(w http.ResponseWriter, r *http.Request) {
	ref, err := a.ref(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.h.c.ReadTagLimit(r.Context(), a.kind, ref)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.toJSON(v))
}

// filter is POST {base}/filter {limit, offset}: a page of these limits
// only, by name (Prefect pages over every limit and can crowd them out).
func (a *tagLimitAPI) filter(w http.ResponseWriter, r *http.Request) {
	b, err := a.h.readBody(w, r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, offset := readPage(b)
	if err := b.finish(false); err != nil {
		a.fail(w, r, err)
		return
	}
	vs, err := a.h.c.ListTagLimits(r.Context(), a.kind, offset, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]tagLimitJSON, len(vs))
	for i, v := range vs {
		out[i] = a.toJSON(v)
	}
	writeJSON(w, http.StatusOK, out)
}

// readPage reads filter's limit (0 to 200, default 200) and offset, with
// Prefect's texts.
func readPage(b *body) (limit, offset int) {
	limit = maxFilterLimit
	if b.integer("limit", &limit, math.MinInt64, math.MaxInt64) {
		switch {
		case limit < 0:
			b.fail("limit", "Invalid limit: must be greater than or equal to 0.")
		case limit > maxFilterLimit:
			b.fail("limit", "Invalid limit: must be less than or equal to 200.")
		}
	}
	b.integer("offset", &offset, 0, 1<<31-1)
	return limit, offset
}

// resetJSON is what a reset did: an allot extension (Prefect answers null).
type resetJSON struct {
	Revoked int      `json:"revoked"`
	Granted []string `json:"granted"`
	Refused []string `json:"refused"`
}

// reset is POST {base}/tag/{tag}/reset {slot_override?}: every lease on
// the limit is revoked, then each slot_override id gets a slot while one
// is free.
func (a *tagLimitAPI) reset(w http.ResponseWriter, r *http.Request) {
	ref, err := a.ref(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	b, err := a.h.readBody(w, r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var ids []string
	if b.strArray("slot_override", &ids, 0, maxNames) {
		for i, id := range ids {
			u, err := uuid.Parse(id)
			if err != nil {
				b.fail("slot_override", "item "+strconv.Itoa(i)+" must be a UUID")
				break
			}
			ids[i] = u.String()
		}
	}
	if err := b.finish(false); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.h.c.ResetTagLimit(r.Context(), a.kind, ref, ids)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := resetJSON{Revoked: res.Revoked, Granted: res.Granted, Refused: res.Refused}
	if out.Granted == nil {
		out.Granted = []string{}
	}
	if out.Refused == nil {
		out.Refused = []string{}
	}
	writeJSON(w, http.StatusOK, out)
}

// delete is DELETE {base}/{id} and DELETE {base}/tag/{tag}: 200 with
// null, as Prefect answers.
func (a *tagLimitAPI) delete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.ref(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.h.c.DeleteTagLimit(r.Context(), a.kind, ref); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nil)
}

// readHolderRequest reads {names, task_run_id} of increment and decrement.
func (a *tagLimitAPI) readHolderRequest(b *body) (keys []string, holder string) {
	b.require("names", b.strs("names", &keys, maxNames))
	var id uuid.UUID
	b.require(a.holderField, b.uuidField(a.holderField, &id))
	// Prefect's client sends occupancy_seconds with decrement; ignored.
	b.number("occupancy_seconds", new(float64), 0, maxOccupancy, false)
	return keys, id.String()
}

// bare names limits by their keys, as Prefect's v1 increment does (and,
// unlike Prefect, decrement too).
func (a *tagLimitAPI) bare(refs []sema.LimitRef) []minimalJSON {
	out := toMinimal(refs)
	for i := range out {
		out[i].Name = strings.TrimPrefix(out[i].Name, a.kind.LimitPrefix())
	}
	return out
}

// increment is POST {base}/increment {names, task_run_id}: one slot of
// every limited tag at once, held by the task run until decrement (or for
// V1LeaseDuration). Unknown tags are skipped.
func (a *tagLimitAPI) increment(w http.ResponseWriter, r *http.Request) {
	b, err := a.h.readBody(w, r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	keys, holder := a.readHolderRequest(b)
	if err := b.finish(false); err != nil {
		a.fail(w, r, err)
		return
	}
	refs, err := a.h.c.IncrementTagLimits(r.Context(), a.kind, keys, holder)
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
		err = &tagLockedError{code: "locked", detail: "Concurrency limit for the " + key + " " + a.key + " has been reached",
			limits: full, retryAfter: &s}
	case errors.As(err, &ne) && ne.Reason == "slots_exceed_limit":
		key := strings.TrimPrefix(ne.Names[0], a.kind.LimitPrefix())
		err = &tagLockedError{code: "limit_zero", detail: sema.ZeroLimitDetail(a.kind, key), limits: ne.Names}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.bare(refs))
}

// decrement is POST {base}/decrement {names, task_run_id}: releases the
// task run's leases on those tags.
func (a *tagLimitAPI) decrement(w http.ResponseWriter, r *http.Request) {
	b, err := a.h.readBody(w, r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	keys, holder := a.readHolderRequest(b)
	if err := b.finish(false); err != nil {
		a.fail(w, r, err)
		return
	}
	refs, err := a.h.c.DecrementTagLimits(r.Context(), a.kind, keys, holder)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.bare(refs))
}
