package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/oasdiff/yaml"

	"github.com/allot-dev/allot/internal/httpapi"
)

func loadDoc(t *testing.T, data []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	return doc
}

func TestOpenAPIDocumentIsValidAndItsYAMLIsTheSame(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fromJSON := loadDoc(t, b.do(t, "GET", "/api/openapi.json", nil).want(t, 200).body)
	fromYAML := loadDoc(t, b.do(t, "GET", "/api/openapi.yaml", nil).want(t, 200).body)
	j, _ := json.Marshal(fromJSON)
	y, _ := json.Marshal(fromYAML)
	var jv, yv any
	_ = json.Unmarshal(j, &jv)
	_ = json.Unmarshal(y, &yv)
	if diff := cmp.Diff(jv, yv); diff != "" {
		t.Errorf("YAML document differs from JSON (-json +yaml):\n%s", diff)
	}
	// And parsed as plain data, not only as OpenAPI: every key and value
	// of the one document is in the other.
	var rawJSON, rawYAML any
	if err := json.Unmarshal(b.do(t, "GET", "/api/openapi.json", nil).want(t, 200).body, &rawJSON); err != nil {
		t.Fatal(err)
	}
	if _, err := yaml.Unmarshal(b.do(t, "GET", "/api/openapi.yaml", nil).want(t, 200).body, &rawYAML, yaml.DecodeOpts{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rawJSON, rawYAML); diff != "" {
		t.Errorf("YAML data differs from JSON (-json +yaml):\n%s", diff)
	}
	// Every extension field says so.
	var raw map[string]any
	_ = json.Unmarshal(httpapi.OpenAPI(), &raw)
	schemas := raw["components"].(map[string]any)["schemas"].(map[string]any)
	for schema, field := range map[string]string{"Limit": "holders", "LeaseGrant": "fencing_token", "IncrementWithLeaseRequest": "timeout_seconds",
		"Problem": "code", "Holder": "metadata", "FilterRequest": "detail", "TagLimit": "holders", "LabelLimit": "waiting"} {
		desc, _ := schemas[schema].(map[string]any)["properties"].(map[string]any)[field].(map[string]any)["description"].(string)
		if len(desc) < 15 || desc[:15] != "allot extension" {
			t.Errorf("%s.%s: description %q does not start with \"allot extension\"", schema, field, desc)
		}
	}
}

// checker validates requests and responses against the OpenAPI document as
// they pass through an HTTP client.
type checker struct {
	t      *testing.T
	router routers.Router
	base   http.RoundTripper

	mu sync.Mutex
	// validRequest says whether the next request must match the document.
	validRequest bool
	seen         map[string]bool // "METHOD path-template status"
}

func (c *checker) RoundTrip(req *http.Request) (*http.Response, error) {
	t := c.t
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Errorf("%s %s: not in the OpenAPI document: %v", req.Method, req.URL.Path, err)
		return c.base.RoundTrip(req)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: req.Clone(context.Background()), PathParams: params, Route: route, Options: opts}
	in.Request.Body = io.NopCloser(bytes.NewReader(reqBody))
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)
	c.mu.Lock()
	wantValid := c.validRequest
	c.mu.Unlock()
	switch {
	case wantValid && reqErr != nil:
		t.Errorf("%s %s %s: request does not match the document: %v", req.Method, req.URL.Path, reqBody, reqErr)
	case !wantValid && reqErr == nil:
		t.Errorf("%s %s %s: the document accepts a request the server should refuse", req.Method, req.URL.Path, reqBody)
	}
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: opts,
	}); err != nil {
		t.Errorf("%s %s -> %d %s: response does not match the document: %v", req.Method, req.URL.Path, resp.StatusCode, body, err)
	}
	c.mu.Lock()
	c.seen[fmt.Sprintf("%s %s %d", req.Method, route.Path, resp.StatusCode)] = true
	c.mu.Unlock()
	return resp, nil
}

func (c *checker) expectValid(v bool) {
	c.mu.Lock()
	c.validRequest = v
	c.mu.Unlock()
}

