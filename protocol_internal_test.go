package allot

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/sema"
)

// The SDK restates a few of the server's limits, because it must act on
// them before it sends a request. This file checks each against the server:
// its constant in sema or coord, or the OpenAPI document it serves.

func TestConstantsAgreeWithTheServer(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					MaxLength *int     `json:"maxLength"`
					Maximum   *float64 `json:"maximum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI(), &doc); err != nil {
		t.Fatalf("read the OpenAPI document: %v", err)
	}
	// schemaBound returns the maxLength or maximum of a property of a
	// schema of the document.
	schemaBound := func(schema, property string) float64 {
		t.Helper()
		p, ok := doc.Components.Schemas[schema].Properties[property]
		switch {
		case !ok:
			t.Fatalf("the OpenAPI document has no property %s.%s", schema, property)
		case p.MaxLength != nil:
			return float64(*p.MaxLength)
		case p.Maximum != nil:
			return *p.Maximum
		}
		t.Fatalf("%s.%s has neither maxLength nor maximum", schema, property)
		return 0
	}
	tests := []struct {
		name      string
		sdk, want float64
	}{
		{"maxStateMessage is sema.MaxRunMessage", maxStateMessage, sema.MaxRunMessage},
		{"maxStateMessage is a state entry's maxLength", maxStateMessage, schemaBound("StateEntry", "message")},
		{"maxPage is a filter's maximum limit", maxPage, schemaBound("FilterRequest", "limit")},
		{"maxLongPoll is an increment's maximum timeout_seconds", maxLongPoll.Seconds(), schemaBound("IncrementWithLeaseRequest", "timeout_seconds")},
		{"maxLongPoll is a run wait's maximum timeout_seconds", maxLongPoll.Seconds(), schemaBound("WaitRequest", "timeout_seconds")},
		{"DefaultRunLeaseDuration is the server's", DefaultRunLeaseDuration.Seconds(), coord.DefaultConfig().RunLeaseDuration.Seconds()},
	}
	for _, tt := range tests {
		if tt.sdk != tt.want {
			t.Errorf("%s: the SDK says %v, the server %v", tt.name, tt.sdk, tt.want)
		}
	}
}

// TestTruncateMessageIsTheServersRule: the SDK cuts a state message exactly
// as the server would, so what it sends is what the run keeps.
func TestTruncateMessageIsTheServersRule(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"",
		"boom",
		strings.Repeat("a", maxStateMessage),
		strings.Repeat("a", maxStateMessage+1),
		strings.Repeat("é", 2000),
		"a" + strings.Repeat("é", 2000),
		strings.Repeat("€", 1000),
		strings.Repeat("𝄞", 1000),
		"a\xffb" + strings.Repeat("\xff", 3000),
		strings.Repeat("x", 1<<20),
	} {
		if got, want := truncateMessage(s), sema.TruncateRunMessage(s); got != want {
			t.Errorf("truncateMessage of %d bytes = %d bytes, the server keeps %d", len(s), len(got), len(want))
		}
	}
}
