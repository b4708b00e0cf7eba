package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// eventJSON is the data of one server-sent event.
type eventJSON struct {
	At           stamp        `json:"at"`
	LeaseID      *uuid.UUID   `json:"lease_id,omitempty"`
	Limits       []string     `json:"limits"`
	Holder       *sema.Holder `json:"holder,omitempty"`
	Slots        int          `json:"slots,omitempty"`
	FencingToken uint64       `json:"fencing_token,omitempty"`
	Deleted      bool         `json:"deleted,omitempty"`
	// Reason says why a lease ended (see sema.Event.Reason), e.g. that
	// it was granted while its caller was away and not claimed in time;
	// or why a limit was deleted by the server itself: "idle".
	Reason string        `json:"reason,omitempty"`
	Run    *runEventJSON `json:"run,omitempty"`
}

// runEventJSON is the run of a run event.
type runEventJSON struct {
	ID      uuid.UUID `json:"id"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	State   string    `json:"state"`
	Tags    []string  `json:"tags"`
	Message string    `json:"message,omitempty"`
}

// eventName names the events streamed; others are not streamed.
func eventName(k sema.EventKind) string {
	switch k {
	case sema.Granted:
		return "granted"
	case sema.Released:
		return "released"
	case sema.Expired:
		return "expired"
	case sema.Revoked:
		return "revoked"
	case sema.LimitChanged:
		return "limit"
	case sema.RunChanged:
		return "run"
	}
	return ""
}

func toEventJSON(e sema.Event, at time.Time) eventJSON {
	out := eventJSON{At: stamp(at), Limits: make([]string, len(e.Limits)), Deleted: e.Deleted, Reason: e.Reason}
	for i, l := range e.Limits {
		out.Limits[i] = l.Name
	}
	switch e.Kind {
	case sema.LimitChanged:
	case sema.RunChanged:
		r := e.Run
		out.Limits = runLimitNames(r)
		rj := &runEventJSON{ID: r.ID, Kind: r.Kind.String(), Name: r.Name, State: r.State.String(), Tags: r.Tags}
		if rj.Tags == nil {
			rj.Tags = []string{}
		}
		if n := len(r.History); n > 0 {
			rj.Message = r.History[n-1].Message
		}
		out.Run = rj
	default:
		id := e.Lease.ID
		out.LeaseID, out.Holder, out.Slots, out.FencingToken = &id, holderPtr(e.Lease.Holder), e.Lease.Slots, e.Lease.Fence
	}
	return out
}

// runLimitNames are the limits a run takes: its tags' (or labels') and
// its own.
func runLimitNames(r *sema.Run) []string {
	out := make([]string, 0, len(r.Tags)+len(r.Limits))
	for _, t := range r.Tags {
		out = append(out, r.Kind.LimitPrefix()+t)
	}
	return append(out, r.Limits...)
}

// eventMatches reports whether an event concerns one of names: one of its
// limits (a run's: those it takes), or a run's name or id.
func eventMatches(e eventJSON, names map[string]bool) bool {
	for _, l := range e.Limits {
		if names[l] {
			return true
		}
	}
	return e.Run != nil && (names[e.Run.Name] || names[e.Run.ID.String()])
}

// events is GET /api/events: grants, releases, expiries, revocations,
// limit changes and run state changes as server-sent events, until the
// client goes; ?name= (repeatable) keeps the events of those limits (and
// the runs that take them, or have that name or id). A client that does
// not keep up misses events rather than slowing the server.
//
// HEAD answers the stream's headers and ends: a stream without a body would
// otherwise never end, and hold its kept-alive connection.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	var names map[string]bool
	if ns := r.URL.Query()["name"]; len(ns) > 0 {
		if len(ns) > maxNames {
			h.writeProblem(w, r, &sema.InvalidError{Field: "name", Detail: fmt.Sprintf("at most %d names", maxNames)})
			return
		}
		names = make(map[string]bool, len(ns))
		for _, n := range ns {
			if n == "" || len(n) > 1024 {
				h.writeProblem(w, r, &sema.InvalidError{Field: "name", Detail: "a name must have 1 to 1024 bytes"})
				return
			}
			names[n] = true
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // the stream outlives any write timeout
	ch, stop := h.c.Subscribe(256)
	defer stop()
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": allot events\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	beat := time.NewTicker(h.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		case e := <-ch:
			name := eventName(e.Kind)
			if name == "" {
				continue
			}
			ej := toEventJSON(e, time.Now())
			if names != nil && !eventMatches(ej, names) {
				continue
			}
			data, err := json.Marshal(ej)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
