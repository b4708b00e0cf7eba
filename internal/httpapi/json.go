package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// timeLayout is Prefect's timestamp form: UTC with microseconds.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// stamp is a time as the API writes it.
type stamp time.Time

func (s stamp) MarshalJSON() ([]byte, error) { return appendStamp(nil, s), nil }

// limitJSON is a limit as every read returns it: Prefect's full
// ConcurrencyLimitV2 plus allot's extensions.
type limitJSON struct {
	ID                      uuid.UUID `json:"id"`
	Created                 stamp     `json:"created"`
	Updated                 stamp     `json:"updated"`
	Active                  bool      `json:"active"`
	Name                    string    `json:"name"`
	Limit                   int       `json:"limit"`
	ActiveSlots             int       `json:"active_slots"`
	DeniedSlots             int       `json:"denied_slots"`
	SlotDecayPerSecond      float64   `json:"slot_decay_per_second"`
	AvgSlotOccupancySeconds float64   `json:"avg_slot_occupancy_seconds"`

	Template bool `json:"template"`
	// IdleSeconds is a template's idle time, or that of a limit a
	// template created; FromTemplate marks the latter.
	IdleSeconds  *float64      `json:"idle_seconds,omitempty"`
	FromTemplate bool          `json:"from_template,omitempty"`
	FencingToken uint64        `json:"fencing_token"`
	Waiting      int           `json:"waiting"`
	Holders      *[]holderJSON `json:"holders,omitempty"`
	Waiters      *[]waiterJSON `json:"waiters,omitempty"`
	WhyWaiting   string        `json:"why_waiting,omitempty"`
}

type holderJSON struct {
	LeaseID      uuid.UUID    `json:"lease_id"`
	Holder       *sema.Holder `json:"holder"`
	Slots        int          `json:"slots"`
	Since        stamp        `json:"since"`
	Expires      stamp        `json:"expires"`
	FencingToken uint64       `json:"fencing_token"`
}

type waiterJSON struct {
	Position     int          `json:"position"`
	Slots        int          `json:"slots"`
	Mode         string       `json:"mode"`
	Holder       *sema.Holder `json:"holder"`
	WaitingSince stamp        `json:"waiting_since"`
}

// holderPtr is nil for a lease or waiter that named no holder.
func holderPtr(h sema.Holder) *sema.Holder {
	if h.IsZero() {
		return nil
	}
	return &h
}

// toLimitJSON renders a view; full includes its holders and waiters.
func toLimitJSON(v sema.LimitView, full bool) limitJSON {
	out := limitJSON{
		ID: v.ID, Created: stamp(v.Created), Updated: stamp(v.Updated), Active: v.Active, Name: v.Name,
		Limit: v.Limit.Limit, ActiveSlots: v.ActiveSlots, DeniedSlots: v.DeniedSlots,
		SlotDecayPerSecond: v.SlotDecayPerSecond, AvgSlotOccupancySeconds: v.AvgSlotOccupancySeconds,
		Template: v.Template, FencingToken: v.FencingToken, Waiting: v.Waiting, FromTemplate: v.FromTemplate,
	}
	if v.Template || v.FromTemplate {
		idle := v.Idle.Seconds()
		out.IdleSeconds = &idle
	}
	if !full {
		return out
	}
	holders := make([]holderJSON, len(v.Holders))
	for i, h := range v.Holders {
		holders[i] = holderJSON{LeaseID: h.LeaseID, Holder: holderPtr(h.Holder), Slots: h.Slots,
			Since: stamp(h.Since), Expires: stamp(h.Expires), FencingToken: h.FencingToken}
	}
	waiters := make([]waiterJSON, len(v.Waiters))
	for i, w := range v.Waiters {
		waiters[i] = waiterJSON{Position: w.Position, Slots: w.Slots, Mode: w.Mode.String(),
			Holder: holderPtr(w.Holder), WaitingSince: stamp(w.Since)}
	}
	out.Holders, out.Waiters = &holders, &waiters
	out.WhyWaiting = v.Head.Sentence()
	return out
}

// minimalJSON is Prefect's MinimalConcurrencyLimitResponse.
type minimalJSON struct {
	ID    uuid.UUID `json:"id"`
	Name  string    `json:"name"`
	Limit int       `json:"limit"`
}

func toMinimal(refs []sema.LimitRef) []minimalJSON {
	out := make([]minimalJSON, len(refs))
	for i, r := range refs {
		out[i] = minimalJSON{ID: r.ID, Name: r.Name, Limit: r.Limit}
	}
	return out
}

// grantJSON is Prefect's ConcurrencyLimitWithLeaseResponse plus allot's
// extensions.
type grantJSON struct {
	LeaseID       uuid.UUID     `json:"lease_id"`
	Limits        []minimalJSON `json:"limits"`
	FencingToken  uint64        `json:"fencing_token"`
	Expires       stamp         `json:"expires"`
	WaitedSeconds float64       `json:"waited_seconds"`
}

// leaseJSON is a lease as GET /leases/{lease_id} returns it.
type leaseJSON struct {
	LeaseID      uuid.UUID     `json:"lease_id"`
	Limits       []minimalJSON `json:"limits"`
	Slots        int           `json:"slots"`
	Mode         string        `json:"mode"`
	Holder       *sema.Holder  `json:"holder"`
	Created      stamp         `json:"created"`
	Expires      stamp         `json:"expires"`
	FencingToken uint64        `json:"fencing_token"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func appendStamp(b []byte, s stamp) []byte {
	b = append(b, '"')
	b = time.Time(s).UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}
