package jsonbody

import (
	"encoding/json"
	"unicode/utf8"
)

// field is one member of a JSON object: its decoded name and its value's
// raw text.
type field struct {
	name []byte
	raw  []byte
}

// maxScanDepth is how deeply nested a value the fast scanner follows; a
// deeper one is left to encoding/json, whose limit and message apply.
const maxScanDepth = 32

// maxScanFields is how many members the fast scanner collects, each looked
// up by a linear search; an object with more (no route's body has) is left
// to encoding/json, whose map keeps a huge one linear.
const maxScanFields = 32

// scanObject splits data, a whole JSON text, into the members of the
// object it holds, in one pass and without reflection: what
// json.Unmarshal into a map[string]json.RawMessage yields, the last of
// duplicate names winning. A JSON null yields no fields and isObject
// false. ok is false when data is anything else or is not valid JSON,
// nests deeper than maxScanDepth or has more than maxScanFields members;
// the caller then asks encoding/json, whose errors are the ones users see.
// The raw values alias data.
func scanObject(data []byte, fields []field) (out []field, isObject, ok bool) {
	i := skipSpace(data, 0)
	if hasLiteral(data, i, "null") {
		return fields, false, skipSpace(data, i+4) == len(data)
	}
	fields, end, ok := scanMembers(data, i, fields)
	if !ok || skipSpace(data, end) != len(data) {
		return fields, false, false
	}
	return fields, true, true
}

// scanMembers reads the object that starts at data[i] into fields and
// returns the index just past it.
func scanMembers(data []byte, i int, fields []field) ([]field, int, bool) {
	if i >= len(data) || data[i] != '{' {
		return fields, 0, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return fields, i + 1, true
	}
	for {
		end, plain, ok := scanString(data, i)
		if !ok {
			return fields, 0, false
		}
		name := data[i+1 : end-1]
		if !plain {
			s, ok := stringValue(data[i:end], false)
			if !ok {
				return fields, 0, false
			}
			name = []byte(s)
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ':' {
			return fields, 0, false
		}
		i = skipSpace(data, i+1)
		start := i
		if i, ok = scanValue(data, i, 1); !ok {
			return fields, 0, false
		}
		if fields = setField(fields, name, data[start:i]); len(fields) > maxScanFields {
			return fields, 0, false
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return fields, 0, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return fields, i + 1, true
		default:
			return fields, 0, false
		}
	}
}

// setField adds a member, replacing an earlier one of the same name.
func setField(fields []field, name, raw []byte) []field {
	for j := range fields {
		if string(fields[j].name) == string(name) {
			fields[j].raw = raw
			return fields
		}
	}
	return append(fields, field{name: name, raw: raw})
}

// scanArray calls each for every element of the array raw holds, and
// reports whether raw is exactly one array.
func scanArray(raw []byte, each func(elem []byte) bool) bool {
	if len(raw) == 0 || raw[0] != '[' {
		return false
	}
	i := skipSpace(raw, 1)
	if i < len(raw) && raw[i] == ']' {
		return i+1 == len(raw)
	}
	for {
		start := i
		end, ok := scanValue(raw, i, 1)
		if !ok || !each(raw[start:end]) {
			return false
		}
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case ']':
			return i+1 == len(raw)
		default:
			return false
		}
	}
}

// stringValue decodes a JSON string's raw text. Plain ASCII without
// escapes is sliced; anything else goes through encoding/json so that
// escapes and invalid UTF-8 decode exactly as there.
func stringValue(raw []byte, plain bool) (string, bool) {
	if plain {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// decodeString decodes raw if it is exactly one JSON string.
func decodeString(raw []byte) (string, bool) {
	end, plain, ok := scanString(raw, 0)
	if !ok || end != len(raw) {
		return "", false
	}
	return stringValue(raw, plain)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func hasLiteral(data []byte, i int, lit string) bool {
	return len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit
}

// scanValue returns the index just past the value that starts at data[i].
func scanValue(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch c := data[i]; {
	case c == '"':
		end, _, ok := scanString(data, i)
		return end, ok
	case c == '{':
		return scanNested(data, i, depth, '}', true)
	case c == '[':
		return scanNested(data, i, depth, ']', false)
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(data, i)
	case hasLiteral(data, i, "true"):
		return i + 4, true
	case hasLiteral(data, i, "false"):
		return i + 5, true
	case hasLiteral(data, i, "null"):
		return i + 4, true
	}
	return 0, false
}

// scanNested skips an object (members true) or an array.
func scanNested(data []byte, i, depth int, closer byte, members bool) (int, bool) {
	if depth >= maxScanDepth {
		return 0, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == closer {
		return i + 1, true
	}
	for {
		if members {
			end, _, ok := scanString(data, i)
			if !ok {
				return 0, false
			}
			i = skipSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return 0, false
			}
			i = skipSpace(data, i+1)
		}
		end, ok := scanValue(data, i, depth+1)
		if !ok {
			return 0, false
		}
		i = skipSpace(data, end)
		if i >= len(data) {
			return 0, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case closer:
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// scanString returns the index just past the string that starts at
// data[i], and whether it is plain: printable ASCII without escapes.
func scanString(data []byte, i int) (end int, plain, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, false, false
	}
	plain = true
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1, plain, true
		case c < 0x20:
			return 0, false, false
		case c == '\\':
			plain = false
			i++
			if i >= len(data) {
				return 0, false, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(data)-i <= 4 || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
					return 0, false, false
				}
				i += 4
			default:
				return 0, false, false
			}
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return 0, false, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanNumber returns the index just past the number that starts at
// data[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i)
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}
