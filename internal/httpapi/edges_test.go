package httpapi_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/httpapi"
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

// TestSlowBodyIsCutOffButALongPollIsNot: a client that trickles its body
// is answered 408 and cut off within the body bound, while a request that
// waits in line longer than the bound after sending its body is answered
// when its wait ends.
func TestSlowBodyIsCutOffButALongPollIsNot(t *testing.T) {
	t.Parallel()
	const bound = 300 * time.Millisecond
	b := setupWith(t, setupOpts{options: func(o *httpapi.Options) { o.BodyReadTimeout = bound }})

	t.Run("trickled body", func(t *testing.T) {
		t.Parallel()
		rc := dialRaw(t, b)
		if err := rc.c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := fmt.Fprintf(rc.c, "POST %s/filter HTTP/1.1\r\nHost: allot\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", v2); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // one byte every 50 ms: never idle for the bound, never done
			defer close(done)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := rc.c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		defer func() { close(stop); <-done }()
		req, _ := http.NewRequest("POST", v2+"/filter", nil)
		resp, err := http.ReadResponse(rc.br, req)
		if err != nil {
			t.Fatalf("no answer to a trickled body within 5 s: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("got %d, want 408", resp.StatusCode)
		}
		// Cut off within the bound, with a generous margin.
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("answered after %v, want about %v", el, bound)
		}
		if _, err := io.ReadAll(rc.br); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Errorf("connection after the 408: %v, want it closed", err)
		}
	})

	t.Run("long poll", func(t *testing.T) {
		t.Parallel()
		b.create(t, map[string]any{"name": "slow-body-db", "limit": 1})
		b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"slow-body-db"}, "slots": 1}).want(t, 200)
		start := time.Now()
		// Waits in line 1 s, more than three times the bound, and is
		// answered when its wait runs out, not cut off.
		b.do(t, "POST", v2+"/increment-with-lease", map[string]any{"names": []string{"slow-body-db"}, "slots": 1, "timeout_seconds": 1}).
			wantProblem(t, http.StatusLocked, "locked", "")
		if el := time.Since(start); el < time.Second {
			t.Errorf("answered after %v, want after its 1 s wait", el)
		}
	})
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "i/o timeout"))
}
