package sema

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCreateLimitValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		spec      LimitSpec
		wantField string // "" means valid
	}{
		{"plain", LimitSpec{Name: "db", Limit: 10}, ""},
		{"zero limit", LimitSpec{Name: "db", Limit: 0}, ""},
		{"unicode name", LimitSpec{Name: "résumé:β", Limit: 1}, ""},
		{"template", LimitSpec{Name: "resource:*", Limit: 1}, ""},
		{"longest name", LimitSpec{Name: strings.Repeat("a", MaxNameLength), Limit: 1}, ""},
		{"max everything", LimitSpec{Name: "x", Limit: MaxSlots, ActiveSlots: MaxSlots, DeniedSlots: MaxSlots, SlotDecayPerSecond: MaxDecay}, ""},
		{"empty name", LimitSpec{Name: "", Limit: 1}, "name"},
		{"too long name", LimitSpec{Name: strings.Repeat("a", MaxNameLength+1), Limit: 1}, "name"},
		{"slash", LimitSpec{Name: "a/b", Limit: 1}, "name"},
		{"percent", LimitSpec{Name: "a%20b", Limit: 1}, "name"},
		{"ampersand", LimitSpec{Name: "x & y", Limit: 1}, "name"},
		{"greater", LimitSpec{Name: "x>y", Limit: 1}, "name"},
		{"less", LimitSpec{Name: "x < z", Limit: 1}, "name"},
		{"newline", LimitSpec{Name: "a\nb", Limit: 1}, "name"},
		{"nul", LimitSpec{Name: "a\x00b", Limit: 1}, "name"},
		{"delete char", LimitSpec{Name: "a\x7fb", Limit: 1}, "name"},
		{"c1 control", LimitSpec{Name: "a\u0085b", Limit: 1}, "name"},
		{"invalid utf8", LimitSpec{Name: "a\xffb", Limit: 1}, "name"},
		{"negative limit", LimitSpec{Name: "db", Limit: -2}, "limit"},
		{"huge limit", LimitSpec{Name: "db", Limit: MaxSlots + 1}, "limit"},
		{"negative active slots", LimitSpec{Name: "db", Limit: 1, ActiveSlots: -1}, "active_slots"},
		{"negative denied slots", LimitSpec{Name: "db", Limit: 1, DeniedSlots: -1}, "denied_slots"},
		{"negative decay", LimitSpec{Name: "db", Limit: 1, SlotDecayPerSecond: -1}, "slot_decay_per_second"},
		{"NaN decay", LimitSpec{Name: "db", Limit: 1, SlotDecayPerSecond: math.NaN()}, "slot_decay_per_second"},
		{"infinite decay", LimitSpec{Name: "db", Limit: 1, SlotDecayPerSecond: math.Inf(1)}, "slot_decay_per_second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := New(DefaultConfig())
			got, err := m.CreateLimit(t0, limitID(1), tt.spec)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("CreateLimit: %v, want success", err)
				}
				if got.Name != tt.spec.Name || got.Limit != tt.spec.Limit {
					t.Errorf("CreateLimit = %+v, want name %q limit %d", got, tt.spec.Name, tt.spec.Limit)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("CreateLimit: error %v (%T), want *InvalidError", err, err)
			}
			if ie.Field != tt.wantField {
				t.Errorf("InvalidError.Field = %q, want %q (%v)", ie.Field, tt.wantField, err)
			}
			if n := m.LimitCount(); n != 0 {
				t.Errorf("LimitCount = %d after a refused create, want 0", n)
			}
			if c, _ := m.Drain(); len(c) != 0 {
				t.Errorf("a refused create recorded %d changes, want none", len(c))
			}
		})
	}
}

func TestCreateLimitDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.createSpec(t0, LimitSpec{Name: "limiter", Limit: 42, Active: true})
	want := Limit{ID: limitID(1), Name: "limiter", Limit: 42, Active: true, AvgSlotOccupancySeconds: 2,
		Created: t0, Updated: t0, DecayAt: t0}
	if d := cmp.Diff(want, l); d != "" {
		t.Errorf("CreateLimit (-want +got):\n%s", d)
	}
	v := b.view(t0, "limiter")
	if v.ActiveSlots != 0 || v.DeniedSlots != 0 || v.Held != 0 || v.Template {
		t.Errorf("view = %+v, want an empty non-template limit", v)
	}
	changes, events := b.m.Drain()
	if d := cmp.Diff([]Change{{Kind: PutLimit, Limit: want}}, changes); d != "" {
		t.Errorf("changes (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]EventKind{LimitChanged}, eventKinds(events)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

func TestCreateLimitDuplicate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   uint64
		spec LimitSpec
	}{
		{"same name", 2, LimitSpec{Name: "db", Limit: 3}},
		{"same id", 1, LimitSpec{Name: "other", Limit: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := New(DefaultConfig())
			if _, err := m.CreateLimit(t0, limitID(1), LimitSpec{Name: "db", Limit: 1}); err != nil {
				t.Fatal(err)
			}
			_, err := m.CreateLimit(t0, limitID(tt.id), tt.spec)
			if !errors.Is(err, ErrNameTaken) {
				t.Fatalf("CreateLimit: %v, want ErrNameTaken", err)
			}
			v, err := m.LimitByName(t0, "db", Summary)
			if err != nil || v.Limit.Limit != 1 || v.ID != limitID(1) {
				t.Errorf("LimitByName(db) = %+v, %v; want the first limit untouched", v.Limit, err)
			}
		})
	}
}

func TestUpdateLimitValidation(t *testing.T) {
	t.Parallel()
	ptr := func(v any) LimitPatch {
		switch v := v.(type) {
		case string:
			return LimitPatch{Name: &v}
		case int:
			return LimitPatch{Limit: &v}
		case float64:
			return LimitPatch{SlotDecayPerSecond: &v}
		}
		panic("bad patch")
	}
	neg := -1
	tests := []struct {
		name      string
		patch     LimitPatch
		wantField string
		wantErr   error
	}{
		{"rename", ptr("renamed"), "", nil},
		{"rename to itself", ptr("db"), "", nil},
		{"rename to a taken name", ptr("other"), "", ErrNameTaken},
		{"slash in name", ptr("a/b"), "name", nil},
		{"control in name", ptr("a\tb"), "name", nil},
		{"empty name", ptr(""), "name", nil},
		{"negative limit", ptr(-2), "limit", nil},
		{"negative decay", ptr(-0.5), "slot_decay_per_second", nil},
		{"NaN decay", ptr(math.NaN()), "slot_decay_per_second", nil},
		{"negative active slots", LimitPatch{ActiveSlots: &neg}, "active_slots", nil},
		{"negative denied slots", LimitPatch{DeniedSlots: &neg}, "denied_slots", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			db := b.create(t0, "db", 5)
			b.create(t0, "other", 5)
			b.m.Drain()
			_, err := b.m.UpdateLimit(at(time.Second), db.ID, tt.patch)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("UpdateLimit: %v, want %v", err, tt.wantErr)
				}
			case tt.wantField != "":
				var ie *InvalidError
				if !errors.As(err, &ie) || ie.Field != tt.wantField {
					t.Fatalf("UpdateLimit: %v, want *InvalidError on %q", err, tt.wantField)
				}
			default:
				if err != nil {
					t.Fatalf("UpdateLimit: %v", err)
				}
				return
			}
			if c, _ := b.m.Drain(); len(c) != 0 {
				t.Errorf("a refused update recorded %d changes, want none", len(c))
			}
			if v := b.view(t0, "db"); v.Limit.Limit != 5 || v.SlotDecayPerSecond != 0 {
				t.Errorf("limit after a refused update = %+v, want unchanged", v.Limit)
			}
		})
	}
}

func TestUpdateLimitNotFound(t *testing.T) {
	t.Parallel()
	m := New(DefaultConfig())
	n := 3
	if _, err := m.UpdateLimit(t0, limitID(9), LimitPatch{Limit: &n}); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("UpdateLimit of unknown id: %v, want ErrLimitNotFound", err)
	}
	if err := m.DeleteLimit(t0, limitID(9)); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("DeleteLimit of unknown id: %v, want ErrLimitNotFound", err)
	}
	if _, err := m.LimitByID(t0, limitID(9), Full); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("LimitByID of unknown id: %v, want ErrLimitNotFound", err)
	}
}

