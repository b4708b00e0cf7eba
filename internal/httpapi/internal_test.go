package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
)

func TestRecoverTurnsAPanicIntoA500Problem(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	h := newHandler(nil, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	rec := httptest.NewRecorder()
	h.middleware(mux).ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %q, want a 500 problem", rec.Code, rec.Header().Get("Content-Type"))
	}
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != "internal" {
		t.Errorf("got problem %+v (%v), want code internal", p, err)
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("the panic was not logged: %s", logs.String())
	}
}

func TestErrorTable(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("do something: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want problem
	}{
		{"limit not found", wrap(sema.ErrLimitNotFound), problem{Status: 404, Code: "limit_not_found", Detail: "Concurrency Limit not found"}},
		{"lease not found", wrap(sema.ErrLeaseNotFound), problem{Status: 410, Code: "lease_not_found", Detail: "Lease not found - it may have expired or been revoked"}},
		{"name taken", wrap(sema.ErrNameTaken), problem{Status: 409, Code: "name_taken", Detail: detailNameTaken}},
		{"name taken, named", wrap(&sema.NameTakenError{Name: "db"}), problem{Status: 409, Code: "name_taken",
			Detail: "Data integrity conflict: a limit named 'db' already exists."}},
		{"invalid", wrap(&sema.InvalidError{Field: "limit", Detail: "must be positive"}), problem{Status: 422, Code: "invalid_field", Field: "limit", Detail: "must be positive"}},
		{"slots exceed", &sema.NeverError{Reason: "slots_exceed_limit", Names: []string{"a"}, Detail: "Slots requested is greater than the limit"},
			problem{Status: 422, Code: "slots_exceed_limit", Detail: "Slots requested is greater than the limit", Limits: []string{"a"}}},
		{"no decay", &sema.NeverError{Reason: "no_decay", Names: []string{"a"}, Detail: "no decay"}, problem{Status: 422, Code: "no_decay", Detail: "no decay", Limits: []string{"a"}}},
		{"template", &sema.NeverError{Reason: "template", Names: []string{"a*"}, Detail: "a template"}, problem{Status: 422, Code: "template_not_acquirable", Detail: "a template", Limits: []string{"a*"}}},
		{"unavailable", fmt.Errorf("%w: disk", coord.ErrUnavailable), problem{Status: 503, Code: "unavailable", Detail: "Service Unavailable"}},
		{"cancelled", context.Canceled, problem{Status: 503, Code: "unavailable", Detail: "request canceled"}},
		{"unknown", errors.New("surprise"), problem{Status: 500, Code: "internal", Detail: "Internal Server Error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.want.Type = problemBase + tc.want.Code
			tc.want.Title = http.StatusText(tc.want.Status)
			if diff := cmp.Diff(tc.want, problemFor(tc.err)); diff != "" {
				t.Errorf("problem (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("locked", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		h := newHandler(nil, Options{})
		h.writeProblem(rec, httptest.NewRequest("POST", "/", nil), &sema.LockedError{RetryAfter: 2273150 * time.Microsecond, Blocking: "a", Full: []string{"a"}, Used: 3, Capacity: 3})
		if rec.Code != http.StatusLocked || rec.Header().Get("Retry-After") != "2.2732" {
			t.Errorf("got %d with Retry-After %q, want 423 and 2.2732", rec.Code, rec.Header().Get("Retry-After"))
		}
		if !strings.Contains(rec.Body.String(), `"detail":"Concurrency limit \"a\" is full (3/3 slots in use)"`) || !strings.Contains(rec.Body.String(), `"retry_after":2.2732`) {
			t.Errorf("got body %s", rec.Body)
		}
	})
}
