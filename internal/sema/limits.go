package sema

import (
	"container/heap"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// LimitSpec is the settable part of a limit.
type LimitSpec struct {
	Name               string
	Limit              int
	Active             bool
	ActiveSlots        int
	DeniedSlots        int
	SlotDecayPerSecond float64
	// Idle is a template's idle time (see Limit.Idle); nil takes
	// DefaultTemplateIdle. Only a template has one.
	Idle *time.Duration
}

func validateSpec(s LimitSpec) error {
	if why := ValidateName(s.Name); why != "" {
		return invalid("name", "%s", why)
	}
	if err := validateSettings(s.Limit, s.ActiveSlots, s.DeniedSlots, s.SlotDecayPerSecond); err != nil {
		return err
	}
	return validateIdle(s.Name, s.Idle)
}

// validateIdle checks an idle time given for the limit called name.
func validateIdle(name string, idle *time.Duration) error {
	switch {
	case idle == nil:
		return nil
	case !isPattern(name):
		return invalid("idle_seconds", "only a template (a name with '*') has an idle time; %q is not one", name)
	case *idle < 0 || *idle > MaxIdle:
		return invalid("idle_seconds", "must be between 0 and %g", MaxIdle.Seconds())
	}
	return nil
}

// MaxSlots bounds limits and slot counts so that arithmetic stays exact.
const MaxSlots = 1 << 30

// MaxDecay bounds slot_decay_per_second.
const MaxDecay = 1e9

func validateSettings(limit, active, denied int, decay float64) error {
	switch {
	case limit < 0 || limit > MaxSlots:
		return invalid("limit", "must be between 0 and %d", MaxSlots)
	case active < 0 || active > MaxSlots:
		return invalid("active_slots", "must be between 0 and %d", MaxSlots)
	case denied < 0 || denied > MaxSlots:
		return invalid("denied_slots", "must be between 0 and %d", MaxSlots)
	case math.IsNaN(decay) || decay < 0 || decay > MaxDecay:
		return invalid("slot_decay_per_second", "must be between 0 and %g", float64(MaxDecay))
	}
	return nil
}

// CreateLimit creates a limit with the given id.
func (m *Machine) CreateLimit(now time.Time, id uuid.UUID, s LimitSpec) (Limit, error) {
	if err := validateSpec(s); err != nil {
		return Limit{}, err
	}
	if m.byName[s.Name] != nil || m.byID[id] != nil {
		return Limit{}, &NameTakenError{Name: s.Name}
	}
	l := &limitState{Limit: Limit{
		ID: id, Name: s.Name, Limit: s.Limit, Active: s.Active,
		SlotDecayPerSecond: s.SlotDecayPerSecond, AvgSlotOccupancySeconds: m.cfg.DefaultAvgOccupancy,
		Created: now, Updated: now, DecayAt: now,
		Level: float64(s.ActiveSlots), Denied: float64(s.DeniedSlots),
	}}
	if l.IsTemplate() {
		l.Idle = DefaultTemplateIdle
		if s.Idle != nil {
			l.Idle = *s.Idle
		}
	}
	m.insertLimit(l)
	m.putLimit(l)
	m.events = append(m.events, Event{Kind: LimitChanged, Limits: []LimitRef{l.ref()}})
	return l.Limit, nil
}

// LimitPatch changes the fields that are set.
type LimitPatch struct {
	Name               *string
	Limit              *int
	Active             *bool
	ActiveSlots        *int
	DeniedSlots        *int
	SlotDecayPerSecond *float64
	// Idle sets a template's idle time (see Limit.Idle).
	Idle *time.Duration
}

// UpdateLimit changes a limit. Lowering the limit never revokes a lease;
// waiters that can never be granted under the new settings fail at once.
// ActiveSlots sets the slots taken without a lease (the rate-limit level);
// slots held by leases are only ever returned by their leases.
func (m *Machine) UpdateLimit(now time.Time, id uuid.UUID, p LimitPatch) (Limit, error) {
	l := m.byID[id]
	if l == nil {
		return Limit{}, ErrLimitNotFound
	}
	if p.Name != nil {
		if why := ValidateName(*p.Name); why != "" {
			return Limit{}, invalid("name", "%s", why)
		}
		if o := m.byName[*p.Name]; o != nil && o != l {
			return Limit{}, &NameTakenError{Name: *p.Name}
		}
	}
	limit, active, denied, decay := l.Limit.Limit, 0, 0, l.SlotDecayPerSecond
	if p.Limit != nil {
		limit = *p.Limit
	}
	if p.ActiveSlots != nil {
		active = *p.ActiveSlots
	}
	if p.DeniedSlots != nil {
		denied = *p.DeniedSlots
	}
	if p.SlotDecayPerSecond != nil {
		decay = *p.SlotDecayPerSecond
	}
	if err := validateSettings(limit, active, denied, decay); err != nil {
		return Limit{}, err
	}
	name := l.Name
	if p.Name != nil {
		name = *p.Name
	}
	if err := validateIdle(name, p.Idle); err != nil {
		return Limit{}, err
	}
	m.settle(now, l)
	if p.Name != nil && *p.Name != l.Name {
		m.unindexName(l)
		l.Name = *p.Name
		m.byName[l.Name] = l
		i, _ := slices.BinarySearchFunc(m.sorted, l.Name, func(e *limitState, n string) int { return strings.Compare(e.Name, n) })
		m.sorted = slices.Insert(m.sorted, i, l)
		if l.IsTemplate() {
			m.templates = append(m.templates, l)
		}
	}
	l.Limit.Limit = limit
	l.SlotDecayPerSecond = decay
	if p.Active != nil {
		l.Active = *p.Active
	}
	if p.ActiveSlots != nil {
		l.Level = float64(max(0, *p.ActiveSlots-l.held))
	}
	if p.DeniedSlots != nil {
		l.Denied = float64(*p.DeniedSlots)
	}
	if p.Idle != nil {
		l.Idle = *p.Idle
	}
	l.Updated = now
	m.touch(now, l)
	m.putLimit(l)
	m.events = append(m.events, Event{Kind: LimitChanged, Limits: []LimitRef{l.ref()}})
	m.pump(now, append(m.failHopeless(now, l), l))
	return l.Limit, nil
}

// failHopeless removes the waiters of l that l can never grant. It returns
// the limits those waiters stood in line for, whose next waiters may now be
// granted.
func (m *Machine) failHopeless(now time.Time, l *limitState) []*limitState {
	var freed []*limitState
	if !l.Active {
		return nil
	}
	for n := l.queue.head; n != nil; {
		w := n.w
		n = n.next
		var err error
		switch {
		case w.req.slotsFor(l) > l.Limit.Limit:
			err = slotsExceed([]string{l.Name})
		case w.req.Mode == ModeRateLimit && l.SlotDecayPerSecond == 0:
			err = noDecay([]string{l.Name})
		default:
			continue
		}
		m.removeWaiter(now, w)
		m.events = append(m.events, Event{Kind: WaiterFailed, WaiterID: w.id, Err: err})
		if r := w.run; r != nil {
			r.waiter = nil
			m.transition(now, r, Failed, neverMessage(r, err))
		}
		freed = append(freed, w.limits...)
	}
	return freed
}

// DeleteLimit deletes a limit. Leases that hold it keep their other holds;
// its waiters stop waiting for it.
func (m *Machine) DeleteLimit(now time.Time, id uuid.UUID) error {
	l := m.byID[id]
	if l == nil {
		return ErrLimitNotFound
	}
	m.deleteLimit(now, l, "")
	return nil
}

// DeleteMatch selects limits to delete by name.
type DeleteMatch struct {
	// Pattern matches names as a template does ('*' is any run of
	// characters); a name without '*' matches only itself.
	Pattern string
	// All must be set for a pattern that matches every name (empty, or
	// only stars), so that a slip never deletes everything.
	All bool
	// Templates deletes matching templates too; without it they stay.
	Templates bool
	// DryRun counts the matching limits and deletes nothing.
	DryRun bool
}

// DeleteMatching deletes the limits that match, as DeleteLimit deletes
// one: leases that hold them keep their other holds. It returns how many
// limits matched (and, unless DryRun, were deleted).
func (m *Machine) DeleteMatching(now time.Time, d DeleteMatch) (int, error) {
	everything := strings.Trim(d.Pattern, "*") == ""
	switch {
	case everything && !d.All:
		return 0, invalid("pattern", "%q matches every limit; set all to delete every limit", d.Pattern)
	case d.Pattern == "":
		d.Pattern = "*"
	default:
		if why := ValidateName(d.Pattern); why != "" {
			return 0, invalid("pattern", "%s", why)
		}
	}
	var match []*limitState
	for _, l := range m.sorted {
		if matchPattern(d.Pattern, l.Name) && (d.Templates || !l.IsTemplate()) {
			match = append(match, l)
		}
	}
	if !d.DryRun {
		for _, l := range match {
			m.deleteLimit(now, l, "")
		}
	}
	return len(match), nil
}

// deleteLimit deletes l; reason, if any, is why (see Event.Reason).
func (m *Machine) deleteLimit(now time.Time, l *limitState, reason string) {
	id := l.ID
	l.deleted = true
	delete(m.byID, id)
	m.unindexName(l)
	// Leases keep their other holds, as Restore would leave them; a later
	// limit with the same id must not inherit these.
	for ll := range l.leases {
		i := slices.Index(ll.limits, l)
		ll.Holds = slices.Delete(slices.Clone(ll.Holds), i, i+1)
		ll.limits = slices.Delete(slices.Clone(ll.limits), i, i+1)
		m.changes = append(m.changes, Change{Kind: PutLease, Lease: ll.Lease})
	}
	clear(l.leases)
	l.held = 0
	others := []*limitState{l}
	for n := l.queue.head; n != nil; n = n.next {
		others = append(others, n.w.limits...)
	}
	m.changes = append(m.changes, Change{Kind: DeleteLimit, ID: id})
	m.events = append(m.events, Event{Kind: LimitChanged, Limits: []LimitRef{l.ref()}, Deleted: true, Reason: reason})
	m.pump(now, others)
}

// resolve finds the limits a request names, creating them from templates on
// first use. Names are deduplicated; unknown names without a template are
// skipped.
func (m *Machine) resolve(now time.Time, names []string) ([]*limitState, error) {
	out := make([]*limitState, 0, len(names))
	for i, name := range names {
		if why := ValidateName(name); why != "" {
			return nil, invalid("names", "%q %s", name, why)
		}
		if isPattern(name) {
			return nil, &NeverError{Reason: "template", Names: []string{name},
				Detail: "'" + name + "' is a limit template; acquire the names it matches, not the template"}
		}
		if slices.Contains(names[:i], name) {
			continue
		}
		l := m.byName[name]
		if l == nil {
			l = m.fromTemplate(now, name)
		}
		if l != nil {
			m.touch(now, l)
			out = append(out, l)
		}
	}
	return out, nil
}

func (m *Machine) fromTemplate(now time.Time, name string) *limitState {
	var best *limitState
	for _, t := range m.templates {
		if !matchPattern(t.Name, name) {
			continue
		}
		if best == nil || specificity(t.Name) > specificity(best.Name) ||
			(specificity(t.Name) == specificity(best.Name) && t.Name < best.Name) {
			best = t
		}
	}
	if best == nil {
		return nil
	}
	// Deterministic, and distinct per template, name and moment, so a name
	// deleted and used again gets a new id that old references cannot reach.
	id := uuid.NewSHA1(best.ID, []byte(name+"\x00"+strconv.FormatInt(now.UnixNano(), 10)))
	for m.byID[id] != nil {
		id = uuid.NewSHA1(id, []byte(name))
	}
	l := &limitState{Limit: Limit{
		ID: id, Name: name, Limit: best.Limit.Limit, Active: best.Active,
		SlotDecayPerSecond: best.SlotDecayPerSecond, AvgSlotOccupancySeconds: m.cfg.DefaultAvgOccupancy,
		Created: now, Updated: now, DecayAt: now, Idle: best.Idle, FromTemplate: true,
	}}
	m.insertLimit(l)
	m.putLimit(l)
	m.events = append(m.events, Event{Kind: LimitChanged, Limits: []LimitRef{l.ref()}})
	return l
}

// touch records a use of l at now: a template-created limit is removed
// only once its idle time has passed since its last use. A limit has at
// most one entry in m.idles: a later use only moves idleAt, and the entry
// is moved there when it comes due.
func (m *Machine) touch(now time.Time, l *limitState) {
	if !l.FromTemplate || l.Idle <= 0 || l.deleted {
		return
	}
	l.idleAt = now.Add(l.Idle)
	if !l.idleQueued {
		l.idleQueued = true
		heap.Push(&m.idles, wake{at: l.idleAt, limit: l})
	}
}

// idleDue removes l if it has been unused for its idle time and nothing
// holds, waits for or has taken (a rate limit's level) any of its slots.
func (m *Machine) idleDue(now time.Time, l *limitState) {
	l.idleQueued = false
	if l.deleted || !l.FromTemplate || l.Idle <= 0 {
		return
	}
	at := l.idleAt
	switch lv := level(now, l); {
	case now.Before(at):
		// Used since it was queued: due at its new deadline.
	case len(l.leases) > 0 || l.queue.n > 0:
		// In use: looked at again one idle time on (its release or
		// departure is a use, so it cannot go before its full idle time).
		at = now.Add(l.Idle)
	case lv > epsilon && l.SlotDecayPerSecond == 0:
		return // preset slots never decay; a decrement is a use
	case lv > epsilon:
		at = now.Add(time.Duration(math.Ceil(lv / l.SlotDecayPerSecond * float64(time.Second))))
	default:
		m.deleteLimit(now, l, "idle")
		return
	}
	l.idleQueued = true
	heap.Push(&m.idles, wake{at: at, limit: l})
}

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
