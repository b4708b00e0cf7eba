package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// rawConn is one kept-alive HTTP/1.1 connection to a test server, spoken
// by hand so that a test sees exactly when an answer ends.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, b *testBundle) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(b.srv.URL, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// roundTrip sends one request without a body and reads its whole answer,
// failing the test if that takes longer than within.
func (rc *rawConn) roundTrip(t *testing.T, method, path string, within time.Duration) *http.Response {
	t.Helper()
	if err := rc.c.SetDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(rc.c, "%s %s HTTP/1.1\r\nHost: allot\r\n\r\n", method, path); err != nil {
		t.Fatalf("%s %s: write: %v", method, path, err)
	}
	req, _ := http.NewRequest(method, path, nil)
	resp, err := http.ReadResponse(rc.br, req)
	if err != nil {
		t.Fatalf("%s %s: no answer within %v on a kept-alive connection: %v", method, path, within, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s %s: body did not end within %v: %v", method, path, within, err)
	}
	resp.Body.Close()
	return resp
}

// TestEveryRouteAnswersHEADAndTheConnectionLivesOn sends HEAD to every path
// of the OpenAPI document (which a test keeps equal to the routes), each on
// a kept-alive connection, and then a GET on the same connection: HEAD
// /api/events used to stream forever and hang the connection.
func TestEveryRouteAnswersHEADAndTheConnectionLivesOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var doc struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b.do(t, "GET", "/api/openapi.json", nil).want(t, 200).body, &doc); err != nil {
		t.Fatal(err)
	}
	params := regexp.MustCompile(`\{[^}]+\}`)
	var paths []string
	for p := range doc.Paths {
		paths = append(paths, "/api"+params.ReplaceAllString(p, "0b9e6ab4-6a44-4c1f-8d49-6f1f0c3a0b6e"))
	}
	slices.Sort(paths)
	if len(paths) < 30 {
		t.Fatalf("only %d paths in the OpenAPI document", len(paths))
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			rc := dialRaw(t, b)
			resp := rc.roundTrip(t, "HEAD", p, 3*time.Second)
			if resp.StatusCode >= 500 {
				t.Errorf("HEAD %s: %d, want an answer that is not a server fault", p, resp.StatusCode)
			}
			if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("HEAD %s: 405 without Allow", p)
			}
			if resp.Close {
				t.Errorf("HEAD %s: the server closed the connection", p)
			}
			if got := rc.roundTrip(t, "GET", "/api/health", 3*time.Second).StatusCode; got != 200 {
				t.Errorf("GET /api/health after HEAD %s on the same connection: %d, want 200", p, got)
			}
		})
	}
}

func TestHEADEventsAnswersTheStreamHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rc := dialRaw(t, b)
	resp := rc.roundTrip(t, "HEAD", "/api/events", 3*time.Second)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD /api/events: %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
