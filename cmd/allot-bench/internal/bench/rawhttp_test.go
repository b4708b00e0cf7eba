package bench

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func TestRawConnSpeaksHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		case "/chunked":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("part one, "))
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("part two"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusLocked)
			_, _ = w.Write([]byte("locked"))
		}
	}))
	defer srv.Close()
	rc, err := newRawConn(srv.URL + "/api")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	for _, tc := range []struct {
		path     string
		body     string
		wantCode int
		wantBody string
	}{
		{"/echo", `{"a":1}`, 200, `{"a":1}`},
		{"/chunked", `x`, 200, "part one, part two"},
		{"/empty", `{}`, 204, ""},
		{"/echo", `again on the same connection`, 200, `again on the same connection`},
		{"/close", `{}`, 423, "locked"},
		{"/echo", `after a close`, 200, `after a close`},
	} {
		code, body, err := rc.post(context.Background(), shortTimeout, tc.path, []byte(tc.body))
		if err != nil {
			t.Fatalf("POST %s: %v", tc.path, err)
		}
		if code != tc.wantCode || string(body) != tc.wantBody {
			t.Errorf("POST %s: got %d %q, want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
		}
	}
}

func TestRawConnHonoursCancel(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	rc, err := newRawConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := rc.post(ctx, shortTimeout, "/slow", []byte("{}")); err == nil {
		t.Fatalf("post with a cancelled context: got no error, want one")
	}
}

// A request under way ends when its context is cancelled or its time is
// up, and the connection then dials afresh for the next one.
func TestRawConnInterruptsInFlight(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-block
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	defer close(block)
	rc, err := newRawConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, _, err := rc.post(ctx, shortTimeout, "/slow", []byte("{}")); !errors.Is(err, context.Canceled) {
		t.Fatalf("post cancelled in flight: got %v, want context.Canceled", err)
	}
	if _, _, err := rc.post(context.Background(), 50*time.Millisecond, "/slow", []byte("{}")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("post past its timeout: got %v, want a deadline error", err)
	}
	code, body, err := rc.post(context.Background(), shortTimeout, "/fast", []byte("{}"))
	if err != nil || code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("post after interruptions: got %d %q %v, want 200 {}", code, body, err)
	}
}

func TestParseGrant(t *testing.T) {
	t.Parallel()
	for _, resp := range []string{
		`{"lease_id":"0196b1b4-5c1e-7a3b-8f00-000000000001","limits":[{"id":"x","name":"a","limit":1}],"fencing_token":42,"expires":"2026-01-01T00:00:00.000000Z","waited_seconds":0}`,
		`{"fencing_token": 42, "lease_id": "0196b1b4-5c1e-7a3b-8f00-000000000001"}`,
		`{"lease_id":"0196b1b4-5c1e-7a3b-8f00-000000000001","fencing_token":42}`,
	} {
		g, err := parseGrant([]byte(resp))
		if err != nil || g != (grant{LeaseID: "0196b1b4-5c1e-7a3b-8f00-000000000001", FencingToken: 42}) {
			t.Errorf("parseGrant(%s) = %+v, %v", resp, g, err)
		}
	}
	for _, resp := range []string{`{"lease_id":"a","fencing_token":1`, `not json`, `{"lease_id":1}`} {
		if g, err := parseGrant([]byte(resp)); err == nil {
			t.Errorf("parseGrant(%s) = %+v, want an error", resp, g)
		}
	}
}
