package httpapi

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// scanSeeds are request bodies and near-misses: every route's usual
// bodies, escapes, odd spacing, duplicates, nesting and broken JSON.
var scanSeeds = []string{
	`{"names":["bench-1"],"slots":1,"mode":"concurrency","lease_duration":30,"holder":{"type":"process","id":"w1"}}`,
	`{"lease_id":"0196b1b4-5c1e-7a3b-8f00-000000000001"}`,
	`{}`, `null`, ` { } `, `{"a":null}`, `{"a":1,"a":2}`, `{"a":{"b":[1,2,{"c":"d"}]}}`,
	`{"na\u006des":["x\ty"],"h":{"metadata":{"k":"\ud83d\ude00"}}}`,
	"{\"a\":\"\xff\xfe\"}", "{\"\xff\":1}", `{"a":-0.5e-3,"b":1E+2,"c":0}`,
	`{"a":[]}`, `{"a":[ ]}`, `{"a":true,"b":false}`, "\t\n{\r\"a\" : [ 1 , 2 ] }\n",
	`[1]`, `"s"`, `1`, `true`, `{"a":1,}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`,
	`{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":nul}`, `{"a" 1}`, `{a:1}`,
	`{"a":1}}`, `{"a":1} x`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":{"b"}}`, `{`, `nullx`, ``, ` `,
	`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
}

// FuzzScanObject checks the fast scanner against encoding/json: whatever
// it accepts, encoding/json accepts too and splits into the same members;
// whatever it refuses is left to encoding/json, so it can only cost speed.
func FuzzScanObject(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, isObject, ok := scanObject(data, nil)
		var m map[string]json.RawMessage
		err := json.Unmarshal(data, &m)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("%q: scanner accepted what encoding/json refuses: %v", data, err)
		}
		if isObject != (m != nil) {
			t.Fatalf("%q: scanner says object %v, encoding/json gives %v", data, isObject, m)
		}
		if len(fields) != len(m) {
			t.Fatalf("%q: scanner found %d members, encoding/json %d", data, len(fields), len(m))
		}
		for _, f := range fields {
			if raw, found := m[string(f.name)]; !found || !bytes.Equal(raw, f.raw) {
				t.Fatalf("%q: member %q is %q, encoding/json has %q (found %v)", data, f.name, f.raw, raw, found)
			}
		}
	})
}

// FuzzDecodeString checks decodeString and scanArray against encoding/json.
func FuzzDecodeString(f *testing.F) {
	for _, s := range []string{`"plain"`, `"a\"b"`, `"\u00e9\n"`, "\"\xff\"", `"\ud800"`, `["a","b\\"]`, `[1,"x",null]`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if s, ok := decodeString(raw); ok {
			var want string
			if err := json.Unmarshal(raw, &want); err != nil || s != want {
				t.Fatalf("%q: decoded %q, encoding/json %q (%v)", raw, s, want, err)
			}
		}
		var elems [][]byte
		if scanArray(raw, func(e []byte) bool { elems = append(elems, e); return true }) {
			var want []json.RawMessage
			if err := json.Unmarshal(raw, &want); err != nil || len(want) != len(elems) {
				t.Fatalf("%q: scanned %q, encoding/json %q (%v)", raw, elems, want, err)
			}
			for i := range want {
				if !bytes.Equal(want[i], elems[i]) {
					t.Fatalf("%q: element %d is %q, encoding/json %q", raw, i, elems[i], want[i])
				}
			}
		}
	})
}

// The bodies clients send every request take the fast path; only broken,
// non-object or very deeply nested ones go to encoding/json.
func TestScanObjectFastPath(t *testing.T) {
	for _, s := range scanSeeds[:16] {
		if _, _, ok := scanObject([]byte(s), nil); !ok {
			t.Errorf("%q: fast scanner gave up", s)
		}
	}
	for _, s := range scanSeeds[16:] {
		if _, _, ok := scanObject([]byte(s), nil); ok {
			t.Errorf("%q: fast scanner accepted it; it is not a well-formed object within the depth limit", s)
		}
	}
}

func BenchmarkReadAcquireBody(b *testing.B) {
	data := []byte(scanSeeds[0])
	b.ReportAllocs()
	for b.Loop() {
		body, _, err := newBody("", data)
		if err != nil {
			b.Fatal(err)
		}
		req := readAcquire(body)
		req.Holder = readHolder(body)
		if err := body.finish(false); err != nil || req.Slots != 1 {
			b.Fatal(err, req)
		}
	}
}
