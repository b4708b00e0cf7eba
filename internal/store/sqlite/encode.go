package sqlite

import (
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// The column encodings. Each is exact: Load gives back what Commit was
// given, bit for bit, except that times come back in UTC and empty slices
// and maps come back nil.

// timeArg encodes t as nanoseconds since the Unix epoch. The zero time.Time
// is NULL: it lies outside what an int64 of nanoseconds can count, and so
// does any time before 1678 or after 2262, which is refused.
func timeArg(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("time %v out of range (years 1678 to 2262)", t)
	}
	return t.UnixNano(), nil
}

func scanTime(ns sql.Null[int64]) time.Time {
	if !ns.Valid {
		return time.Time{}
	}
	return time.Unix(0, ns.V).UTC()
}

// fenceArg stores a fence bit for bit in SQLite's signed 64-bit INTEGER, so
// every uint64 survives; fences are compared in Go, never in SQL.
func fenceArg(f uint64) int64 { return int64(f) }

func scanFence(v int64) uint64 { return uint64(v) }

// appendHolds encodes holds as back-to-back pairs of a 16-byte limit id and
// the slots as a signed varint.
//
// Holds are never queried by SQL: the whole state is read once, at start.
// So they are packed into one column instead of a table with a row per
// hold, which would multiply the writes on the hottest path (every grant,
// renewal and release), and as binary instead of JSON, which would be twice
// the size and cost an encode and a parse per lease: 17 bytes per hold of
// fewer than 64 slots.
func appendHolds(b []byte, holds []sema.Hold) []byte {
	for _, h := range holds {
		b = append(b, h.LimitID[:]...)
		b = binary.AppendVarint(b, int64(h.Slots))
	}
	return b
}

var errHolds = errors.New("malformed holds")

func decodeHolds(b []byte) ([]sema.Hold, error) {
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

// metadataArg encodes holder metadata as a JSON object, NULL when empty.
// JSON keeps it readable with the sqlite3 shell; it is small and written
// only by leases that carry it.
func metadataArg(m map[string]string) (any, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode holder metadata: %w", err)
	}
	return string(b), nil
}

func scanMetadata(s sql.Null[string]) (map[string]string, error) {
	if !s.Valid {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s.V), &m); err != nil {
		return nil, fmt.Errorf("decode holder metadata: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func modeArg(m sema.Mode) (string, error) {
	switch m {
	case sema.ModeConcurrency, sema.ModeRateLimit:
		return m.String(), nil
	}
	return "", fmt.Errorf("unknown mode %d", m)
}

func scanMode(s string) (sema.Mode, error) {
	m, ok := sema.ParseMode(s)
	if !ok || s == "" {
		return 0, fmt.Errorf("unknown mode %q", s)
	}
	return m, nil
}

func boolArg(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// uuidArg encodes an optional id: NULL for the zero UUID.
func uuidArg(id uuid.UUID) any {
	if id == uuid.Nil {
		return nil
	}
	return id[:]
}

func scanUUID(b []byte) (uuid.UUID, error) {
	if b == nil {
		return uuid.Nil, nil
	}
	return uuid.FromBytes(b)
}

// historyEntry is one entry of a run's history as the history column holds
// it.
type historyEntry struct {
	State   string `json:"state"`
	At      *int64 `json:"at"`
	Message string `json:"message"`
}

// historyArg encodes a run's history as a JSON array, oldest first. Times
// are nanoseconds, null for the zero time, and out of range as for timeArg.
func historyArg(h []sema.StateEntry) (string, error) {
	out := make([]historyEntry, len(h))
	for i, e := range h {
		s, err := runStateArg(e.State)
		if err != nil {
			return "", fmt.Errorf("history %d: %w", i, err)
		}
		at, err := timeArg(e.At)
		if err != nil {
			return "", fmt.Errorf("history %d: %w", i, err)
		}
		out[i] = historyEntry{State: s, Message: e.Message}
		if at != nil {
			ns := at.(int64)
			out[i].At = &ns
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode history: %w", err)
	}
	return string(b), nil
}

func scanHistory(s string) ([]sema.StateEntry, error) {
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
			at = time.Unix(0, *e.At).UTC()
		}
		out = append(out, sema.StateEntry{State: st, At: at, Message: e.Message})
	}
	return out, nil
}

// tagsArg encodes tags as a JSON array of strings.
func tagsArg(tags []string) (string, error) {
	if tags == nil {
		tags = []string{}
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return "", fmt.Errorf("encode tags: %w", err)
	}
	return string(b), nil
}

func scanTags(s string) ([]string, error) {
	var tags []string
	if err := json.Unmarshal([]byte(s), &tags); err != nil {
		return nil, fmt.Errorf("decode tags: %w", err)
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

func runStateArg(s sema.RunState) (string, error) {
	if _, ok := sema.ParseRunState(s.String()); !ok {
		return "", fmt.Errorf("unknown run state %d", s)
	}
	return s.String(), nil
}

func runKindArg(k sema.RunKind) (string, error) {
	if _, ok := sema.ParseRunKind(k.String()); !ok {
		return "", fmt.Errorf("unknown run kind %d", k)
	}
	return k.String(), nil
}

func strategyArg(c sema.CollisionStrategy) (string, error) {
	if c != sema.Enqueue && c != sema.CancelNew {
		return "", fmt.Errorf("unknown collision strategy %d", c)
	}
	return c.String(), nil
}
