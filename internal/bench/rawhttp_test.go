package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
		code, body, err := rc.post(context.Background(), tc.path, []byte(tc.body))
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
	if _, _, err := rc.post(ctx, "/slow", []byte("{}")); err == nil {
		t.Fatalf("post with a cancelled context: got no error, want one")
	}
}
