package postgres

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/allot-dev/allot/internal/sema"
)

// The column encodings. Each is exact: Load gives back what Commit was
// given, bit for bit, except that times come back in UTC and empty slices
// and maps come back nil. They follow the SQLite store's, with the three
// differences PostgreSQL needs (see migrations/0001_state.sql): times stay
// bigint nanoseconds rather than timestamptz, which would cut them to
// microseconds; fences are numeric; strings that may hold NUL are bytea.

// timeArg encodes t as nanoseconds since the Unix epoch. The zero time.Time
// is NULL: it lies outside what an int64 of nanoseconds can count, and so
// does any time before 1678 or after 2262, which is refused.
//
// Nothing is truncated: sema's times carry nanoseconds (a lease's Expires is
// its grant time plus its duration), and a store must give back exactly what
// it was given, so that a restored machine decides as the one that wrote.
func timeArg(t time.Time) (*int64, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("time %v out of range (years 1678 to 2262)", t)
	}
	ns := t.UnixNano()
	return &ns, nil
}

func scanTime(ns *int64) time.Time {
	if ns == nil {
		return time.Time{}
	}
	return time.Unix(0, *ns).UTC()
}

// fence is a uint64 as a numeric(20,0) column: written as a NumericValuer,
// read as a NumericScanner, exact over the whole range.
type fence uint64

var maxUint64 = new(big.Int).SetUint64(math.MaxUint64)

// NumericValue implements pgtype.NumericValuer.
func (f fence) NumericValue() (pgtype.Numeric, error) {
	return pgtype.Numeric{Int: new(big.Int).SetUint64(uint64(f)), Valid: true}, nil
}

// ScanNumeric implements pgtype.NumericScanner.
func (f *fence) ScanNumeric(n pgtype.Numeric) error {
	if !n.Valid || n.NaN || n.InfinityModifier != pgtype.Finite {
		return errors.New("fence is not a number")
	}
	v := new(big.Int).Set(n.Int)
	if n.Exp > 0 {
		v.Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)), nil))
	} else if n.Exp < 0 {
		d := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-n.Exp)), nil)
		var r big.Int
		if v.QuoRem(v, d, &r); r.Sign() != 0 {
			return fmt.Errorf("fence %v is not a whole number", n.Int)
		}
	}
	if v.Sign() < 0 || v.Cmp(maxUint64) > 0 {
		return fmt.Errorf("fence %v out of range", v)
	}
	*f = fence(v.Uint64())
	return nil
}

// appendHolds encodes holds as back-to-back pairs of a 16-byte limit id and
// the slots as a signed varint, as the SQLite store does: holds are never
// queried by SQL, and a column beats a row per hold on the hottest path.
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
// JSON escapes a NUL as \u0000, so the text column can hold it.
func metadataArg(m map[string]string) (*string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode holder metadata: %w", err)
	}
	s := string(b)
	return &s, nil
}

func scanMetadata(s *string) (map[string]string, error) {
	if s == nil {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(*s), &m); err != nil {
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

// uuidArg encodes an optional id: NULL for the zero UUID.
func uuidArg(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

func scanUUID(id *uuid.UUID) uuid.UUID {
	if id == nil {
		return uuid.Nil
	}
	return *id
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
		out[i] = historyEntry{State: s, At: at, Message: e.Message}
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
		out = append(out, sema.StateEntry{State: st, At: scanTime(e.At), Message: e.Message})
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
