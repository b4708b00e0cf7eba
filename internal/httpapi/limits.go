package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// v2 is the prefix of Prefect 3's global concurrency limit routes.
const v2 = "/api/v2/concurrency_limits"

// limitRoutes are the routes of the v2 limits themselves.
func (h *handler) limitRoutes() []route {
	create := jsonOp(h, op[sema.LimitSpec, sema.LimitView]{status: http.StatusCreated, body: requiredBody, strict: true,
		decode: readLimitSpec, call: h.c.CreateLimit, encode: fullLimit})
	return []route{
		{"POST " + v2 + "/{$}", create},
		{"POST " + v2, create},
		{"POST " + v2 + "/filter", jsonOp(h, op[limitPage, limitList]{status: http.StatusOK, body: optionalBody,
			decode: readLimitPage, call: h.listLimits, encode: limitList.render})},
		{"POST " + v2 + "/delete", jsonOp(h, op[sema.DeleteMatch, deleteMatchingJSON]{status: http.StatusOK, body: requiredBody, strict: true,
			decode: readDeleteMatch, call: h.deleteMatching})},
		{"PUT " + v2 + "/{id_or_name}", jsonOp(h, op[sema.LimitEnsure, made[sema.LimitView]]{statusOf: made[sema.LimitView].status, body: requiredBody, strict: true,
			decode: readLimitEnsure, call: h.ensureLimit, encode: renderEnsured})},
		{"GET " + v2 + "/{id_or_name}", jsonOp(h, op[string, sema.LimitView]{status: http.StatusOK,
			decode: pathLimit, call: h.readLimit, encode: fullLimit})},
		{"PATCH " + v2 + "/{id_or_name}", jsonOp(h, op[limitPatch, sema.LimitView]{status: http.StatusNoContent, body: requiredBody, strict: true,
			decode: readLimitPatch, call: h.updateLimit})},
		{"DELETE " + v2 + "/{id_or_name}", jsonOp(h, op[string, sema.LimitView]{status: http.StatusNoContent,
			decode: pathLimit, call: h.c.DeleteLimit})},
	}
}

// pathLimit reads {id_or_name}: a UUID is an id, anything else a name.
func pathLimit(r *http.Request, _ *jsonbody.Body) (string, error) {
	return r.PathValue("id_or_name"), nil
}

func fullLimit(v sema.LimitView) any { return toLimitJSON(v, true) }

// readLimitSpec reads POST /v2/concurrency_limits/: Prefect's
// ConcurrencyLimitV2Create, unknown fields refused.
func readLimitSpec(_ *http.Request, b *jsonbody.Body) (sema.LimitSpec, error) {
	s := sema.LimitSpec{Active: true}
	b.Require("name", b.Str("name", &s.Name))
	b.Require("limit", b.Int("limit", &s.Limit, 0, sema.MaxSlots))
	b.Bool("active", &s.Active)
	b.Int("active_slots", &s.ActiveSlots, 0, sema.MaxSlots)
	b.Int("denied_slots", &s.DeniedSlots, 0, sema.MaxSlots)
	b.Number("slot_decay_per_second", &s.SlotDecayPerSecond, 0, sema.MaxDecay, false)
	var idle float64
	if b.Number("idle_seconds", &idle, 0, sema.MaxIdle.Seconds(), false) {
		d := idleDuration(idle)
		s.Idle = &d
	}
	return s, nil
}

// readLimitEnsure reads PUT /v2/concurrency_limits/{name} (the path is
// {id_or_name} as for the other methods, but PUT takes a name), an allot
// extension: {limit, active?, slot_decay_per_second?, idle_seconds?, name?}.
// A field left out keeps an existing limit's setting (and takes create's
// default for a new one); name, if given, must be the path's.
func readLimitEnsure(r *http.Request, b *jsonbody.Body) (sema.LimitEnsure, error) {
	e := sema.LimitEnsure{Name: r.PathValue("id_or_name")}
	var name string
	if b.Str("name", &name) && name != e.Name {
		b.Fail("name", "must be the name in the path, "+strconv.Quote(e.Name))
	}
	b.Require("limit", b.Int("limit", &e.Limit, 0, sema.MaxSlots))
	var (
		active bool
		decay  float64
		idle   float64
	)
	if b.Bool("active", &active) {
		e.Active = &active
	}
	if b.Number("slot_decay_per_second", &decay, 0, sema.MaxDecay, false) {
		e.SlotDecayPerSecond = &decay
	}
	if b.Number("idle_seconds", &idle, 0, sema.MaxIdle.Seconds(), false) {
		d := idleDuration(idle)
		e.Idle = &d
	}
	return e, nil
}

