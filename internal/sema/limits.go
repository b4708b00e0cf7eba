package sema

import (
	"time"

	"github.com/google/uuid"
)

// LimitEnsure is what EnsureLimit makes true of the limit called Name. A
// nil field takes CreateLimit's default for a new limit (active, no decay,
// DefaultTemplateIdle) and is left as it is on an existing limit.
type LimitEnsure struct {
	Name               string
	Limit              int
	Active             *bool
	SlotDecayPerSecond *float64
	// Idle is a template's idle time (see Limit.Idle); only a template
	// has one.
	Idle *time.Duration
}

// EnsureLimit makes sure the limit called e.Name exists with e's settings,
// in one command: it creates the limit with id if the name is free, changes
// the settings of the existing limit that differ (as UpdateLimit would:
// waiters that can no longer be granted fail), and changes nothing, records
// nothing, when they all agree. created reports whether it created the
// limit. A refused ensure changes nothing, whether or not the limit exists.
func (m *Machine) EnsureLimit(now time.Time, id uuid.UUID, e LimitEnsure) (l Limit, created bool, err error) {
	decay := 0.0
	if e.SlotDecayPerSecond != nil {
		decay = *e.SlotDecayPerSecond
	}
	spec := LimitSpec{Name: e.Name, Limit: e.Limit, Active: true, SlotDecayPerSecond: decay, Idle: e.Idle}
	if e.Active != nil {
		spec.Active = *e.Active
	}
	if err := validateSpec(spec); err != nil {
		return Limit{}, false, err
	}
	cur := m.byName[e.Name]
	if cur == nil {
		l, err := m.CreateLimit(now, id, spec)
		return l, err == nil, err
	}
	var p LimitPatch
	if cur.Limit.Limit != e.Limit {
		p.Limit = &e.Limit
	}
	if e.Active != nil && *e.Active != cur.Active {
		p.Active = e.Active
	}
	if e.SlotDecayPerSecond != nil && *e.SlotDecayPerSecond != cur.SlotDecayPerSecond {
		p.SlotDecayPerSecond = e.SlotDecayPerSecond
	}
	if e.Idle != nil && *e.Idle != cur.Idle {
		p.Idle = e.Idle
	}
	if p == (LimitPatch{}) {
		return cur.Limit, false, nil
	}
	l, err = m.UpdateLimit(now, cur.ID, p)
	return l, false, err
}
