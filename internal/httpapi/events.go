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
	LeaseID      *uuid.UUID   `json:"lease_id,omitempty"`
	Limits       []string     `json:"limits"`
	Holder       *sema.Holder `json:"holder,omitempty"`
	Slots        int          `json:"slots,omitempty"`
	FencingToken uint64       `json:"fencing_token,omitempty"`
	Deleted      bool         `json:"deleted,omitempty"`
	// Reason says why a lease ended (see sema.Event.Reason), e.g. that
	// it was granted while its caller was away and not claimed in time;
	// or why a limit was deleted by the server itself: "idle".
	Reason string `json:"reason,omitempty"`
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
	}
	return ""
}

func toEventJSON(e sema.Event) eventJSON {
	out := eventJSON{Limits: make([]string, len(e.Limits)), Deleted: e.Deleted, Reason: e.Reason}
	for i, l := range e.Limits {
		out.Limits[i] = l.Name
	}
	if e.Kind == sema.LimitChanged {
		out.Reason = e.Reason
	} else {
		id := e.Lease.ID
		out.LeaseID, out.Holder, out.Slots, out.FencingToken = &id, holderPtr(e.Lease.Holder), e.Lease.Slots, e.Lease.Fence
	}
	return out
}

// events is GET /api/events: grants, releases, expiries, revocations and
// limit changes as server-sent events, until the client goes. A client that
// does not keep up misses events rather than slowing the server.
//
// HEAD answers the stream's headers and ends: a stream without a body would
// otherwise never end, and hold its kept-alive connection.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
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
			data, err := json.Marshal(toEventJSON(e))
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
