package sqlite

import (
	"database/sql"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/store/codec"
)

// The column encodings: SQLite's columns for the stored forms of package
// codec (which says what each is), and the values codec leaves to a store.
// Each is exact: Load gives back what Commit was given, bit for bit, except
// that times come back in UTC and empty slices and maps come back nil.

// timeArg is t as codec.Nanos, NULL for the zero time.
func timeArg(t time.Time) (any, error) {
	ns, ok, err := codec.Nanos(t)
	if !ok {
		return nil, err
	}
	return ns, nil
}

func scanTime(ns sql.Null[int64]) time.Time {
	if !ns.Valid {
		return time.Time{}
	}
	return codec.Time(ns.V)
}

// fenceArg stores a fence bit for bit in SQLite's signed 64-bit INTEGER, so
// every uint64 survives; fences are compared in Go, never in SQL.
func fenceArg(f uint64) int64 { return int64(f) }

func scanFence(v int64) uint64 { return uint64(v) }

// metadataArg encodes holder metadata (see codec.EncodeMetadata), NULL
// when empty.
func metadataArg(m map[string]string) (any, error) {
	s, ok, err := codec.EncodeMetadata(m)
	if !ok {
		return nil, err
	}
	return s, nil
}

func scanMetadata(s sql.Null[string]) (map[string]string, error) {
	if !s.Valid {
		return nil, nil
	}
	return codec.DecodeMetadata(s.V)
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
