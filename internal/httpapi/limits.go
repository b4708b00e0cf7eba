package httpapi

import (
	"net/http"
	"time"

	"github.com/allot-dev/allot/internal/sema"
)

// createLimit is POST /v2/concurrency_limits/: Prefect's
// ConcurrencyLimitV2Create, unknown fields refused.
func (h *handler) createLimit(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	s := sema.LimitSpec{Active: true}
	b.require("name", b.str("name", &s.Name))
	b.require("limit", b.integer("limit", &s.Limit, 0, sema.MaxSlots))
	b.boolean("active", &s.Active)
	b.integer("active_slots", &s.ActiveSlots, 0, sema.MaxSlots)
	b.integer("denied_slots", &s.DeniedSlots, 0, sema.MaxSlots)
	b.number("slot_decay_per_second", &s.SlotDecayPerSecond, 0, sema.MaxDecay, false)
	var idle float64
	if b.number("idle_seconds", &idle, 0, sema.MaxIdle.Seconds(), false) {
		d := idleDuration(idle)
		s.Idle = &d
	}
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	v, err := h.c.CreateLimit(r.Context(), s)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toLimitJSON(v, true))
}

// readLimit is GET /v2/concurrency_limits/{id_or_name}: a UUID is an id,
// anything else a name.
func (h *handler) readLimit(w http.ResponseWriter, r *http.Request) {
	v, err := h.c.ReadLimit(r.Context(), r.PathValue("id_or_name"), sema.Full)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toLimitJSON(v, true))
}

// filterLimits is POST /v2/concurrency_limits/filter: a page of limits by
// name. The body is optional.
func (h *handler) filterLimits(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, true)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	limit, offset := readPage(b)
	detail := "summary"
	if b.str("detail", &detail) && detail != "summary" && detail != "full" {
		b.fail("detail", `must be "summary" or "full"`)
	}
	if err := b.finish(false); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	d := sema.Summary
	if detail == "full" {
		d = sema.Full
	}
	vs, err := h.c.ListLimits(r.Context(), "", offset, limit, d)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	out := make([]limitJSON, len(vs))
	for i, v := range vs {
		out[i] = toLimitJSON(v, d == sema.Full)
	}
	writeJSON(w, http.StatusOK, out)
}

// updateLimit is PATCH /v2/concurrency_limits/{id_or_name}: only the
// fields present change; unknown fields are refused.
func (h *handler) updateLimit(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var (
		p                     sema.LimitPatch
		name                  string
		limit, active, denied int
		enabled               bool
		decay                 float64
	)
	if b.boolean("active", &enabled) {
		p.Active = &enabled
	}
	if b.str("name", &name) {
		p.Name = &name
	}
	if b.integer("limit", &limit, 0, sema.MaxSlots) {
		p.Limit = &limit
	}
	if b.integer("active_slots", &active, 0, sema.MaxSlots) {
		p.ActiveSlots = &active
	}
	if b.integer("denied_slots", &denied, 0, sema.MaxSlots) {
		p.DeniedSlots = &denied
	}
	if b.number("slot_decay_per_second", &decay, 0, sema.MaxDecay, false) {
		p.SlotDecayPerSecond = &decay
	}
	var idle float64
	if b.number("idle_seconds", &idle, 0, sema.MaxIdle.Seconds(), false) {
		d := idleDuration(idle)
		p.Idle = &d
	}
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if _, err := h.c.UpdateLimit(r.Context(), r.PathValue("id_or_name"), p); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteLimit is DELETE /v2/concurrency_limits/{id_or_name}.
func (h *handler) deleteLimit(w http.ResponseWriter, r *http.Request) {
	if _, err := h.c.DeleteLimit(r.Context(), r.PathValue("id_or_name")); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
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

// deleteMatching is POST /v2/concurrency_limits/delete, an allot
// extension: delete every limit whose name matches a pattern.
func (h *handler) deleteMatching(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var d sema.DeleteMatch
	b.str("pattern", &d.Pattern)
	b.boolean("all", &d.All)
	b.boolean("templates", &d.Templates)
	b.boolean("dry_run", &d.DryRun)
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	n, err := h.c.DeleteMatching(r.Context(), d)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	out := deleteMatchingJSON{Matched: n, Deleted: n}
	if d.DryRun {
		out.Deleted = 0
	}
	writeJSON(w, http.StatusOK, out)
}
