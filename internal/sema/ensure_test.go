package sema

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnsureLimit(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	decay := 2.5
	idle := 30 * time.Second
	type settings struct {
		Limit  int
		Active bool
		Decay  float64
		Idle   time.Duration
	}
	tests := []struct {
		name        string
		existing    *LimitSpec // nil: no limit of that name
		ensure      LimitEnsure
		wantCreated bool
		wantChanged bool // a change recorded (create or update)
		want        settings
	}{
		{"creates with defaults", nil, LimitEnsure{Name: "db", Limit: 3}, true, true, settings{3, true, 0, 0}},
		{"creates with the settings given", nil, LimitEnsure{Name: "db", Limit: 3, Active: &no, SlotDecayPerSecond: &decay}, true, true, settings{3, false, 2.5, 0}},
		{"creates a template with the default idle", nil, LimitEnsure{Name: "gpu:*", Limit: 1}, true, true, settings{1, true, 0, DefaultTemplateIdle}},
		{"creates a template with its idle", nil, LimitEnsure{Name: "gpu:*", Limit: 1, Idle: &idle}, true, true, settings{1, true, 0, idle}},
		{"same settings change nothing", &LimitSpec{Name: "db", Limit: 3, Active: true}, LimitEnsure{Name: "db", Limit: 3, Active: &yes}, false, false, settings{3, true, 0, 0}},
		{"nil fields keep an existing limit's", &LimitSpec{Name: "db", Limit: 3, SlotDecayPerSecond: 1}, LimitEnsure{Name: "db", Limit: 3}, false, false, settings{3, false, 1, 0}},
		{"a new limit count changes it", &LimitSpec{Name: "db", Limit: 3, Active: true}, LimitEnsure{Name: "db", Limit: 5}, false, true, settings{5, true, 0, 0}},
		{"active changes it", &LimitSpec{Name: "db", Limit: 3}, LimitEnsure{Name: "db", Limit: 3, Active: &yes}, false, true, settings{3, true, 0, 0}},
		{"decay changes it", &LimitSpec{Name: "db", Limit: 3, Active: true}, LimitEnsure{Name: "db", Limit: 3, SlotDecayPerSecond: &decay}, false, true, settings{3, true, 2.5, 0}},
		{"idle changes a template", &LimitSpec{Name: "gpu:*", Limit: 1, Active: true}, LimitEnsure{Name: "gpu:*", Limit: 1, Idle: &idle}, false, true, settings{1, true, 0, idle}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var before Limit
			if tt.existing != nil {
				before = b.createSpec(t0, *tt.existing)
				b.events()
			}
			l, created, err := b.m.EnsureLimit(at(time.Second), limitID(99), tt.ensure)
			if err != nil {
				t.Fatalf("EnsureLimit: %v", err)
			}
			if created != tt.wantCreated {
				t.Errorf("created = %v, want %v", created, tt.wantCreated)
			}
			if tt.existing != nil && l.ID != before.ID {
				t.Errorf("EnsureLimit returned limit %v, want the existing %v", l.ID, before.ID)
			}
			got := settings{l.Limit, l.Active, l.SlotDecayPerSecond, l.Idle}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("settings (-want +got):\n%s", d)
			}
			changes, events := b.m.Drain()
			if changed := len(changes) > 0; changed != tt.wantChanged {
				t.Errorf("recorded %d changes, want changes: %v", len(changes), tt.wantChanged)
			}
			if changed := len(events) > 0; changed != tt.wantChanged {
				t.Errorf("recorded %d events, want events: %v", len(events), tt.wantChanged)
			}
			b.store.apply(changes)
			if d := cmp.Diff(l, b.store.limits[l.ID]); d != "" {
				t.Errorf("stored limit (-returned +stored):\n%s", d)
			}
			if n := b.m.LimitCount(); n != 1 {
				t.Errorf("LimitCount = %d, want 1", n)
			}
		})
	}
}