// ensureLimit ensures a limit: created, or found (and maybe changed).
func (h *handler) ensureLimit(ctx context.Context, e sema.LimitEnsure) (made[sema.LimitView], error) {
	return madeOf(h.c.EnsureLimit(ctx, e))
}

func renderEnsured(m made[sema.LimitView]) any { return toLimitJSON(m.v, true) }

func (h *handler) readLimit(ctx context.Context, ref string) (sema.LimitView, error) {
	return h.c.ReadLimit(ctx, ref, sema.Full)
}

// limitPage is POST /v2/concurrency_limits/filter's request: a page of
// limits by name, in summary or in full.
type limitPage struct {
	limit, offset int
	detail        sema.Detail
}

func readLimitPage(_ *http.Request, b *jsonbody.Body) (limitPage, error) {
	var p limitPage
	p.limit, p.offset = readPage(b)
	detail := "summary"
	if b.Str("detail", &detail) && detail != "summary" && detail != "full" {
		b.Fail("detail", `must be "summary" or "full"`)
	}
	p.detail = sema.Summary
	if detail == "full" {
		p.detail = sema.Full
	}
	return p, nil
}

// limitList is a page of limits, in the detail asked for.
type limitList struct {
	views []sema.LimitView
	full  bool
}

func (h *handler) listLimits(ctx context.Context, p limitPage) (limitList, error) {
	vs, err := h.c.ListLimits(ctx, "", p.offset, p.limit, p.detail)
	return limitList{vs, p.detail == sema.Full}, err
}

func (l limitList) render() any {
	out := make([]limitJSON, len(l.views))
	for i, v := range l.views {
		out[i] = toLimitJSON(v, l.full)
	}
	return out
}

// limitPatch is PATCH /v2/concurrency_limits/{id_or_name}: only the fields
// present change; unknown fields are refused.
type limitPatch struct {
	ref   string
	patch sema.LimitPatch
}

func readLimitPatch(r *http.Request, b *jsonbody.Body) (limitPatch, error) {
	var (
		p                     sema.LimitPatch
		name                  string
		limit, active, denied int
		enabled               bool
		decay                 float64
	)
	if b.Bool("active", &enabled) {
		p.Active = &enabled
	}
	if b.Str("name", &name) {
		p.Name = &name
	}
	if b.Int("limit", &limit, 0, sema.MaxSlots) {
		p.Limit = &limit
	}
	if b.Int("active_slots", &active, 0, sema.MaxSlots) {
		p.ActiveSlots = &active
	}
	if b.Int("denied_slots", &denied, 0, sema.MaxSlots) {
		p.DeniedSlots = &denied
	}
	if b.Number("slot_decay_per_second", &decay, 0, sema.MaxDecay, false) {
		p.SlotDecayPerSecond = &decay
	}
	var idle float64
	if b.Number("idle_seconds", &idle, 0, sema.MaxIdle.Seconds(), false) {
		d := idleDuration(idle)
		p.Idle = &d
	}
	return limitPatch{ref: r.PathValue("id_or_name"), patch: p}, nil
}

func (h *handler) updateLimit(ctx context.Context, p limitPatch) (sema.LimitView, error) {
	return h.c.UpdateLimit(ctx, p.ref, p.patch)
}

// idleDuration is a template's idle_seconds as a duration.
func idleDuration(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second))
}

// deleteMatchingJSON answers a bulk delete.
type deleteMatchingJSON struct {
	// Matched is the number of limits the pattern selected; Deleted is
	// Matched unless dry_run was set, then 0.
	Matched int `json:"matched"`
	Deleted int `json:"deleted"`
}

// readDeleteMatch reads POST /v2/concurrency_limits/delete, an allot
// extension: delete every limit whose name matches a pattern.
func readDeleteMatch(_ *http.Request, b *jsonbody.Body) (sema.DeleteMatch, error) {
	var d sema.DeleteMatch
	b.Str("pattern", &d.Pattern)
	b.Bool("all", &d.All)
	b.Bool("templates", &d.Templates)
	b.Bool("dry_run", &d.DryRun)
	return d, nil
}

func (h *handler) deleteMatching(ctx context.Context, d sema.DeleteMatch) (deleteMatchingJSON, error) {
	n, err := h.c.DeleteMatching(ctx, d)
	if err != nil {
		return deleteMatchingJSON{}, err
	}
	out := deleteMatchingJSON{Matched: n, Deleted: n}
	if d.DryRun {
		out.Deleted = 0
	}
	return out, nil
}
