package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// body is a request's JSON object, read field by field. Each reader records
// the first problem it meets and does nothing once one is recorded, so a
// handler reads every field and checks finish once.
type body struct {
	prefix string  // "holder." for a nested object
	fields []field // the object's members; nil for an absent body
	known  []string
	err    error

	fieldBuf [8]field // backing for fields, enough for every route's body
	knownBuf [8]string
}

// newBody returns a body for the members of the object data holds, or for
// none when data is null (isObject false); data must be a whole JSON text.
// The fast scanner handles what it can; anything else, and every error,
// comes from encoding/json.
func newBody(prefix string, data []byte) (b *body, isObject bool, err error) {
	b = &body{prefix: prefix}
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

// readBody reads and parses the request's JSON object. An absent, empty or
// null body is an empty object when optional, and an error otherwise.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, optional bool) (*body, error) {
	if r.ContentLength > h.maxBody {
		return nil, tooLarge(h.maxBody)
	}
	data, err := readAll(w, r, h.maxBody)
	if err == nil {
		// The body is in: what follows (a wait in line) is not bounded by
		// the body's deadline that middleware set.
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, tooLarge(h.maxBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &requestError{Status: http.StatusRequestTimeout, Code: "body_timeout",
				Detail: fmt.Sprintf("the request body did not arrive within %v", h.bodyTimeout)}
		}
		return nil, &requestError{Status: http.StatusBadRequest, Code: "invalid_json", Detail: "reading request body: " + err.Error()}
	}
	data = bytes.TrimSpace(data)
	if len(data) > 0 {
		if err := checkMediaType(r.Header.Get("Content-Type")); err != nil {
			return nil, err
		}
	}
	b, isObject := &body{}, false
	if len(data) > 0 {
		if b, isObject, err = newBody("", data); err != nil {
			return nil, jsonError(err)
		}
	}
	if !isObject && !optional {
		return nil, &requestError{Status: http.StatusUnprocessableEntity, Code: "invalid_json", Detail: "request body is required: a JSON object"}
	}
	return b, nil
}

// maxPreallocate is the largest announced body readAll allocates before it
// arrives: a client that announces a megabyte and sends nothing pins no
// more than this.
const maxPreallocate = 16 << 10

// readAll reads a request body of at most limit bytes: in one read of the
// announced length when it is small, else through http.MaxBytesReader.
func readAll(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= min(limit, maxPreallocate) {
		data := make([]byte, n)
		_, err := io.ReadFull(r.Body, data)
		return data, err
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

func tooLarge(n int64) error {
	return &requestError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
		Detail: fmt.Sprintf("request body is larger than %d bytes", n)}
}

// checkMediaType accepts JSON bodies only. Refusing form and text types
// means a page on another site cannot post to the API without a CORS
// preflight.
func checkMediaType(ct string) error {
	if ct == "" || ct == "application/json" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &requestError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
		Detail: fmt.Sprintf("Content-Type %q is not supported; send application/json", ct)}
}

func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &requestError{Status: http.StatusUnprocessableEntity, Code: "invalid_json",
			Detail: fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, se.Error())}
	case errors.As(err, &te):
		return &requestError{Status: http.StatusUnprocessableEntity, Code: "invalid_json",
			Detail: "request body must be a JSON object, not " + te.Value}
	}
	return &requestError{Status: http.StatusUnprocessableEntity, Code: "invalid_json", Detail: "malformed JSON: " + err.Error()}
}

