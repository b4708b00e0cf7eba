package allot

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/sema"
)

// The SDK restates a few of the server's limits, because it must act on
// them before it sends a request. This file checks each against the server:
// its constant in sema or coord, or the OpenAPI document it serves.

// openAPIDoc is the part of the server's OpenAPI document these tests read.
type openAPIDoc struct {
	Paths map[string]struct {
		Get struct {
			Parameters []struct {
				Name   string `json:"name"`
				Schema struct {
					Maximum *float64 `json:"maximum"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"get"`
	} `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Enum       []string `json:"enum"`
			Properties map[string]struct {
				MaxLength *int     `json:"maxLength"`
				Maximum   *float64 `json:"maximum"`
				Default   any      `json:"default"`
				Enum      []string `json:"enum"`
				Ref       string   `json:"$ref"`
			} `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

func readOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(httpapi.OpenAPI(), &doc); err != nil {
		t.Fatalf("read the OpenAPI document: %v", err)
	}
	return &doc
}

// property returns a property of a schema of the document.
func (d *openAPIDoc) property(t *testing.T, schema, property string) (maxLength *int, maximum *float64, def any, enum []string) {
	t.Helper()
	p, ok := d.Components.Schemas[schema].Properties[property]
	if !ok {
		t.Fatalf("the OpenAPI document has no property %s.%s", schema, property)
	}
	enum = p.Enum
	if p.Ref != "" {
		enum = d.Components.Schemas[strings.TrimPrefix(p.Ref, "#/components/schemas/")].Enum
	}
	return p.MaxLength, p.Maximum, p.Default, enum
}

func TestConstantsAgreeWithTheServer(t *testing.T) {
	t.Parallel()
	doc := readOpenAPI(t)
	// bound returns the maxLength or maximum of a property of a schema.
	bound := func(schema, property string) float64 {
		t.Helper()
		maxLength, maximum, _, _ := doc.property(t, schema, property)
		switch {
		case maxLength != nil:
			return float64(*maxLength)
		case maximum != nil:
			return *maximum
		}
		t.Fatalf("%s.%s has neither maxLength nor maximum", schema, property)
		return 0
	}
	byDefault := func(schema, property string) float64 {
		t.Helper()
		_, _, def, _ := doc.property(t, schema, property)
		f, ok := def.(float64)
		if !ok {
			t.Fatalf("%s.%s has no numeric default (%v)", schema, property, def)
		}
		return f
	}
	// paramMax returns the maximum of a parameter of a GET route.
	paramMax := func(path, param string) float64 {
		t.Helper()
		for _, p := range doc.Paths[path].Get.Parameters {
			if p.Name == param && p.Schema.Maximum != nil {
				return *p.Schema.Maximum
			}
		}
		t.Fatalf("GET %s has no parameter %s with a maximum", path, param)
		return 0
	}
	cfg := coord.DefaultConfig()
	tests := []struct {
		name      string
		sdk, want float64
	}{
		{"maxStateMessage is sema.MaxRunMessage", maxStateMessage, sema.MaxRunMessage},
		{"maxStateMessage is a state entry's maxLength", maxStateMessage, bound("StateEntry", "message")},
		{"maxPage is a filter's maximum limit", maxPage, bound("FilterRequest", "limit")},
		{"maxPage is a tag filter's maximum limit", maxPage, bound("TagFilterRequest", "limit")},
		{"maxPage is a filter's default limit", maxPage, byDefault("FilterRequest", "limit")},
		{"maxLongPoll is an increment's maximum timeout_seconds", maxLongPoll.Seconds(), bound("IncrementWithLeaseRequest", "timeout_seconds")},
		{"maxLongPoll is a rate limit's maximum timeout_seconds", maxLongPoll.Seconds(), bound("IncrementRequest", "timeout_seconds")},
		{"maxLongPoll is a run wait's maximum timeout_seconds", maxLongPoll.Seconds(), bound("WaitRequest", "timeout_seconds")},
		{"DefaultRunLeaseDuration is the server's", DefaultRunLeaseDuration.Seconds(), cfg.RunLeaseDuration.Seconds()},
		{"DefaultLeaseDuration is the server's", DefaultLeaseDuration.Seconds(), cfg.DefaultLeaseDuration.Seconds()},
		{"DefaultLeaseDuration is an increment's default lease_duration", DefaultLeaseDuration.Seconds(), byDefault("IncrementWithLeaseRequest", "lease_duration")},
	}
	for _, tt := range tests {
		if tt.sdk != tt.want {
			t.Errorf("%s: the SDK says %v, the server %v", tt.name, tt.sdk, tt.want)
		}
	}
	// Bounds the SDK stays within rather than equals.
	if max := paramMax("/v2/concurrency_limits/leases/{lease_id}/watch", "timeout_seconds"); watchPoll.Seconds() > max {
		t.Errorf("watchPoll is %v, more than the watch's maximum timeout_seconds %v", watchPoll, max)
	}
	for _, d := range []time.Duration{DefaultLeaseDuration, DefaultRunLeaseDuration} {
		if d < cfg.MinLeaseDuration || d > cfg.MaxLeaseDuration {
			t.Errorf("default lease duration %v is outside the server's %v to %v", d, cfg.MinLeaseDuration, cfg.MaxLeaseDuration)
		}
	}
}

// TestNamesAgreeWithTheServer: every name the SDK sends or compares with
// (states, kinds, modes, codes, prefixes) is one the server knows.
func TestNamesAgreeWithTheServer(t *testing.T) {
	t.Parallel()
	doc := readOpenAPI(t)
	enum := func(schema, property string) []string {
		t.Helper()
		_, _, _, e := doc.property(t, schema, property)
		if len(e) == 0 {
			t.Fatalf("%s.%s has no enum", schema, property)
		}
		return e
	}
	var runStates []string
	for s := sema.Pending; s <= sema.Cancelled; s++ {
		runStates = append(runStates, s.String())
	}
	codes := doc.Components.Schemas["Problem"].Properties["code"].Enum
	tests := []struct {
		name  string
		sdk   []string
		known []string
	}{
		{"run states are sema's", []string{StatePending, StateAwaitingConcurrencySlot, StateRunning, StateCompleted, StateFailed, StateCrashed, StateCancelled}, runStates},
		{"run states are the document's", []string{StatePending, StateAwaitingConcurrencySlot, StateRunning, StateCompleted, StateFailed, StateCrashed, StateCancelled}, enum("Run", "state")},
		{"run kinds are sema's", []string{kindTask, kindFlow}, []string{sema.KindTask.String(), sema.KindFlow.String()}},
		{"run kinds are the document's", []string{kindTask, kindFlow}, enum("RunCreate", "kind")},
		{"cancel_new is a collision strategy", []string{collisionCancelNew}, enum("RunCreate", "collision_strategy")},
		{"rate_limit is an increment's mode", []string{modeRateLimit}, enum("IncrementRequest", "mode")},
		{"the default holder's kind is a holder type", []string{holderProcess}, enum("Holder", "type")},
		{"tag limits' holder types are holder types", []string{KindTag.HolderType(), KindLabel.HolderType()}, enum("Holder", "type")},
		{"lease states are the watch's", []string{leaseHeld, leaseReleased, leaseExpired, leaseRevoked, leaseNotFound}, enum("LeaseStatus", "state")},
		{"Code constants are the server's codes", []string{CodeSlotsExceedLimit, CodeNoDecay, CodeTemplateNotAcquirable, CodeNameTaken, CodeLimitNotFound, CodeLeaseNotFound, CodeInvalidField}, codes},
	}
	for _, tt := range tests {
		for _, v := range tt.sdk {
			if !slices.Contains(tt.known, v) {
				t.Errorf("%s: the SDK's %q is not among %q", tt.name, v, tt.known)
			}
		}
	}
	// The exact pairs: the SDK's kind of tag limit and sema's kind of run.
	for _, tc := range []struct {
		sdk TagLimitKind
		run sema.RunKind
	}{{KindTag, sema.KindTask}, {KindLabel, sema.KindFlow}} {
		if got, want := tc.sdk.LimitPrefix(), tc.run.LimitPrefix(); got != want {
			t.Errorf("%s.LimitPrefix() = %q, the server's %q", tc.sdk, got, want)
		}
		if got, want := tc.sdk.HolderType(), tc.run.HolderType(); got != want {
			t.Errorf("%s.HolderType() = %q, the server's %q", tc.sdk, got, want)
		}
		if got, want := string(tc.sdk), tc.run.Noun(); got != want {
			t.Errorf("kind %q is the server's %q", got, want)
		}
	}
}

// TestGeneratedIDsAreTheServers: the tickets and run ids the SDK makes up
// pass the server's rules.
func TestGeneratedIDsAreTheServers(t *testing.T) {
	t.Parallel()
	for range 100 {
		if ticket := newTicket(); sema.ValidateTicket(ticket) != "" {
			t.Fatalf("ticket %q: %s", ticket, sema.ValidateTicket(ticket))
		}
		id := newRunID()
		u, err := uuid.Parse(id)
		if err != nil || u.String() != id || u.Version() != 4 {
			t.Fatalf("run id %q is not a canonical version-4 UUID: %v", id, err)
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
