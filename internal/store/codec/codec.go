// Package codec is the stored form of sema's values that the SQL stores
// (internal/store/sqlite, internal/store/postgres) share: times as
// nanoseconds, a lease's holds as one binary value, holder metadata, run
// tags and a run's history as JSON text, and modes, run kinds, run states
// and collision strategies as their names. Each encoding is exact: decoding
// gives back what was encoded, bit for bit, except that times come back in
// UTC and empty slices and maps come back nil.
//
// It holds no SQL: how a value maps to a column type (NULL, bytea, a
// numeric fence) stays in each store.
package codec

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// Nanos is t as nanoseconds since the Unix epoch. ok is false for the zero
// time.Time, which a store writes as NULL: it lies outside what an int64 of
// nanoseconds can count, and so does any time before 1678 or after 2262,
// which is refused.
//
// Nothing is truncated: sema's times carry nanoseconds (a lease's Expires is
// its grant time plus its duration), and a store must give back exactly what
// it was given, so that a restored machine decides as the one that wrote.
func Nanos(t time.Time) (ns int64, ok bool, err error) {
	if t.IsZero() {
		return 0, false, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return 0, false, fmt.Errorf("time %v out of range (years 1678 to 2262)", t)
	}
	return t.UnixNano(), true, nil
}

// Time is the time ns nanoseconds after the Unix epoch, in UTC.
func Time(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// AppendHolds appends holds to b as back-to-back pairs of a 16-byte limit id
// and the slots as a signed varint.
//
// Holds are never queried by SQL: the whole state is read once, at start.
// So they are packed into one column instead of a table with a row per
// hold, which would multiply the writes on the hottest path (every grant,
// renewal and release), and as binary instead of JSON, which would be twice
// the size and cost an encode and a parse per lease: 17 bytes per hold of
// fewer than 64 slots.
func AppendHolds(b []byte, holds []sema.Hold) []byte {
	for _, h := range holds {
		b = append(b, h.LimitID[:]...)
		b = binary.AppendVarint(b, int64(h.Slots))
	}
	return b
}

var errHolds = errors.New("malformed holds")

// DecodeHolds reads what AppendHolds wrote.
func DecodeHolds(b []byte) ([]sema.Hold, error) {
	var holds []sema.Hold
	for len(b) > 0 {
		if len(b) < 16 {
			return nil, errHolds
		}
		var h sema.Hold
		h.LimitID = uuid.UUID(b[:16])
		slots, n := binary.Varint(b[16:])
		if n <= 0 || slots < math.MinInt || slots > math.MaxInt {
			return nil, errHolds
		}
		h.Slots = int(slots)
		holds = append(holds, h)
		b = b[16+n:]
	}
	return holds, nil
}

// EncodeMetadata encodes holder metadata as a JSON object; ok is false when
// it is empty, which a store writes as NULL. JSON keeps it readable in a
// database shell, escapes a NUL as \u0000 so that a text column holds it,
// and is small: only leases that carry metadata write it.
func EncodeMetadata(m map[string]string) (s string, ok bool, err error) {
	if len(m) == 0 {
		return "", false, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", false, fmt.Errorf("encode holder metadata: %w", err)
	}
	return string(b), true, nil
}

// DecodeMetadata reads what EncodeMetadata wrote.
func DecodeMetadata(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode holder metadata: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// EncodeMode is a mode's name.
func EncodeMode(m sema.Mode) (string, error) {
	switch m {
	case sema.ModeConcurrency, sema.ModeRateLimit:
		return m.String(), nil
	}
	return "", fmt.Errorf("unknown mode %d", m)
}

// DecodeMode reads what EncodeMode wrote.
func DecodeMode(s string) (sema.Mode, error) {
	m, ok := sema.ParseMode(s)
	if !ok || s == "" {
		return 0, fmt.Errorf("unknown mode %q", s)
	}
	return m, nil
}

// historyEntry is one entry of a run's history as it is stored.
type historyEntry struct {
	State   string `json:"state"`
	At      *int64 `json:"at"`
	Message string `json:"message"`
}

// EncodeHistory encodes a run's history as a JSON array, oldest first.
// Times are nanoseconds, null for the zero time, and out of range as for
// Nanos.
func EncodeHistory(h []sema.StateEntry) (string, error) {
	out := make([]historyEntry, len(h))
	for i, e := range h {
		s, err := EncodeRunState(e.State)
		if err != nil {
			return "", fmt.Errorf("history %d: %w", i, err)
		}
		ns, ok, err := Nanos(e.At)
		if err != nil {
			return "", fmt.Errorf("history %d: %w", i, err)
		}
		out[i] = historyEntry{State: s, Message: e.Message}
		if ok {
			out[i].At = &ns
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode history: %w", err)
	}
	return string(b), nil
}

// DecodeHistory reads what EncodeHistory wrote.
func DecodeHistory(s string) ([]sema.StateEntry, error) {
	var in []historyEntry
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode history: %w", err)
	}
	var out []sema.StateEntry
	for i, e := range in {
		st, ok := sema.ParseRunState(e.State)
		if !ok {
			return nil, fmt.Errorf("history %d: unknown state %q", i, e.State)
		}
		var at time.Time
		if e.At != nil {
			at = Time(*e.At)
		}
		out = append(out, sema.StateEntry{State: st, At: at, Message: e.Message})
	}
	return out, nil
}

// EncodeTags encodes tags (a run's tags or limits, a waiter's names) as a
// JSON array of strings.
func EncodeTags(tags []string) (string, error) {
	if tags == nil {
		tags = []string{}
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return "", fmt.Errorf("encode tags: %w", err)
	}
	return string(b), nil
}

// DecodeTags reads what EncodeTags wrote.
func DecodeTags(s string) ([]string, error) {
	var tags []string
	if err := json.Unmarshal([]byte(s), &tags); err != nil {
		return nil, fmt.Errorf("decode tags: %w", err)
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

// EncodeRunState is a run state's name.
func EncodeRunState(s sema.RunState) (string, error) {
	if _, ok := sema.ParseRunState(s.String()); !ok {
		return "", fmt.Errorf("unknown run state %d", s)
	}
	return s.String(), nil
}

// DecodeRunState reads what EncodeRunState wrote.
func DecodeRunState(s string) (sema.RunState, error) {
	st, ok := sema.ParseRunState(s)
	if !ok {
		return 0, fmt.Errorf("unknown state %q", s)
	}
	return st, nil
}

// EncodeRunKind is a run kind's name.
func EncodeRunKind(k sema.RunKind) (string, error) {
	if _, ok := sema.ParseRunKind(k.String()); !ok {
		return "", fmt.Errorf("unknown run kind %d", k)
	}
	return k.String(), nil
}

// DecodeRunKind reads what EncodeRunKind wrote.
func DecodeRunKind(s string) (sema.RunKind, error) {
	k, ok := sema.ParseRunKind(s)
	if !ok {
		return 0, fmt.Errorf("unknown kind %q", s)
	}
	return k, nil
}

// EncodeStrategy is a collision strategy's name.
func EncodeStrategy(c sema.CollisionStrategy) (string, error) {
	if c != sema.Enqueue && c != sema.CancelNew {
		return "", fmt.Errorf("unknown collision strategy %d", c)
	}
	return c.String(), nil
}

// DecodeStrategy reads what EncodeStrategy wrote.
func DecodeStrategy(s string) (sema.CollisionStrategy, error) {
	c, ok := sema.ParseCollisionStrategy(s)
	if !ok || s == "" {
		return 0, fmt.Errorf("unknown collision strategy %q", s)
	}
	return c, nil
}

// RunText is what a run stores as text: its kind, state and collision
// strategy by name, its tags and limits as EncodeTags writes them, and its
// history as EncodeHistory does.
type RunText struct {
	Kind, State, Strategy string
	Tags, Limits, History string
}

// EncodeRun is r's values stored as text.
func EncodeRun(r *sema.Run) (RunText, error) {
	var t RunText
	var err error
	if t.Kind, err = EncodeRunKind(r.Kind); err != nil {
		return t, err
	}
	if t.State, err = EncodeRunState(r.State); err != nil {
		return t, err
	}
	if t.Strategy, err = EncodeStrategy(r.CollisionStrategy); err != nil {
		return t, err
	}
	if t.Tags, err = EncodeTags(r.Tags); err != nil {
		return t, err
	}
	if t.History, err = EncodeHistory(r.History); err != nil {
		return t, err
	}
	if t.Limits, err = EncodeTags(r.Limits); err != nil {
		return t, fmt.Errorf("limits: %w", err)
	}
	return t, nil
}

// Decode sets r's values stored as text (what EncodeRun wrote); an error
// names the run by r.ID.
func (t RunText) Decode(r *sema.Run) error {
	var err error
	if r.Kind, err = DecodeRunKind(t.Kind); err != nil {
		return fmt.Errorf("run %s: %w", r.ID, err)
	}
	if r.State, err = DecodeRunState(t.State); err != nil {
		return fmt.Errorf("run %s: %w", r.ID, err)
	}
	if r.CollisionStrategy, err = DecodeStrategy(t.Strategy); err != nil {
		return fmt.Errorf("run %s: %w", r.ID, err)
	}
	if r.Tags, err = DecodeTags(t.Tags); err != nil {
		return fmt.Errorf("run %s: %w", r.ID, err)
	}
	if r.History, err = DecodeHistory(t.History); err != nil {
		return fmt.Errorf("run %s: %w", r.ID, err)
	}
	if r.Limits, err = DecodeTags(t.Limits); err != nil {
		return fmt.Errorf("run %s: limits: %w", r.ID, err)
	}
	return nil
}

// Describe names a change for an error of a store's Commit ("put limit
// <id> \"name\"", "delete lease <id>", ...).
func Describe(c *sema.Change) string {
	switch c.Kind {
	case sema.PutLimit:
		return fmt.Sprintf("put limit %s %q", c.Limit.ID, c.Limit.Name)
	case sema.DeleteLimit:
		return "delete limit " + c.ID.String()
	case sema.PutLease:
		return "put lease " + c.Lease.ID.String()
	case sema.DeleteLease:
		return "delete lease " + c.ID.String()
	case sema.PutRun:
		if c.Run == nil {
			return "put run (none)"
		}
		return "put run " + c.Run.ID.String()
	case sema.DeleteRun:
		return "delete run " + c.ID.String()
	case sema.PutWaiter:
		if c.Waiter == nil {
			return "put waiter (none)"
		}
		return fmt.Sprintf("put waiter %q", c.Waiter.Ticket)
	case sema.DeleteWaiter:
		return fmt.Sprintf("delete waiter %q", c.Ticket)
	case sema.PutKey:
		if c.Key == nil {
			return "put key (none)"
		}
		return "put key " + c.Key.ID
	case sema.PutAudit:
		if c.Audit == nil {
			return "put audit (none)"
		}
		return fmt.Sprintf("put audit %d", c.Audit.Seq)
	case sema.PruneAudit:
		return "prune audit before " + c.Before.String()
	}
	return fmt.Sprintf("kind %d", c.Kind)
}
