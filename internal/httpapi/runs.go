package httpapi

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/jsonbody"
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

// runRoutes are the routes of the runs API.
func (h *handler) runRoutes() []route {
	const base = "/api/runs"
	create := jsonOp(h, op[sema.RunSpec, made[sema.Run]]{statusOf: made[sema.Run].status, body: requiredBody, strict: true,
		decode: readRunSpec, call: h.createRun, encode: renderCreatedRun})
	return []route{
		{"POST " + base + "/{$}", create},
		{"POST " + base, create},
		{"POST " + base + "/filter", jsonOp(h, op[runFilter, []sema.Run]{status: http.StatusOK, body: optionalBody, strict: true,
			decode: readRunFilter, call: h.listRuns, encode: runList})},
		{"GET " + base + "/{id}", jsonOp(h, op[uuid.UUID, sema.Run]{status: http.StatusOK,
			decode: pathRun, call: h.c.ReadRun, encode: runAnswer})},
		{"POST " + base + "/{id}/set_state", jsonOp(h, op[stateChange, sema.Run]{status: http.StatusOK, body: requiredBody, strict: true,
			decode: byID(runIDParam, readStateChange), call: h.setRunState, encode: runAnswer})},
		{"POST " + base + "/{id}/heartbeat", jsonOp(h, op[uuid.UUID, time.Time]{status: http.StatusNoContent, body: optionalBody, strict: true,
			decode: pathRun, call: h.c.HeartbeatRun})},
		{"GET " + base + "/{id}/wait", jsonOp(h, op[runWait, sema.Run]{status: http.StatusOK,
			decode: byID(runIDParam, readWaitQuery), call: h.waitRun, wait: runWaitTime, encode: runAnswer})},
		{"POST " + base + "/{id}/wait", jsonOp(h, op[runWait, sema.Run]{status: http.StatusOK, body: optionalBody, strict: true,
			decode: byID(runIDParam, readWaitBody), call: h.waitRun, wait: runWaitTime, encode: runAnswer})},
	}
}

// readKind reads a kind field.
func readKind(b *jsonbody.Body, name string, dst *sema.RunKind) bool {
	return readEnum(b, name, dst, sema.ParseRunKind, `"task" or "flow"`)
}

// readState reads a state field, one of allowed.
func readState(b *jsonbody.Body, name string, dst *sema.RunState, allowed func(sema.RunState) bool, want string) bool {
	return readEnum(b, name, dst, func(s string) (sema.RunState, bool) {
		st, ok := sema.ParseRunState(s)
		return st, ok && allowed(st)
	}, want)
}

// pathRun reads a run's id alone.
var pathRun = byID(runIDParam, idAlone)

func runAnswer(r sema.Run) any { return toRunJSON(r) }

// readRunSpec reads POST /api/runs/: {kind, id?, name?, tags?, limits?,
// slots?, parent_id?, collision_strategy?, lease_duration?}; 201 with the
// Pending run, 200 with the same run asked for again.
func readRunSpec(_ *http.Request, b *jsonbody.Body) (sema.RunSpec, error) {
	var s sema.RunSpec
	b.UUID("id", &s.ID)
	b.Require("kind", readKind(b, "kind", &s.Kind))
	b.Str("name", &s.Name)
	b.StrArray("tags", &s.Tags, 0, sema.MaxRunTags)
	b.StrArray("limits", &s.Limits, 0, sema.MaxRunTags)
	b.Int("slots", &s.Slots, 1, sema.MaxSlots)
	b.UUID("parent_id", &s.ParentID)
	readEnum(b, "collision_strategy", &s.CollisionStrategy, sema.ParseCollisionStrategy, `"enqueue" or "cancel_new"`)
	s.LeaseDuration, _ = readSeconds(b, "lease_duration", maxLeaseSeconds)
	return s, nil
}

// createRun creates a run, or finds it created before (the same run asked
// for again: 200).
func (h *handler) createRun(ctx context.Context, s sema.RunSpec) (made[sema.Run], error) {
	return madeOf(h.c.CreateRun(ctx, s))
}

func renderCreatedRun(m made[sema.Run]) any { return toRunJSON(m.v) }

// runFilter is POST /api/runs/filter {kind?, state?, tag?, flow_run_id?,
// limit?, offset?}: runs oldest first. flow_run_id selects the runs inside
// that run, at any depth.
type runFilter struct {
	filter        sema.RunFilter
	limit, offset int
}