func TestEnsureLimitRefusalChangesNothing(t *testing.T) {
	t.Parallel()
	neg := -1.0
	idle := time.Minute
	tests := []struct {
		name      string
		existing  bool
		ensure    LimitEnsure
		wantField string
	}{
		{"bad name", false, LimitEnsure{Name: "a/b", Limit: 1}, "name"},
		{"negative limit, new", false, LimitEnsure{Name: "db", Limit: -1}, "limit"},
		{"negative limit, existing", true, LimitEnsure{Name: "db", Limit: -1}, "limit"},
		{"negative decay, existing", true, LimitEnsure{Name: "db", Limit: 1, SlotDecayPerSecond: &neg}, "slot_decay_per_second"},
		{"idle on a plain limit", true, LimitEnsure{Name: "db", Limit: 1, Idle: &idle}, "idle_seconds"},
		{"too long", false, LimitEnsure{Name: strings.Repeat("a", MaxNameLength+1), Limit: 1}, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tt.existing {
				b.create(t0, "db", 2)
				b.events()
			}
			_, _, err := b.m.EnsureLimit(at(time.Second), limitID(99), tt.ensure)
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("EnsureLimit: %v, want *InvalidError for %q", err, tt.wantField)
			}
			if c, e := b.m.Drain(); len(c) != 0 || len(e) != 0 {
				t.Errorf("a refused ensure recorded %d changes and %d events, want none", len(c), len(e))
			}
			if tt.existing {
				if v := b.view(at(time.Second), "db"); v.Limit.Limit != 2 {
					t.Errorf("limit = %d after a refused ensure, want 2", v.Limit.Limit)
				}
			}
		})
	}
}

// Lowering a limit through an ensure fails the waiters it can no longer
// grant, as an update does.
func TestEnsureLimitFailsHopelessWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t0, "db", 3)
	b.mustGrant(t0, b.req(1, "db"))
	r := b.req(3, "db")
	r.Wait = true
	w := b.mustWait(t0, r)
	b.events()
	if _, _, err := b.m.EnsureLimit(at(time.Second), limitID(99), LimitEnsure{Name: "db", Limit: 2}); err != nil {
		t.Fatal(err)
	}
	var failed []uint64
	for _, e := range b.events() {
		if e.Kind == WaiterFailed {
			failed = append(failed, e.WaiterID)
		}
	}
	if d := cmp.Diff([]uint64{w}, failed); d != "" {
		t.Errorf("failed waiters (-want +got):\n%s", d)
	}
}

func TestHolderValidate(t *testing.T) {
	t.Parallel()
	many := map[string]string{}
	for i := range MaxMetadataEntries + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name      string
		holder    Holder
		wantField string // "" means valid
	}{
		{"none", Holder{}, ""},
		{"process", Holder{Type: "process", ID: "host:1"}, ""},
		{"task run", Holder{Type: "task_run", ID: "x"}, ""},
		{"flow run", Holder{Type: "flow_run", ID: "x"}, ""},
		{"deployment", Holder{Type: "deployment", ID: "x", Metadata: map[string]string{"host": "h"}}, ""},
		{"longest id", Holder{Type: "process", ID: strings.Repeat("a", MaxHolderID)}, ""},
		{"unknown type", Holder{Type: "robot", ID: "x"}, "holder.type"},
		{"no type", Holder{ID: "x"}, "holder.type"},
		{"no id", Holder{Type: "process"}, "holder.id"},
		{"long id", Holder{Type: "process", ID: strings.Repeat("a", MaxHolderID+1)}, "holder.id"},
		{"too many metadata", Holder{Type: "process", ID: "x", Metadata: many}, "holder.metadata"},
		{"empty key", Holder{Type: "process", ID: "x", Metadata: map[string]string{"": "v"}}, "holder.metadata"},
		{"long key", Holder{Type: "process", ID: "x", Metadata: map[string]string{strings.Repeat("k", MaxMetadataKey+1): "v"}}, "holder.metadata"},
		{"long value", Holder{Type: "process", ID: "x", Metadata: map[string]string{"k": strings.Repeat("v", MaxMetadataValue+1)}}, "holder.metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.holder.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("Validate: %v, want *InvalidError for %q", err, tt.wantField)
			}
			// Acquire refuses it too, before anything changes.
			b := setup(t)
			b.create(t0, "db", 1)
			b.events()
			r := b.req(1, "db")
			r.Holder = tt.holder
			_, err = b.m.Acquire(t0, r)
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("Acquire: %v, want *InvalidError for %q", err, tt.wantField)
			}
			if c, e := b.m.Drain(); len(c) != 0 || len(e) != 0 {
				t.Errorf("a refused acquire recorded %d changes and %d events, want none", len(c), len(e))
			}
		})
	}
}

func TestPlainIncrement(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mode                   Mode
		wantNoLease, wantAnony bool
	}{
		{ModeConcurrency, false, true},
		{ModeRateLimit, true, false},
	} {
		noLease, anon := PlainIncrement(tt.mode)
		if noLease != tt.wantNoLease || anon != tt.wantAnony {
			t.Errorf("PlainIncrement(%v) = (%v, %v), want (%v, %v)", tt.mode, noLease, anon, tt.wantNoLease, tt.wantAnony)
		}
	}
}
