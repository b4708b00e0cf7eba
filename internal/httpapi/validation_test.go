package httpapi_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestBadInput sends one request per class of bad input and checks that it
// is a 4xx problem naming the right code and field.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "l", "limit": 10})
	manyNames := `["` + strings.Repeat(`a","`, 1000) + `a"]`
	deep := `{"name":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
	type tc struct {
		name        string
		method      string
		path        string
		body        string
		contentType string // default application/json
		status      int
		code        string
		field       string
	}
	create, patch, inc, incL, dec := v2+"/", v2+"/l", v2+"/increment", v2+"/increment-with-lease", v2+"/decrement"
	for _, c := range []tc{
		// Malformed bodies.
		{"malformed JSON", "POST", create, `{"name":`, "", 422, "invalid_json", ""},
		{"trailing garbage", "POST", create, `{"name":"a","limit":1} x`, "", 422, "invalid_json", ""},
		{"array body", "POST", create, `[]`, "", 422, "invalid_json", ""},
		{"string body", "POST", inc, `"names"`, "", 422, "invalid_json", ""},
		{"number body", "POST", dec, `5`, "", 422, "invalid_json", ""},
		{"null body", "POST", create, `null`, "", 422, "invalid_json", ""},
		{"empty body", "POST", create, ``, "", 422, "invalid_json", ""},
		{"empty patch body", "PATCH", patch, ``, "", 422, "invalid_json", ""},
		{"too deep", "POST", create, deep, "", 422, "invalid_json", ""},
		{"too large", "POST", create, `{"name":"` + strings.Repeat("x", 1<<20) + `","limit":1}`, "", 413, "body_too_large", ""},
		{"form content type", "POST", create, `{"name":"a","limit":1}`, "application/x-www-form-urlencoded", 415, "unsupported_media_type", ""},
		{"text content type", "POST", inc, `{"names":["l"],"slots":1}`, "text/plain", 415, "unsupported_media_type", ""},
		{"bad content type", "POST", inc, `{"names":["l"],"slots":1}`, "application/", 415, "unsupported_media_type", ""},

		// Unknown fields: refused on create and patch, ignored elsewhere.
		{"unknown field on create", "POST", create, `{"name":"a","limit":1,"bogus":1}`, "", 422, "unknown_field", "bogus"},
		{"unknown field on patch", "PATCH", patch, `{"limit":1,"avg_slot_occupancy_seconds":1}`, "", 422, "unknown_field", "avg_slot_occupancy_seconds"},
		{"unknown field in holder", "POST", incL, `{"names":["l"],"slots":1,"holder":{"type":"task_run","id":"x","uuid":"y"}}`, "", 422, "unknown_field", "holder.uuid"},

		// Missing fields.
		{"missing name", "POST", create, `{"limit":1}`, "", 422, "invalid_field", "name"},
		{"missing limit", "POST", create, `{"name":"a"}`, "", 422, "invalid_field", "limit"},
		{"null limit", "POST", create, `{"name":"a","limit":null}`, "", 422, "invalid_field", "limit"},
		{"missing names", "POST", inc, `{"slots":1}`, "", 422, "invalid_field", "names"},
		{"missing slots", "POST", incL, `{"names":["l"]}`, "", 422, "invalid_field", "slots"},
		{"missing decrement slots", "POST", dec, `{"names":["l"]}`, "", 422, "invalid_field", "slots"},
		{"missing lease id", "POST", v2 + "/decrement-with-lease", `{}`, "", 422, "invalid_field", "lease_id"},

		// Wrong types.
		{"name number", "POST", create, `{"name":5,"limit":1}`, "", 422, "invalid_field", "name"},
		{"limit string", "POST", create, `{"name":"a","limit":"5"}`, "", 422, "invalid_field", "limit"},
		{"active string", "POST", create, `{"name":"a","limit":1,"active":"yes"}`, "", 422, "invalid_field", "active"},
		{"decay string", "PATCH", patch, `{"slot_decay_per_second":"fast"}`, "", 422, "invalid_field", "slot_decay_per_second"},
		{"patch active number", "PATCH", patch, `{"active":1}`, "", 422, "invalid_field", "active"},
		{"names string", "POST", inc, `{"names":"l","slots":1}`, "", 422, "invalid_field", "names"},
		{"names of numbers", "POST", inc, `{"names":[1],"slots":1}`, "", 422, "invalid_field", "names"},
		{"slots bool", "POST", inc, `{"names":["l"],"slots":true}`, "", 422, "invalid_field", "slots"},
		{"mode number", "POST", inc, `{"names":["l"],"slots":1,"mode":1}`, "", 422, "invalid_field", "mode"},
		{"holder string", "POST", incL, `{"names":["l"],"slots":1,"holder":"task_run"}`, "", 422, "invalid_field", "holder"},
		{"holder type number", "POST", incL, `{"names":["l"],"slots":1,"holder":{"type":1,"id":"x"}}`, "", 422, "invalid_field", "holder.type"},
		{"metadata of numbers", "POST", incL, `{"names":["l"],"slots":1,"holder":{"type":"process","id":"x","metadata":{"a":1}}}`, "", 422, "invalid_field", "holder.metadata"},
		{"create_if_missing string", "POST", inc, `{"names":["l"],"slots":1,"create_if_missing":"yes"}`, "", 422, "invalid_field", "create_if_missing"},
		{"lease_duration string", "POST", incL, `{"names":["l"],"slots":1,"lease_duration":"60"}`, "", 422, "invalid_field", "lease_duration"},
		{"lease_id number", "POST", v2 + "/decrement-with-lease", `{"lease_id":5}`, "", 422, "invalid_field", "lease_id"},
		{"lease_id not a UUID", "POST", v2 + "/decrement-with-lease", `{"lease_id":"nope"}`, "", 422, "invalid_field", "lease_id"},
		{"occupancy string", "POST", dec, `{"names":["l"],"slots":1,"occupancy_seconds":"1"}`, "", 422, "invalid_field", "occupancy_seconds"},

		// Numbers that are not whole, negative or absurd.
		{"fractional limit", "POST", create, `{"name":"a","limit":1.5}`, "", 422, "invalid_field", "limit"},
		{"fractional slots", "POST", inc, `{"names":["l"],"slots":2.5}`, "", 422, "invalid_field", "slots"},
		{"negative limit", "POST", create, `{"name":"a","limit":-1}`, "", 422, "invalid_field", "limit"},
		{"negative active slots", "POST", create, `{"name":"a","limit":1,"active_slots":-1}`, "", 422, "invalid_field", "active_slots"},
		{"negative denied slots", "PATCH", patch, `{"denied_slots":-1}`, "", 422, "invalid_field", "denied_slots"},
		{"limit over 2^30", "POST", create, `{"name":"a","limit":1073741825}`, "", 422, "invalid_field", "limit"},
		{"limit 1e100", "POST", create, `{"name":"a","limit":1e100}`, "", 422, "invalid_field", "limit"},
		{"limit beyond int64", "POST", create, `{"name":"a","limit":99999999999999999999999}`, "", 422, "invalid_field", "limit"},
		{"slots beyond int64", "POST", inc, `{"names":["l"],"slots":-99999999999999999999999}`, "", 422, "invalid_field", "slots"},
		{"decay 1e10", "POST", create, `{"name":"a","limit":1,"slot_decay_per_second":1e10}`, "", 422, "invalid_field", "slot_decay_per_second"},
		{"decay beyond float64", "POST", create, `{"name":"a","limit":1,"slot_decay_per_second":1e400}`, "", 422, "invalid_field", "slot_decay_per_second"},
		{"lease_duration beyond float64", "POST", incL, `{"names":["l"],"slots":1,"lease_duration":1e400}`, "", 422, "invalid_field", "lease_duration"},
		{"lease_duration tiny", "POST", incL, `{"names":["l"],"slots":1,"lease_duration":1e-300}`, "", 422, "invalid_field", "lease_duration"},
		{"lease_duration huge", "POST", incL, `{"names":["l"],"slots":1,"lease_duration":1e300}`, "", 422, "invalid_field", "lease_duration"},
		{"timeout over an hour", "POST", incL, `{"names":["l"],"slots":1,"timeout_seconds":3601}`, "", 422, "invalid_field", "timeout_seconds"},
		{"negative timeout", "POST", inc, `{"names":["l"],"slots":1,"timeout_seconds":-1}`, "", 422, "invalid_field", "timeout_seconds"},
		{"zero occupancy", "POST", dec, `{"names":["l"],"slots":1,"occupancy_seconds":0}`, "", 422, "invalid_field", "occupancy_seconds"},
		{"negative filter limit", "POST", v2 + "/filter", `{"limit":-1}`, "", 422, "invalid_field", "limit"},
		{"fractional filter limit", "POST", v2 + "/filter", `{"limit":1.5}`, "", 422, "invalid_field", "limit"},
		{"negative offset", "POST", v2 + "/filter", `{"offset":-1}`, "", 422, "invalid_field", "offset"},
		{"bad detail", "POST", v2 + "/filter", `{"detail":"everything"}`, "", 422, "invalid_field", "detail"},
		{"renew for zero seconds", "POST", v2 + "/leases/0190b5a4-1111-7000-8000-000000000000/renew", `{"lease_duration":0}`, "", 422, "invalid_field", "lease_duration"},

		// Names.
		{"name with slash", "POST", create, `{"name":"a/b","limit":1}`, "", 422, "invalid_field", "name"},
		{"name with control character", "POST", create, `{"name":"a\u0007b","limit":1}`, "", 422, "invalid_field", "name"},
		{"name too long", "POST", create, `{"name":"` + strings.Repeat("n", 513) + `","limit":1}`, "", 422, "invalid_field", "name"},
		{"rename to a bad name", "PATCH", patch, `{"name":"x<y"}`, "", 422, "invalid_field", "name"},
		{"names with percent", "POST", inc, `{"names":["l","a%b"],"slots":1}`, "", 422, "invalid_field", "names"},
		{"names with ampersand", "POST", dec, `{"names":["a&b"],"slots":1}`, "", 422, "invalid_field", "names"},
		{"names with angle brackets", "POST", incL, `{"names":["<b>"],"slots":1}`, "", 422, "invalid_field", "names"},
		{"names with a newline", "POST", inc, `{"names":["a\nb"],"slots":1}`, "", 422, "invalid_field", "names"},
		{"empty name in names", "POST", inc, `{"names":[""],"slots":1}`, "", 422, "invalid_field", "names"},
		{"no names", "POST", inc, `{"names":[],"slots":1}`, "", 422, "invalid_field", "names"},
		{"too many names", "POST", inc, `{"names":` + manyNames + `,"slots":1}`, "", 422, "invalid_field", "names"},

		// Enumerations.
		{"bad mode", "POST", inc, `{"names":["l"],"slots":1,"mode":"greedy"}`, "", 422, "invalid_field", "mode"},
		{"empty mode", "POST", incL, `{"names":["l"],"slots":1,"mode":""}`, "", 422, "invalid_field", "mode"},
		{"bad holder type", "POST", incL, `{"names":["l"],"slots":1,"holder":{"type":"robot","id":"x"}}`, "", 422, "invalid_field", "holder.type"},

		// Path parameters.
		{"renew a non-UUID", "POST", v2 + "/leases/nope/renew", `{}`, "", 422, "invalid_field", "lease_id"},
		{"read a non-UUID lease", "GET", v2 + "/leases/nope", ``, "", 422, "invalid_field", "lease_id"},

		// Accepted: what Prefect clients and curl users send.
		{"whole float limit", "POST", create, `{"name":"whole","limit":3.0}`, "", 201, "", ""},
		{"charset parameter", "POST", create, `{"name":"charset","limit":1}`, "application/json; charset=utf-8", 201, "", ""},
		{"merge-patch type", "PATCH", patch, `{"limit":10}`, "application/merge-patch+json", 204, "", ""},
		{"no content type", "POST", inc, `{"names":["nothing"],"slots":1}`, "-", 200, "", ""},
		{"unknown keys on increment", "POST", inc, `{"names":["nothing"],"slots":1,"bogus":{"x":1}}`, "", 200, "", ""},
		{"null holder", "POST", incL, `{"names":["nothing"],"slots":1,"holder":null,"create_if_missing":null}`, "", 200, "", ""},
		{"empty patch", "PATCH", patch, `{}`, "", 204, "", ""},
		{"filter with whitespace body", "POST", v2 + "/filter", " \n ", "", 200, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, err := http.NewRequest(c.method, b.srv.URL+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			switch c.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", c.contentType)
			}
			resp, err := b.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			r := response{status: resp.StatusCode, header: resp.Header, body: data}
			if c.code == "" {
				r.want(t, c.status)
				return
			}
			p := r.wantProblem(t, c.status, c.code, c.field)
			if bytes.Contains(data, []byte("panic")) {
				t.Errorf("problem mentions a panic: %s", data)
			}
			_ = p
		})
	}
}