func TestUpdateLimitRename(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db := b.create(t0, "b-db", 5)
	b.create(t0, "a", 5)
	b.create(t0, "c", 5)
	name := "z-db"
	if _, err := b.m.UpdateLimit(t0, db.ID, LimitPatch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.LimitByName(t0, "b-db", Summary); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("old name still found: %v", err)
	}
	var got []string
	for _, v := range b.m.Limits(t0, "", 0, 10, Summary) {
		got = append(got, v.Name)
	}
	if d := cmp.Diff([]string{"a", "c", "z-db"}, got); d != "" {
		t.Errorf("Limits order (-want +got):\n%s", d)
	}
	// A renamed limit takes its new name's place among templates too.
	tmpl := "res:*"
	if _, err := b.m.UpdateLimit(t0, db.ID, LimitPatch{Name: &tmpl}); err != nil {
		t.Fatal(err)
	}
	o := b.acquire(t0, b.req(1, "res:1"))
	if len(o.Limits) != 1 || o.Limits[0].Name != "res:1" || o.Limits[0].Limit != 5 {
		t.Errorf("acquire res:1 after renaming to a template: limits %+v, want res:1 materialised with limit 5", o.Limits)
	}
}

func TestLimitsPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, n := range []string{"tag:b", "deployment:x", "tag:a", "tag:c", "zz"} {
		b.create(t0, n, 1)
	}
	names := func(vs []LimitView) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return out
	}
	tests := []struct {
		name      string
		prefix    string
		offset, n int
		want      []string
	}{
		{"all", "", 0, 100, []string{"deployment:x", "tag:a", "tag:b", "tag:c", "zz"}},
		{"prefix", "tag:", 0, 100, []string{"tag:a", "tag:b", "tag:c"}},
		{"prefix page", "tag:", 1, 1, []string{"tag:b"}},
		{"offset past prefix", "tag:", 3, 10, []string{}},
		{"no match", "q", 0, 10, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := names(b.m.Limits(t0, tt.prefix, tt.offset, tt.n, Summary))
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Limits(%q, %d, %d) (-want +got):\n%s", tt.prefix, tt.offset, tt.n, d)
			}
		})
	}
}

func TestDeleteLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.create(t0, "a", 1)
	b.create(t0, "b", 1)
	lease := b.mustGrant(t0, b.req(1, "a", "b"))
	b.events()
	if err := b.m.DeleteLimit(t0, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.LimitByName(t0, "a", Summary); !errors.Is(err, ErrLimitNotFound) {
		t.Errorf("LimitByName after delete: %v, want ErrLimitNotFound", err)
	}
	if n := b.m.LimitCount(); n != 1 {
		t.Errorf("LimitCount = %d, want 1", n)
	}
	b.events()
	if _, ok := b.store.limits[a.ID]; ok {
		t.Errorf("store still has the deleted limit")
	}
	// The lease keeps its other hold and releases cleanly.
	if _, refs, err := b.m.Lease(t0, lease.ID); err != nil {
		t.Fatalf("Lease: %v", err)
	} else {
		var got []string
		for _, r := range refs {
			got = append(got, r.Name)
		}
		if d := cmp.Diff([]string{"b"}, got); d != "" {
			t.Errorf("lease limits after deleting a (-want +got):\n%s", d)
		}
	}
	if !b.m.Release(t0, lease.ID) {
		t.Fatal("Release: false, want true")
	}
	if v := b.view(t0, "b"); v.Held != 0 {
		t.Errorf("b held %d after release, want 0", v.Held)
	}
	// The name can be created again and starts empty.
	b.create(t0, "a", 1)
	if v := b.view(t0, "a"); v.Held != 0 || v.ActiveSlots != 0 {
		t.Errorf("recreated a: held %d active %d, want 0 0", v.Held, v.ActiveSlots)
	}
	b.events()
	if d := diffRestored(b.m, b.store, t0); d != "" {
		t.Error(d)
	}
}

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
