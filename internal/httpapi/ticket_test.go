package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTicketRetryGetsTheSameLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "db", "limit": 2})
	body := map[string]any{"names": []string{"db"}, "slots": 1, "ticket": "job-42:try.1_x"}
	first := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", body).want(t, http.StatusOK))
	again := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", body).want(t, http.StatusOK))
	if again.LeaseID != first.LeaseID || again.FencingToken != first.FencingToken {
		t.Errorf("retry: lease %s fence %d, want %s fence %d", again.LeaseID, again.FencingToken, first.LeaseID, first.FencingToken)
	}
	if got := b.read(t, "db").ActiveSlots; got != 1 {
		t.Errorf("active slots = %d, want 1 (one lease)", got)
	}
	body["slots"] = 2
	b.do(t, "POST", v2+"/increment-with-lease", body).wantProblem(t, http.StatusConflict, "ticket_conflict", "")
	// Once released, the ticket is forgotten: the same ticket takes a new
	// lease.
	b.do(t, "POST", v2+"/decrement-with-lease", map[string]any{"lease_id": first.LeaseID}).want(t, http.StatusNoContent)
	body["slots"] = 1
	next := decode[grantDoc](t, b.do(t, "POST", v2+"/increment-with-lease", body).want(t, http.StatusOK))
	if next.LeaseID == first.LeaseID {
		t.Errorf("after release: got the released lease again")
	}
}

func TestTicketValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, map[string]any{"name": "db", "limit": 1})
	for _, tk := range []any{"", strings.Repeat("x", 129), "a b", "ü", "a/b", 42} {
		for _, route := range []string{"/increment-with-lease", "/increment"} {
			b.do(t, "POST", v2+route, map[string]any{"names": []string{"db"}, "slots": 1, "ticket": tk}).
				wantProblem(t, http.StatusUnprocessableEntity, "invalid_field", "ticket")
		}
	}
}

func TestCreateRunAgainReturnsIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := map[string]any{"id": "6b0b7c52-7a2e-4d5e-9a51-0d6c1c1e8f01", "kind": "task", "name": "etl", "tags": []string{"db"}}
	first := decode[runDoc](t, b.do(t, "POST", runsPath+"/", body).want(t, http.StatusCreated))
	again := decode[runDoc](t, b.do(t, "POST", runsPath+"/", body).want(t, http.StatusOK))
	if d := cmp.Diff(first, again); d != "" {
		t.Errorf("created again (-first +again):\n%s", d)
	}
	body["name"] = "other"
	b.do(t, "POST", runsPath+"/", body).wantProblem(t, http.StatusConflict, "run_exists", "")
}
