package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// The runs API, an allot extension: task runs and flow runs whose tags (or
// labels) are limited by the tag (label) limits. A run is created Pending,
// asked to run (it is Running once every limited tag has a free slot, and
// AwaitingConcurrencySlot in line until then), kept alive by heartbeats
// while it runs, and ends in a final state that gives its slots back.

// maxRunWaitSeconds bounds a wait for a run; defaultRunWaitSeconds is the
// wait when none is given.
const (
	maxRunWaitSeconds     = maxTimeoutSeconds
	defaultRunWaitSeconds = 60
)

// stateJSON is one entry of a run's state history.
type stateJSON struct {
	State     string `json:"state"`
	Timestamp stamp  `json:"timestamp"`
	Message   string `json:"message"`
}

// runJSON is a run as the runs API returns it.
type runJSON struct {
	ID                   uuid.UUID   `json:"id"`
	Kind                 string      `json:"kind"`
	Name                 string      `json:"name"`
	Tags                 []string    `json:"tags"`
	Limits               []string    `json:"limits"`
	Slots                int         `json:"slots"`
	ParentID             *uuid.UUID  `json:"parent_id"`
	State                string      `json:"state"`
	StateHistory         []stateJSON `json:"state_history"`
	CollisionStrategy    string      `json:"collision_strategy"`
	LeaseDurationSeconds float64     `json:"lease_duration"`
	LeaseID              *uuid.UUID  `json:"lease_id"`
	FencingToken         uint64      `json:"fencing_token"`
	Created              stamp       `json:"created"`
	Updated              stamp       `json:"updated"`
}

func toRunJSON(r sema.Run) runJSON {
	out := runJSON{ID: r.ID, Kind: r.Kind.String(), Name: r.Name, Tags: r.Tags, Limits: r.Limits, Slots: max(r.Slots, 1),
		State:        r.State.String(),
		StateHistory: make([]stateJSON, len(r.History)), CollisionStrategy: r.CollisionStrategy.String(),
		LeaseDurationSeconds: r.LeaseDuration.Seconds(), FencingToken: r.Fence,
		Created: stamp(r.Created), Updated: stamp(r.Updated)}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if out.Limits == nil {
		out.Limits = []string{}
	}
	if r.ParentID != uuid.Nil {
		out.ParentID = &r.ParentID
	}
	if r.LeaseID != uuid.Nil {
		out.LeaseID = &r.LeaseID
	}
	for i, e := range r.History {
		out.StateHistory[i] = stateJSON{State: e.State.String(), Timestamp: stamp(e.At), Message: e.Message}
	}
	return out
}

// routes of the runs API.
func (h *handler) runRoutes(mux *http.ServeMux) {
	const base = "/api/runs"
	for _, r := range []struct {
		pattern string
		fn      http.HandlerFunc
	}{
		{"POST " + base + "/{$}", h.createRun},
		{"POST " + base, h.createRun},
		{"POST " + base + "/filter", h.filterRuns},
		{"GET " + base + "/{id}", h.readRun},
		{"POST " + base + "/{id}/set_state", h.setRunState},
		{"POST " + base + "/{id}/heartbeat", h.heartbeatRun},
		{"GET " + base + "/{id}/wait", h.waitRun},
		{"POST " + base + "/{id}/wait", h.waitRun},
	} {
		mux.HandleFunc(r.pattern, r.fn)
	}
}

func pathRunID(r *http.Request) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return uuid.Nil, invalidField("id", "must be a UUID")
	}
	return id, nil
}

// readKind reads a kind field.
func readKind(b *body, name string, dst *sema.RunKind) bool {
	var s string
	if !b.str(name, &s) {
		return false
	}
	k, ok := sema.ParseRunKind(s)
	if !ok {
		b.fail(name, `must be "task" or "flow"`)
		return false
	}
	*dst = k
	return true
}

// readState reads a state field, one of allowed.
func readState(b *body, name string, dst *sema.RunState, allowed func(sema.RunState) bool, want string) bool {
	var s string
	if !b.str(name, &s) {
		return false
	}
	st, ok := sema.ParseRunState(s)
	if !ok || !allowed(st) {
		b.fail(name, "must be "+want)
		return false
	}
	*dst = st
	return true
}

// createRun is POST /api/runs/: {kind, id?, name?, tags?, limits?,
// slots?, parent_id?, collision_strategy?, lease_duration?}; 201 with the
// Pending run.
func (h *handler) createRun(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var s sema.RunSpec
	b.uuidField("id", &s.ID)
	b.require("kind", readKind(b, "kind", &s.Kind))
	b.str("name", &s.Name)
	b.strArray("tags", &s.Tags, 0, sema.MaxRunTags)
	b.strArray("limits", &s.Limits, 0, sema.MaxRunTags)
	b.integer("slots", &s.Slots, 1, sema.MaxSlots)
	b.uuidField("parent_id", &s.ParentID)
	var strategy string
	if b.str("collision_strategy", &strategy) {
		c, ok := sema.ParseCollisionStrategy(strategy)
		if !ok || strategy == "" {
			b.fail("collision_strategy", `must be "enqueue" or "cancel_new"`)
		}
		s.CollisionStrategy = c
	}
	s.LeaseDuration, _ = readSeconds(b, "lease_duration", maxLeaseSeconds)
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	run, created, err := h.c.CreateRun(r.Context(), s)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK // the same run asked for again
	}
	writeJSON(w, status, toRunJSON(run))
}