func readRunFilter(_ *http.Request, b *jsonbody.Body) (runFilter, error) {
	var f sema.RunFilter
	readKind(b, "kind", &f.Kind)
	readState(b, "state", &f.State, func(sema.RunState) bool { return true },
		"Pending, AwaitingConcurrencySlot, Running, Completed, Failed, Crashed or Cancelled")
	b.Str("tag", &f.Tag)
	b.UUID("flow_run_id", &f.Ancestor)
	limit, offset := readPage(b)
	return runFilter{f, limit, offset}, nil
}

func (h *handler) listRuns(ctx context.Context, f runFilter) ([]sema.Run, error) {
	return h.c.ListRuns(ctx, f.filter, f.offset, f.limit)
}

func runList(runs []sema.Run) any {
	out := make([]runJSON, len(runs))
	for i, run := range runs {
		out[i] = toRunJSON(run)
	}
	return out
}

func settable(s sema.RunState) bool { return s == sema.Running || s.IsFinal() }

const settableStates = "Running, Completed, Failed, Crashed or Cancelled"

// stateChange is POST /api/runs/{id}/set_state {state, message?}: 200
// with the run. Asking for Running answers with the run Running, or
// AwaitingConcurrencySlot in line (or Failed or Cancelled if it can never
// or may not wait); a change the run's state does not allow is 409.
type stateChange struct {
	id      uuid.UUID
	state   sema.RunState
	message string
}

func readStateChange(id uuid.UUID, _ *http.Request, b *jsonbody.Body) (stateChange, error) {
	c := stateChange{id: id}
	b.Require("state", readState(b, "state", &c.state, settable, settableStates))
	b.Str("message", &c.message)
	return c, nil
}

func (h *handler) setRunState(ctx context.Context, c stateChange) (sema.Run, error) {
	return h.c.SetRunState(ctx, c.id, c.state, c.message)
}

// runWait is GET /api/runs/{id}/wait?state=Running&timeout_seconds=60 (or
// POST with those fields in the body): it answers 200 with the run as soon
// as it reaches that state or any final state, or when the time is up with
// the run as it is; the caller looks at its state. A heartbeat is POST
// /api/runs/{id}/heartbeat: 204, renewing a Running run's lease; 410 once
// the run is in a final state (its lease expired, for one): its process
// must stop.
type runWait struct {
	id      uuid.UUID
	until   sema.RunState
	timeout time.Duration
}

func runWaitTime(w runWait) time.Duration { return w.timeout }

func (h *handler) waitRun(ctx context.Context, w runWait) (sema.Run, error) {
	return h.c.WaitRun(ctx, w.id, w.until, w.timeout)
}

// readWaitBody reads POST /api/runs/{id}/wait's body.
func readWaitBody(id uuid.UUID, _ *http.Request, b *jsonbody.Body) (runWait, error) {
	until, timeout := sema.Running, float64(defaultRunWaitSeconds)
	readState(b, "state", &until, settable, settableStates)
	b.Number("timeout_seconds", &timeout, 0, maxRunWaitSeconds, false)
	return runWait{id, until, time.Duration(timeout * float64(time.Second))}, nil
}

// readWaitQuery reads GET /api/runs/{id}/wait's query parameters.
func readWaitQuery(id uuid.UUID, r *http.Request, _ *jsonbody.Body) (runWait, error) {
	until, timeout := sema.Running, float64(defaultRunWaitSeconds)
	q := r.URL.Query()
	for k := range q {
		if k != "state" && k != "timeout_seconds" {
			return runWait{}, &requestError{Code: codeUnknownField, Field: k,
				Detail: "unknown query parameter; known ones are state, timeout_seconds"}
		}
	}
	if s := q.Get("state"); s != "" {
		st, ok := sema.ParseRunState(s)
		if !ok || !settable(st) {
			return runWait{}, invalidField("state", "must be "+settableStates)
		}
		until = st
	}
	if s := q.Get("timeout_seconds"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxRunWaitSeconds {
			return runWait{}, invalidField("timeout_seconds", "must be a number from 0 to "+strconv.Itoa(maxRunWaitSeconds))
		}
		timeout = f
	}
	return runWait{id, until, time.Duration(timeout * float64(time.Second))}, nil
}