// TestRequestsAndResponsesMatchTheOpenAPIDocument drives every route with
// real requests and checks both sides against the document.
func TestRequestsAndResponsesMatchTheOpenAPIDocument(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := loadDoc(t, httpapi.OpenAPI())
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	c := &checker{t: t, router: router, base: b.client.Transport, validRequest: true, seen: map[string]bool{}}
	b.client = &http.Client{Transport: c}

	l := b.create(t, map[string]any{"name": "db", "limit": 2, "slot_decay_per_second": 0, "active": true, "active_slots": 0, "denied_slots": 0})
	b.create(t, map[string]any{"name": "api", "limit": 5, "slot_decay_per_second": 2.5})
	b.create(t, map[string]any{"name": "job:*", "limit": 1, "idle_seconds": 600})
	b.do(t, "PUT", v2+"/ensured", map[string]any{"limit": 1, "active": true, "slot_decay_per_second": 0}).want(t, 201)
	b.do(t, "PUT", v2+"/ensured", map[string]any{"name": "ensured", "limit": 2}).want(t, 200)
	g := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"db", "job:1"}, "slots": 1, "mode": "concurrency",
		"lease_duration": 60, "timeout_seconds": 1, "create_if_missing": nil,
		"holder": map[string]any{"type": "task_run", "id": uuid.NewString(), "metadata": map[string]string{"host": "h1"}}}).want(t, 200))
	b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"db"}, "slots": 1, "holder": nil}).want(t, 200)
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"api"}, "slots": 2, "mode": "rate_limit"}).want(t, 200)
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"db"}, "slots": 1}).want(t, 423)
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"db"}, "slots": 3}).want(t, 422)
	b.do(t, "POST", v2+"/increment", map[string]any{"names": []string{"db"}, "slots": 1, "mode": "rate_limit"}).want(t, 422)
	b.read(t, "db")
	b.read(t, l.ID)
	b.read(t, "job:1")
	b.do(t, "GET", v2+"/nope", nil).want(t, 404)
	b.do(t, "POST", v2+"/filter", nil).want(t, 200)
	b.do(t, "POST", v2+"/filter", map[string]any{"limit": 2, "offset": 1, "detail": "full"}).want(t, 200)
	b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 200)
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", map[string]any{"lease_duration": 120}).want(t, 204)
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", nil).want(t, 204)
	b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch?timeout_seconds=0", nil).want(t, 200)
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": g.LeaseID}).want(t, 204)
	b.do(t, "GET", v2+"/leases/"+g.LeaseID+"/watch", nil).want(t, 200)
	b.do(t, "GET", v2+"/leases/"+uuid.NewString()+"/watch?timeout_seconds=1", nil).want(t, 200)
	held := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"db"}, "slots": 1}).want(t, 200))
	b.do(t, "POST", v2+"/leases/"+held.LeaseID+"/revoke", map[string]any{"reason": "maintenance"}).want(t, 200)
	b.do(t, "POST", v2+"/leases/"+held.LeaseID+"/revoke", nil).want(t, 410)
	b.do(t, "GET", v2+"/leases/"+g.LeaseID, nil).want(t, 410)
	b.do(t, "POST", v2+"/leases/"+g.LeaseID+"/renew", map[string]any{"lease_duration": 120}).want(t, 410)
	b.do(t, "POST", v2+"/decrement", map[string]any{"names": []string{"db", "api"}, "slots": 1, "occupancy_seconds": 1.5}).want(t, 200)
	b.do(t, "PATCH", v2+"/db", map[string]any{"limit": 3, "active": false, "name": "database"}).want(t, 204)
	b.do(t, "PATCH", v2+"/database", map[string]any{"name": "api"}).want(t, 409)
	b.do(t, "DELETE", v2+"/database", nil).want(t, 204)
	b.do(t, "DELETE", v2+"/database", nil).want(t, 404)
	b.do(t, "POST", v2+"/", map[string]any{"name": "api", "limit": 1}).want(t, 409)
	b.do(t, "PATCH", v2+"/job:*", map[string]any{"idle_seconds": 60}).want(t, 204)
	b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "job:*", "dry_run": true}).want(t, 200)
	b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "*", "all": true, "templates": false}).want(t, 200)
	b.do(t, "POST", v2+"/delete", map[string]any{"pattern": "*"}).want(t, 422)
	b.do(t, "GET", "/api/health", nil).want(t, 200)
	b.do(t, "GET", "/api/ready", nil).want(t, 200)
	b.do(t, "GET", "/api/openapi.json", nil).want(t, 200)
	b.do(t, "GET", "/api/openapi.yaml", nil).want(t, 200)
	b.do(t, "GET", "/metrics", nil).want(t, 200)
	b.do(t, "GET", "/api/admin/version", nil).want(t, 200)

	// Requests the document refuses are refused by the server too, with
	// answers the document describes.
	c.expectValid(false)
	for _, r := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"POST", v2 + "/", map[string]any{"name": "x", "limit": 1, "avg_slot_occupancy_seconds": 2}, 422},
		{"POST", v2 + "/", map[string]any{"name": "a/b", "limit": 1}, 422},
		{"POST", v2 + "/", map[string]any{"name": "x", "limit": -1}, 422},
		{"POST", v2 + "/", map[string]any{"name": "x"}, 422},
		{"PATCH", v2 + "/api", map[string]any{"limit": 1.5}, 422},
		{"POST", v2 + "/filter", map[string]any{"limit": 201}, 422},
		{"POST", v2 + "/delete", map[string]any{"pattern": "x", "force": true}, 422},
		{"PUT", v2 + "/ensured", map[string]any{"active": true}, 422},
		{"POST", v2 + "/", map[string]any{"name": "x:*", "limit": 1, "idle_seconds": -1}, 422},
		{"POST", v2 + "/increment", map[string]any{"names": []string{}, "slots": 1}, 422},
		{"POST", v2 + "/increment", map[string]any{"names": []string{"api"}, "slots": 0}, 422},
		{"POST", v2 + "/increment-with-lease", map[string]any{"names": []string{"api"}, "slots": 1, "lease_duration": 0.5}, 422},
		{"POST", v2 + "/increment-with-lease", map[string]any{"names": []string{"api"}, "slots": 1, "holder": map[string]any{"type": "robot", "id": "x"}}, 422},
		{"POST", v2 + "/increment-with-lease", map[string]any{"names": []string{"api"}, "slots": 1, "timeout_seconds": 4000}, 422},
		{"POST", v2 + "/decrement", map[string]any{"names": []string{"api"}, "slots": 1, "occupancy_seconds": 0}, 422},
		{"POST", v2 + "/decrement-with-lease", map[string]any{"lease_id": "nope"}, 422},
		{"POST", v2 + "/leases/nope/renew", map[string]any{}, 422},
		{"GET", v2 + "/leases/" + g.LeaseID + "/watch?timeout_seconds=301", nil, 422},
		{"GET", v2 + "/leases/nope/watch", nil, 422},
		{"POST", v2 + "/leases/" + g.LeaseID + "/revoke", map[string]any{"why": "x"}, 422},
	} {
		b.do(t, r.method, r.path, r.body).want(t, r.status)
	}

	for _, want := range []string{
		"POST /v2/concurrency_limits/ 201", "GET /v2/concurrency_limits/{id_or_name} 200", "PATCH /v2/concurrency_limits/{id_or_name} 204",
		"DELETE /v2/concurrency_limits/{id_or_name} 204", "POST /v2/concurrency_limits/filter 200", "POST /v2/concurrency_limits/increment 200",
		"POST /v2/concurrency_limits/increment 423", "POST /v2/concurrency_limits/increment-with-lease 200", "POST /v2/concurrency_limits/decrement 200",
		"POST /v2/concurrency_limits/decrement-with-lease 204", "POST /v2/concurrency_limits/leases/{lease_id}/renew 204",
		"POST /v2/concurrency_limits/leases/{lease_id}/renew 410", "GET /v2/concurrency_limits/leases/{lease_id} 200",
		"GET /v2/concurrency_limits/leases/{lease_id}/watch 200", "POST /v2/concurrency_limits/leases/{lease_id}/revoke 200",
		"POST /v2/concurrency_limits/leases/{lease_id}/revoke 410",
		"POST /v2/concurrency_limits/delete 200", "POST /v2/concurrency_limits/delete 422",
		"PUT /v2/concurrency_limits/{id_or_name} 201", "PUT /v2/concurrency_limits/{id_or_name} 200",
		"GET /health 200", "GET /ready 200", "GET /openapi.json 200", "GET /openapi.yaml 200", "GET /metrics 200", "GET /admin/version 200",
	} {
		if !c.seen[want] {
			t.Errorf("never checked %s", want)
		}
	}
}