// readRun is GET /api/runs/{id}.
func (h *handler) readRun(w http.ResponseWriter, r *http.Request) {
	id, err := pathRunID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	run, err := h.c.ReadRun(r.Context(), id)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRunJSON(run))
}

// filterRuns is POST /api/runs/filter {kind?, state?, tag?, flow_run_id?,
// limit?, offset?}: runs oldest first. flow_run_id selects the runs inside
// that run, at any depth.
func (h *handler) filterRuns(w http.ResponseWriter, r *http.Request) {
	b, err := h.readBody(w, r, true)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var f sema.RunFilter
	readKind(b, "kind", &f.Kind)
	readState(b, "state", &f.State, func(sema.RunState) bool { return true },
		"Pending, AwaitingConcurrencySlot, Running, Completed, Failed, Crashed or Cancelled")
	b.str("tag", &f.Tag)
	b.uuidField("flow_run_id", &f.Ancestor)
	limit, offset := readPage(b)
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	runs, err := h.c.ListRuns(r.Context(), f, offset, limit)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	out := make([]runJSON, len(runs))
	for i, run := range runs {
		out[i] = toRunJSON(run)
	}
	writeJSON(w, http.StatusOK, out)
}

func settable(s sema.RunState) bool { return s == sema.Running || s.IsFinal() }

const settableStates = "Running, Completed, Failed, Crashed or Cancelled"

// setRunState is POST /api/runs/{id}/set_state {state, message?}: 200
// with the run. Asking for Running answers with the run Running, or
// AwaitingConcurrencySlot in line (or Failed or Cancelled if it can never
// or may not wait); a change the run's state does not allow is 409.
func (h *handler) setRunState(w http.ResponseWriter, r *http.Request) {
	id, err := pathRunID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	b, err := h.readBody(w, r, false)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	var (
		state   sema.RunState
		message string
	)
	b.require("state", readState(b, "state", &state, settable, settableStates))
	b.str("message", &message)
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	run, err := h.c.SetRunState(r.Context(), id, state, message)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRunJSON(run))
}

// heartbeatRun is POST /api/runs/{id}/heartbeat: 204, renewing a Running
// run's lease; 410 once the run is in a final state (its lease expired,
// for one): its process must stop.
func (h *handler) heartbeatRun(w http.ResponseWriter, r *http.Request) {
	id, err := pathRunID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	b, err := h.readBody(w, r, true)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if err := b.finish(true); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	if _, err := h.c.HeartbeatRun(r.Context(), id); err != nil {
		h.writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// waitRun is GET /api/runs/{id}/wait?state=Running&timeout_seconds=60 (or
// POST with those fields in the body): it answers 200 with the run as soon
// as it reaches that state or any final state, or when the time is up with
// the run as it is; the caller looks at its state.
func (h *handler) waitRun(w http.ResponseWriter, r *http.Request) {
	id, err := pathRunID(r)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	until, timeout := sema.Running, float64(defaultRunWaitSeconds)
	if r.Method == http.MethodGet {
		err = readWaitQuery(r, &until, &timeout)
	} else {
		var b *body
		if b, err = h.readBody(w, r, true); err == nil {
			readState(b, "state", &until, settable, settableStates)
			b.number("timeout_seconds", &timeout, 0, maxRunWaitSeconds, false)
			err = b.finish(true)
		}
	}
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	d := time.Duration(timeout * float64(time.Second))
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + time.Minute))
	run, err := h.c.WaitRun(r.Context(), id, until, d)
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRunJSON(run))
}

// readWaitQuery reads wait's query parameters.
func readWaitQuery(r *http.Request, until *sema.RunState, timeout *float64) error {
	q := r.URL.Query()
	for k := range q {
		if k != "state" && k != "timeout_seconds" {
			return &requestError{Status: http.StatusUnprocessableEntity, Code: "unknown_field", Field: k,
				Detail: "unknown query parameter; known ones are state, timeout_seconds"}
		}
	}
	if s := q.Get("state"); s != "" {
		st, ok := sema.ParseRunState(s)
		if !ok || !settable(st) {
			return invalidField("state", "must be "+settableStates)
		}
		*until = st
	}
	if s := q.Get("timeout_seconds"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxRunWaitSeconds {
			return invalidField("timeout_seconds", "must be a number from 0 to "+strconv.Itoa(maxRunWaitSeconds))
		}
		*timeout = f
	}
	return nil
}
