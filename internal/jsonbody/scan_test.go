package jsonbody

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// fastBodies are bodies the fast scanner takes: every route's usual
// bodies, escapes, odd spacing, duplicates and nesting.
var fastBodies = []string{
	`{"names":["bench-1"],"slots":1,"mode":"concurrency","lease_duration":30,"holder":{"type":"process","id":"w1"}}`,
	`{"lease_id":"0196b1b4-5c1e-7a3b-8f00-000000000001"}`,
	`{}`, `null`, ` { } `, `{"a":null}`, `{"a":1,"a":2}`, `{"a":{"b":[1,2,{"c":"d"}]}}`,
	`{"na\u006des":["x\ty"],"h":{"metadata":{"k":"\ud83d\ude00"}}}`,
	"{\"a\":\"\xff\xfe\"}", "{\"\xff\":1}", `{"a":-0.5e-3,"b":1E+2,"c":0}`,
	`{"a":[]}`, `{"a":[ ]}`, `{"a":true,"b":false}`, "\t\n{\r\"a\" : [ 1 , 2 ] }\n",
}

// slowBodies are left to encoding/json: not objects, broken JSON, nesting
// deeper than the scanner follows, more members than it collects.
var slowBodies = []string{
	`[1]`, `"s"`, `1`, `true`, `{"a":1,}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`,
	`{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":nul}`, `{"a" 1}`, `{a:1}`,
	`{"a":1}}`, `{"a":1} x`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":{"b"}}`, `{`, `nullx`, ``, ` `,
	`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
	manyMembers(maxScanFields + 1),
}

// manyMembers is an object of n distinct members.
func manyMembers(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	b.WriteByte('}')
	return b.String()
}

// FuzzScanObject checks the fast scanner against encoding/json: whatever
// it accepts, encoding/json accepts too and splits into the same members;
// whatever it refuses is left to encoding/json, so it can only cost speed.
func FuzzScanObject(f *testing.F) {
	for _, s := range append(fastBodies, slowBodies...) {
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

// FuzzDecodeString checks decodeString and arrayItems against
// encoding/json both ways: they have no fallback of their own, so they must
// take exactly what it takes and read it as it does.
func FuzzDecodeString(f *testing.F) {
	for _, s := range []string{`"plain"`, `"a\"b"`, `"\u00e9\n"`, "\"\xff\"", `"\ud800"`, `["a","b\\"]`, `[1,"x",null]`, `[]`,
		`[` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Values reach them as the scanner or encoding/json cut them out
		// of a body: without surrounding space, and never null.
		if len(raw) == 0 || skipSpace(raw, 0) > 0 || skipSpace(raw[len(raw)-1:], 0) > 0 || string(raw) == "null" {
			return
		}
		s, ok := decodeString(raw)
		var want string
		if err := json.Unmarshal(raw, &want); (err == nil) != ok || s != want {
			t.Fatalf("%q: decoded %q (%v), encoding/json %q (%v)", raw, s, ok, want, err)
		}
		elems, ok := arrayItems(raw)
		var wantElems []json.RawMessage
		err := json.Unmarshal(raw, &wantElems)
		if (err == nil) != ok || len(wantElems) != len(elems) {
			t.Fatalf("%q: split into %q (%v), encoding/json %q (%v)", raw, elems, ok, wantElems, err)
		}
		for i := range wantElems {
			if !bytes.Equal(wantElems[i], elems[i]) {
				t.Fatalf("%q: element %d is %q, encoding/json %q", raw, i, elems[i], wantElems[i])
			}
		}
	})
}

// The bodies clients send every request take the fast path; only broken,
// non-object or very deeply nested ones go to encoding/json.
func TestScanObjectFastPath(t *testing.T) {
	for _, s := range fastBodies {
		if _, _, ok := scanObject([]byte(s), nil); !ok {
			t.Errorf("%q: fast scanner gave up", s)
		}
	}
	for _, s := range slowBodies {
		if _, _, ok := scanObject([]byte(s), nil); ok {
			t.Errorf("%.80q: fast scanner accepted it; it is not a well-formed object within its limits", s)
		}
	}
}

// A body of very many members is read by encoding/json, whose map keeps
// it linear, rather than by the scanner's linear search of members.
func TestManyMembersFallBack(t *testing.T) {
	b, isObject, err := Parse([]byte(manyMembers(100_000)))
	if err != nil || !isObject || len(b.fields) != 100_000 {
		t.Fatalf("got %d fields, object %v, %v; want 100000 fields", len(b.fields), isObject, err)
	}
	var n int
	if !b.Int("k99999", &n, 0, 1e6) || n != 99_999 {
		t.Errorf("k99999 = %d (err %v), want 99999", n, b.err)
	}
}

// acquireBody is the body of an increment-with-lease, the request clients
// send for every unit of work.
var acquireBody = []byte(fastBodies[0])

// acquireRequest is what a handler reads from acquireBody.
type acquireRequest struct {
	Names         []string `json:"names"`
	Slots         int      `json:"slots"`
	Mode          string   `json:"mode"`
	LeaseDuration float64  `json:"lease_duration"`
	Holder        *struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"holder"`
}

// BenchmarkIncrementWithLeaseBody reads acquireBody's members as a handler
// does, with Body (sub-benchmark scanner) and, to compare, as Body would
// without its scanner: encoding/json splitting the object into members and
// decoding each (encoding_json_members); and encoding/json decoding into a
// struct, which gives no field-level problems (encoding_json). The package doc quotes
// its numbers.
func BenchmarkIncrementWithLeaseBody(b *testing.B) {
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			body, _, err := Parse(acquireBody)
			if err != nil {
				b.Fatal(err)
			}
			var (
				names             []string
				slots             int
				mode, typ, holder string
				lease             float64
			)
			body.Strs("names", &names, 1000)
			body.Int("slots", &slots, 1, 1e9)
			body.Str("mode", &mode)
			body.Number("lease_duration", &lease, 0, 1e9, true)
			if hb, ok := body.Object("holder"); ok {
				hb.Str("type", &typ)
				hb.Str("id", &holder)
				body.Adopt(hb.Finish(true))
			}
			if err := body.Finish(false); err != nil || slots != 1 || holder != "w1" {
				b.Fatal(err, slots, holder)
			}
		}
	})
	b.Run("encoding_json_members", func(b *testing.B) {
		// What Body does without its scanner: encoding/json splits the
		// object into members, then decodes each.
		b.ReportAllocs()
		for b.Loop() {
			var m, hm map[string]json.RawMessage
			var req acquireRequest
			if err := json.Unmarshal(acquireBody, &m); err != nil {
				b.Fatal(err)
			}
			_ = json.Unmarshal(m["names"], &req.Names)
			_ = json.Unmarshal(m["slots"], &req.Slots)
			_ = json.Unmarshal(m["mode"], &req.Mode)
			_ = json.Unmarshal(m["lease_duration"], &req.LeaseDuration)
			_ = json.Unmarshal(m["holder"], &hm)
			var typ, id string
			_ = json.Unmarshal(hm["type"], &typ)
			_ = json.Unmarshal(hm["id"], &id)
			if req.Slots != 1 || id != "w1" {
				b.Fatal(req)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req acquireRequest
			dec := json.NewDecoder(bytes.NewReader(acquireBody))
			if err := dec.Decode(&req); err != nil || req.Slots != 1 || req.Holder == nil || req.Holder.ID != "w1" {
				b.Fatal(err, req)
			}
		}
	})
}