// take returns the raw value of a field that is present and not null, and
// remembers the field as known.
func (b *body) take(name string) (json.RawMessage, bool) {
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

func (b *body) fail(name, detail string) {
	if b.err == nil {
		b.err = invalidField(b.prefix+name, detail)
	}
}

// require records that a field is missing when present is false.
func (b *body) require(name string, present bool) {
	if !present {
		b.fail(name, "is required")
	}
}

// finish returns the first problem found; in strict mode a field that no
// reader asked for is one.
func (b *body) finish(strict bool) error {
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
	return &requestError{Status: http.StatusUnprocessableEntity, Code: "unknown_field", Field: b.prefix + unknown[0],
		Detail: "unknown field; known fields are " + strings.Join(b.known, ", ")}
}

func (b *body) str(name string, dst *string) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	s, ok := decodeString(raw)
	if !ok {
		b.fail(name, "must be a string")
		return false
	}
	*dst = s
	return true
}

func (b *body) boolean(name string, dst *bool) bool {
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
		b.fail(name, "must be true or false")
		return false
	}
	return true
}

func isNumber(raw json.RawMessage) bool { return raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' }

// integer reads a whole number in [lo, hi]. A number with a zero fraction
// (3.0, 3e2) is a whole number, as pydantic accepts it.
func (b *body) integer(name string, dst *int, lo, hi int) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	if !isNumber(raw) {
		b.fail(name, "must be an integer")
		return false
	}
	bad := func() { b.fail(name, fmt.Sprintf("must be an integer from %d to %d", lo, hi)) }
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(raw), 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || ferr != nil:
			bad()
			return false
		case f != math.Trunc(f):
			b.fail(name, "must be an integer")
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
func (b *body) number(name string, dst *float64, lo, hi float64, loOpen bool) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	if !isNumber(raw) {
		b.fail(name, "must be a number")
		return false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	switch {
	case err != nil:
		b.fail(name, "is out of range")
		return false
	case loOpen && f <= lo:
		b.fail(name, fmt.Sprintf("must be greater than %g", lo))
		return false
	case f < lo || f > hi:
		b.fail(name, fmt.Sprintf("must be from %g to %g", lo, hi))
		return false
	}
	*dst = f
	return true
}

// strs reads an array of 1 to maxItems strings.
func (b *body) strs(name string, dst *[]string, maxItems int) bool {
	return b.strArray(name, dst, 1, maxItems)
}

// strArray reads an array of minItems to maxItems strings.
func (b *body) strArray(name string, dst *[]string, minItems, maxItems int) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	items, ok := arrayItems(raw)
	if !ok {
		b.fail(name, "must be an array of strings")
		return false
	}
	if len(items) < minItems || len(items) > maxItems {
		b.fail(name, fmt.Sprintf("must have from %d to %d items", minItems, maxItems))
		return false
	}
	out := make([]string, len(items))
	for i, it := range items {
		s, ok := decodeString(it)
		if !ok {
			b.fail(name, fmt.Sprintf("item %d must be a string", i))
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
func (b *body) object(name string) (*body, bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	c, isObject, err := newBody(b.prefix+name+".", raw)
	if err != nil || !isObject {
		b.fail(name, "must be an object")
		return nil, false
	}
	return c, true
}

// adopt records a nested object's first problem as this body's.
func (b *body) adopt(err error) {
	if b.err == nil {
		b.err = err
	}
}

// stringMap reads an object of string values.
func (b *body) stringMap(name string, dst *map[string]string) bool {
	raw, ok := b.take(name)
	if !ok {
		return false
	}
	m, isObject, err := newBody("", raw)
	if err != nil || !isObject {
		b.fail(name, "must be an object of strings")
		return false
	}
	out := make(map[string]string, len(m.fields))
	for _, f := range m.fields {
		s, ok := decodeString(f.raw)
		if !ok {
			b.fail(name, fmt.Sprintf("value of %q must be a string", f.name))
			return false
		}
		out[string(f.name)] = s
	}
	*dst = out
	return true
}

// uuidField reads a UUID string.
func (b *body) uuidField(name string, dst *uuid.UUID) bool {
	var s string
	if !b.str(name, &s) {
		return false
	}
	id, err := uuid.Parse(s)
	if err != nil {
		b.fail(name, "must be a UUID")
		return false
	}
	*dst = id
	return true
}
