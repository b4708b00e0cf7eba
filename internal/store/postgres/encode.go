package postgres

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/allot-dev/allot/internal/store/codec"
)

// The column encodings: PostgreSQL's columns for the stored forms of
// package codec (which says what each is), and the values codec leaves to a
// store. Each is exact: Load gives back what Commit was given, bit for bit,
// except that times come back in UTC and empty slices and maps come back
// nil. They follow the SQLite store's, with the three differences
// PostgreSQL needs (see migrations/0001_state.sql): times stay bigint
// nanoseconds rather than timestamptz, which would cut them to
// microseconds; fences are numeric; strings that may hold NUL are bytea.

// timeArg is t as codec.Nanos, NULL for the zero time.
func timeArg(t time.Time) (*int64, error) {
	ns, ok, err := codec.Nanos(t)
	if !ok {
		return nil, err
	}
	return &ns, nil
}

func scanTime(ns *int64) time.Time {
	if ns == nil {
		return time.Time{}
	}
	return codec.Time(*ns)
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

// metadataArg encodes holder metadata (see codec.EncodeMetadata), NULL
// when empty.
func metadataArg(m map[string]string) (*string, error) {
	s, ok, err := codec.EncodeMetadata(m)
	if !ok {
		return nil, err
	}
	return &s, nil
}

func scanMetadata(s *string) (map[string]string, error) {
	if s == nil {
		return nil, nil
	}
	return codec.DecodeMetadata(*s)
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
