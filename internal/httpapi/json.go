package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
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
	return out
}

// minimalJSON is Prefect's MinimalConcurrencyLimitResponse.
type minimalJSON struct {
	ID    uuid.UUID `json:"id"`
	Name  string    `json:"name"`
	Limit int       `json:"limit"`
}

// minimalList is a list of limits in Prefect's minimal form.
type minimalList []minimalJSON

func toMinimal(refs []sema.LimitRef) minimalList {
	out := make(minimalList, len(refs))
	for i, r := range refs {
		out[i] = minimalJSON{ID: r.ID, Name: r.Name, Limit: r.Limit}
	}
	return out
}

// grantJSON is Prefect's ConcurrencyLimitWithLeaseResponse plus allot's
// extensions.
type grantJSON struct {
	LeaseID       uuid.UUID   `json:"lease_id"`
	Limits        minimalList `json:"limits"`
	FencingToken  uint64      `json:"fencing_token"`
	Expires       stamp       `json:"expires"`
	WaitedSeconds float64     `json:"waited_seconds"`
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

// jsonAppender is a response that writes itself: byte for byte what
// encoding/json writes for it, without reflection. The answers to the
// routes that clients call for every unit of work implement it.
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

// bufPool holds the buffers hand-written answers are built in.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBuf is the largest buffer put back in bufPool: one huge answer
// does not pin its buffer for good.
const maxPooledBuf = 64 << 10

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	a, ok := v.(jsonAppender)
	if !ok {
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := append(a.appendJSON((*bp)[:0]), '\n')
	_, _ = w.Write(b)
	if cap(b) <= maxPooledBuf {
		*bp = b
		bufPool.Put(bp)
	}
}

func (g grantJSON) appendJSON(b []byte) []byte {
	b = append(b, `{"lease_id":`...)
	b = appendUUID(b, g.LeaseID)
	b = append(b, `,"limits":`...)
	b = g.Limits.appendJSON(b)
	b = append(b, `,"fencing_token":`...)
	b = strconv.AppendUint(b, g.FencingToken, 10)
	b = append(b, `,"expires":`...)
	b = appendStamp(b, g.Expires)
	b = append(b, `,"waited_seconds":`...)
	b = appendFloat(b, g.WaitedSeconds)
	return append(b, '}')
}

func (ms minimalList) appendJSON(b []byte) []byte {
	if ms == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendUUID(b, m.ID)
		b = append(b, `,"name":`...)
		b = appendString(b, m.Name)
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, int64(m.Limit), 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendUUID writes id in its canonical form, as uuid.UUID's MarshalText.
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return append(b, '"')
}

func appendStamp(b []byte, s stamp) []byte {
	b = append(b, '"')
	b = time.Time(s).UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

// appendString writes s as encoding/json does: printable ASCII other than
// the characters it escapes is copied, anything else is left to it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendFloat writes f as encoding/json does for the values it writes in
// plain decimal; the others (tiny, huge, not finite) are left to it.
func appendFloat(b []byte, f float64) []byte {
	if abs := math.Abs(f); abs == 0 || abs >= 1e-6 && abs < 1e21 {
		return strconv.AppendFloat(b, f, 'f', -1, 64)
	}
	q, err := json.Marshal(f)
	if err != nil {
		return append(b, "null"...) // NaN or ±Inf: never produced; keep the answer valid JSON
	}
	return append(b, q...)
}
