package jsonbody

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// The kinds of error a Body reports; each *Error wraps one of them.
var (
	// ErrInvalidJSON is a text that is not JSON, or not a JSON object.
	ErrInvalidJSON = errors.New("invalid JSON")
	// ErrInvalidField is a member of the wrong type or out of bounds, or a
	// required member that is missing.
	ErrInvalidField = errors.New("invalid field")
	// ErrUnknownField is a member no reader asked for, in strict mode.
	ErrUnknownField = errors.New("unknown field")
)

// Error is a problem found in a JSON body: its kind (errors.Is), the
// member at fault ("holder.type" for a nested one; empty for the whole
// text) and what is wrong with it, for people.
type Error struct {
	Kind   error
	Field  string
	Detail string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Detail
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Kind }

func invalidJSON(detail string) error { return &Error{Kind: ErrInvalidJSON, Detail: detail} }

// Body is a request's JSON object, read field by field. Each reader records
// the first problem it meets and does nothing once one is recorded, so a
// handler reads every field and checks finish once.
type Body struct {
	prefix string  // "holder." for a nested object
	fields []field // the object's members; nil for an absent body
	known  []string
	err    error

	fieldBuf [8]field // backing for fields, enough for every route's body
	knownBuf [8]string
}

// Parse returns a Body for the members of the object data holds, or for
// none when data is null (isObject false); data must be a whole JSON text.
// A text that is not JSON or not an object is an *Error of kind
// ErrInvalidJSON. The zero Body is an empty object.
func Parse(data []byte) (b *Body, isObject bool, err error) {
	b, isObject, err = parse("", data)
	if err != nil {
		return nil, false, jsonError(err)
	}
	return b, isObject, nil
}

// parse is Parse for a member (prefix "holder."), with encoding/json's
// error. The fast scanner handles what it can; anything else, and every
// error, comes from encoding/json.
func parse(prefix string, data []byte) (b *Body, isObject bool, err error) {
	b = &Body{prefix: prefix}
	b.known = b.knownBuf[:0]
	fields, isObject, ok := scanObject(data, b.fieldBuf[:0])
	if ok {
		b.fields = fields
		return b, isObject, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, false, err
	}
	if m == nil {
		return b, false, nil
	}
	b.fields = make([]field, 0, len(m))
	for k, v := range m {
		b.fields = append(b.fields, field{name: []byte(k), raw: v})
	}
	return b, true, nil
}

func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return invalidJSON(fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, se.Error()))
	case errors.As(err, &te):
		return invalidJSON("request body must be a JSON object, not " + te.Value)
	}
	return invalidJSON("malformed JSON: " + err.Error())
}

// take returns the raw value of a field that is present and not null, and
// remembers the field as known.
func (b *Body) take(name string) (json.RawMessage, bool) {
	b.known = append(b.known, name)
	if b.err != nil {
		return nil, false
	}
	for _, f := range b.fields {
		if string(f.name) == name {
			if string(f.raw) == "null" {
				return nil, false
			}
			return f.raw, true
		}
	}
	return nil, false
}

func (b *Body) Fail(name, detail string) {
	if b.err == nil {
		b.err = &Error{Kind: ErrInvalidField, Field: b.prefix + name, Detail: detail}
	}
}

// require records that a field is missing when present is false.
func (b *Body) Require(name string, present bool) {
	if !present {
		b.Fail(name, "is required")
	}
}

// finish returns the first problem found; in strict mode a field that no
// reader asked for is one.
func (b *Body) Finish(strict bool) error {
	if b.err != nil || !strict {
		return b.err
	}
	var unknown []string
	for _, f := range b.fields {
		if !slices.Contains(b.known, string(f.name)) {
			unknown = append(unknown, string(f.name))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return &Error{Kind: ErrUnknownField, Field: b.prefix + unknown[0],
		Detail: "unknown field; known fields are " + strings.Join(b.known, ", ")}
}

func (b *Body) Str(name string, dst *string) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	s, ok := decodeString(raw)
	if !ok {
		b.Fail(name, "must be a string")
		return false
	}
	*dst = s
	return true
}

func (b *Body) Bool(name string, dst *bool) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	switch string(raw) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		b.Fail(name, "must be true or false")
		return false
	}
	return true
}