// TestTagLabelAndRunRoutesMatchTheOpenAPIDocument drives the v1 tag routes,
// the label routes and the runs routes with real requests and checks both
// sides against the document.
func TestTagLabelAndRunRoutesMatchTheOpenAPIDocument(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := loadDoc(t, httpapi.OpenAPI())
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	c := &checker{t: t, router: router, base: b.client.Transport, validRequest: true, seen: map[string]bool{}}
	b.client = &http.Client{Transport: c}

	for _, base := range []struct{ path, key, holder string }{
		{v1, "tag", "task_run_id"},
		{labels, "label", "flow_run_id"},
	} {
		l := decode[tagLimitDoc](t, b.do(t, "POST", base.path+"/", map[string]any{base.key: "db", "concurrency_limit": 1}).want(t, 201))
		b.do(t, "POST", base.path+"/", map[string]any{base.key: "db", "concurrency_limit": 2}).want(t, 200)
		b.do(t, "POST", base.path+"/", map[string]any{base.key: "zero", "concurrency_limit": 0}).want(t, 201)
		b.do(t, "GET", base.path+"/"+l.ID, nil).want(t, 200)
		b.do(t, "GET", base.path+"/"+base.key+"/db", nil).want(t, 200)
		b.do(t, "GET", base.path+"/"+base.key+"/nope", nil).want(t, 404)
		b.do(t, "POST", base.path+"/filter", nil).want(t, 200)
		b.do(t, "POST", base.path+"/filter", map[string]any{"limit": 10, "offset": 0}).want(t, 200)
		holder := uuid.NewString()
		for range 2 {
			b.do(t, "POST", base.path+"/increment", map[string]any{"names": []string{"db"}, base.holder: holder}).want(t, 200)
		}
		b.do(t, "POST", base.path+"/increment", map[string]any{"names": []string{"db"}, base.holder: holder}).want(t, 423)
		b.do(t, "POST", base.path+"/increment", map[string]any{"names": []string{"zero"}, base.holder: holder}).want(t, 423)
		b.do(t, "POST", base.path+"/decrement", map[string]any{"names": []string{"db"}, base.holder: holder, "occupancy_seconds": 1.5}).want(t, 200)
		b.do(t, "POST", base.path+"/"+base.key+"/db/reset", map[string]any{"slot_override": []string{uuid.NewString()}}).want(t, 200)
		b.do(t, "POST", base.path+"/"+base.key+"/db/reset", nil).want(t, 200)
		b.do(t, "DELETE", base.path+"/"+base.key+"/zero", nil).want(t, 200)
		b.do(t, "DELETE", base.path+"/"+l.ID, nil).want(t, 200)
		b.do(t, "DELETE", base.path+"/"+l.ID, nil).want(t, 404)
	}

	b.createTag(t, "one", 1)
	flow := b.newRun(t, map[string]any{"kind": "flow", "name": "nightly", "tags": []string{}, "collision_strategy": "enqueue", "lease_duration": 60})
	b.setState(t, flow.ID, "Running")
	task := b.newRun(t, map[string]any{"id": uuid.NewString(), "kind": "task", "tags": []string{"one"}, "parent_id": flow.ID})
	b.setState(t, task.ID, "Running")
	waiting := b.newRun(t, map[string]any{"kind": "task", "tags": []string{"one"}})
	b.do(t, "POST", runsPath+"/"+waiting.ID+"/set_state", map[string]any{"state": "Running", "message": "go"}).want(t, 200)
	b.do(t, "POST", runsPath+"/", map[string]any{"id": task.ID, "kind": "task"}).want(t, 409)
	b.do(t, "GET", runsPath+"/"+task.ID, nil).want(t, 200)
	b.do(t, "GET", runsPath+"/"+uuid.NewString(), nil).want(t, 404)
	b.do(t, "POST", runsPath+"/filter", nil).want(t, 200)
	b.do(t, "POST", runsPath+"/filter", map[string]any{"kind": "task", "state": "Running", "tag": "one", "flow_run_id": flow.ID, "limit": 5, "offset": 0}).want(t, 200)
	b.do(t, "POST", runsPath+"/"+task.ID+"/heartbeat", nil).want(t, 204)
	b.do(t, "POST", runsPath+"/"+task.ID+"/heartbeat", map[string]any{}).want(t, 204)
	b.do(t, "GET", runsPath+"/"+waiting.ID+"/wait?state=Running&timeout_seconds=0.01", nil).want(t, 200)
	b.do(t, "POST", runsPath+"/"+waiting.ID+"/wait", map[string]any{"state": "Completed", "timeout_seconds": 0.01}).want(t, 200)
	b.do(t, "POST", runsPath+"/"+task.ID+"/set_state", map[string]any{"state": "Completed"}).want(t, 200)
	b.do(t, "POST", runsPath+"/"+waiting.ID+"/wait", nil).want(t, 200) // its turn came
	b.do(t, "POST", runsPath+"/"+task.ID+"/set_state", map[string]any{"state": "Failed"}).want(t, 409)
	b.do(t, "POST", runsPath+"/"+task.ID+"/heartbeat", nil).want(t, 410)

	c.expectValid(false)
	for _, r := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"POST", v1 + "/", map[string]any{"tag": "x", "concurrency_limit": -1}, 422},
		{"POST", v1 + "/", map[string]any{"tag": "x", "concurrency_limit": 1, "extra": 1}, 422},
		{"POST", v1 + "/increment", map[string]any{"names": []string{"x"}, "task_run_id": "nope"}, 422},
		{"POST", v1 + "/tag/one/reset", map[string]any{"slot_override": []string{"nope"}}, 422},
		{"POST", labels + "/", map[string]any{"tag": "x", "concurrency_limit": 1}, 422},
		{"POST", runsPath + "/", map[string]any{"kind": "job"}, 422},
		{"POST", runsPath + "/", map[string]any{"kind": "task", "unknown": 1}, 422},
		{"POST", runsPath + "/" + task.ID + "/set_state", map[string]any{"state": "Pending"}, 422},
		{"POST", runsPath + "/filter", map[string]any{"limit": 201}, 422},
		{"GET", runsPath + "/" + task.ID + "/wait?state=Pending", nil, 422},
		{"GET", runsPath + "/nope", nil, 422},
	} {
		b.do(t, r.method, r.path, r.body).want(t, r.status)
	}

	for _, want := range []string{
		"POST /concurrency_limits/ 201", "POST /concurrency_limits/ 200", "GET /concurrency_limits/{id} 200",
		"GET /concurrency_limits/tag/{tag} 200", "GET /concurrency_limits/tag/{tag} 404", "POST /concurrency_limits/filter 200",
		"POST /concurrency_limits/increment 200", "POST /concurrency_limits/increment 423", "POST /concurrency_limits/decrement 200",
		"POST /concurrency_limits/tag/{tag}/reset 200", "DELETE /concurrency_limits/tag/{tag} 200", "DELETE /concurrency_limits/{id} 200",
		"DELETE /concurrency_limits/{id} 404",
		"POST /label_limits/ 201", "GET /label_limits/label/{label} 200", "POST /label_limits/increment 423", "POST /label_limits/label/{label}/reset 200",
		"POST /runs/ 201", "POST /runs/ 409", "GET /runs/{id} 200", "GET /runs/{id} 404", "POST /runs/filter 200",
		"POST /runs/{id}/set_state 200", "POST /runs/{id}/set_state 409", "POST /runs/{id}/heartbeat 204", "POST /runs/{id}/heartbeat 410",
		"GET /runs/{id}/wait 200", "POST /runs/{id}/wait 200",
	} {
		if !c.seen[want] {
			t.Errorf("never checked %s", want)
		}
	}
}