func isNumber(raw json.RawMessage) bool { return raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' }

// integer reads a whole number in [lo, hi]. A number with a zero fraction
// (3.0, 3e2) is a whole number, as pydantic accepts it.
func (b *Body) Int(name string, dst *int, lo, hi int) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	if !isNumber(raw) {
		b.Fail(name, "must be an integer")
		return false
	}
	bad := func() { b.Fail(name, fmt.Sprintf("must be an integer from %d to %d", lo, hi)) }
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(raw), 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || ferr != nil:
			bad()
			return false
		case f != math.Trunc(f):
			b.Fail(name, "must be an integer")
			return false
		case f < float64(lo) || f > float64(hi):
			bad()
			return false
		}
		n = int64(f)
	}
	if n < int64(lo) || n > int64(hi) {
		bad()
		return false
	}
	*dst = int(n)
	return true
}

// number reads a number in [lo, hi], or (lo, hi] when loOpen.
func (b *Body) Number(name string, dst *float64, lo, hi float64, loOpen bool) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	if !isNumber(raw) {
		b.Fail(name, "must be a number")
		return false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	switch {
	case err != nil:
		b.Fail(name, "is out of range")
		return false
	case loOpen && f <= lo:
		b.Fail(name, fmt.Sprintf("must be greater than %g", lo))
		return false
	case f < lo || f > hi:
		b.Fail(name, fmt.Sprintf("must be from %g to %g", lo, hi))
		return false
	}
	*dst = f
	return true
}

// strs reads an array of 1 to maxItems strings.
func (b *Body) Strs(name string, dst *[]string, maxItems int) bool {
	return b.StrArray(name, dst, 1, maxItems)
}

// strArray reads an array of minItems to maxItems strings.
func (b *Body) StrArray(name string, dst *[]string, minItems, maxItems int) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	items, ok := arrayItems(raw)
	if !ok {
		b.Fail(name, "must be an array of strings")
		return false
	}
	if len(items) < minItems || len(items) > maxItems {
		b.Fail(name, fmt.Sprintf("must have from %d to %d items", minItems, maxItems))
		return false
	}
	out := make([]string, len(items))
	for i, it := range items {
		s, ok := decodeString(it)
		if !ok {
			b.Fail(name, fmt.Sprintf("item %d must be a string", i))
			return false
		}
		out[i] = s
	}
	*dst = out
	return true
}

// arrayItems splits a JSON array into its elements' raw texts: by the fast
// scanner when it can, else (elements nested deeper than it follows) by
// encoding/json.
func arrayItems(raw []byte) ([][]byte, bool) {
	items := make([][]byte, 0, 4)
	if scanArray(raw, func(elem []byte) bool { items = append(items, elem); return true }) {
		return items, true
	}
	var all []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &all) != nil {
		return nil, false
	}
	items = items[:0]
	for _, it := range all {
		items = append(items, it)
	}
	return items, true
}

// object reads a nested JSON object.
func (b *Body) Object(name string) (*Body, bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	c, isObject, err := parse(b.prefix+name+".", raw)
	if err != nil || !isObject {
		b.Fail(name, "must be an object")
		return nil, false
	}
	return c, true
}

// adopt records a nested object's first problem as this body's.
func (b *Body) Adopt(err error) {
	if b.err == nil {
		b.err = err
	}
}

// stringMap reads an object of string values.
func (b *Body) StringMap(name string, dst *map[string]string) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	m, isObject, err := parse("", raw)
	if err != nil || !isObject {
		b.Fail(name, "must be an object of strings")
		return false
	}
	out := make(map[string]string, len(m.fields))
	for _, f := range m.fields {
		s, ok := decodeString(f.raw)
		if !ok {
			b.Fail(name, fmt.Sprintf("value of %q must be a string", f.name))
			return false
		}
		out[string(f.name)] = s
	}
	*dst = out
	return true
}

// uuidField reads a UUID string.
func (b *Body) UUID(name string, dst *uuid.UUID) bool {
	var s string
	if !b.Str(name, &s) {
		return false
	}
	id, err := uuid.Parse(s)
	if err != nil {
		b.Fail(name, "must be a UUID")
		return false
	}
	*dst = id
	return true
}
