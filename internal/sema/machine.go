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

// Config holds the settings that shape a Machine's answers.
type Config struct {
	// DefaultAvgOccupancy is a new limit's avg_slot_occupancy_seconds.
	DefaultAvgOccupancy float64
	// TagMaxWait caps Retry-After for limits named "tag:…".
	TagMaxWait time.Duration
	// MaxWait caps Retry-After for other limits without decay.
	MaxWait time.Duration
}

// DefaultConfig returns Prefect's defaults: occupancy 2 s, waits capped at
// 10 s for tag limits and 30 s for the rest.
func DefaultConfig() Config {
	return Config{DefaultAvgOccupancy: 2, TagMaxWait: 10 * time.Second, MaxWait: 30 * time.Second}
}

// epsilon absorbs floating-point error when decayed levels are compared.
const epsilon = 1e-9

type limitState struct {
	Limit
	held      int
	leases    map[*leaseState]struct{}
	queue     waitQueue
	deleted   bool
	lastFence uint64
	soft      bool      // Denied or AvgSlotOccupancySeconds changed and not recorded
	wakeAt    time.Time // the earliest decay wake scheduled for this limit
	// idleAt is when a template-created limit becomes due for idle removal
	// if nothing uses it before; idleQueued says it has an entry in the
	// machine's idles heap (at most one, at or before idleAt).
	idleAt     time.Time
	idleQueued bool
}

type leaseState struct {
	Lease
	limits  []*limitState // limits[i] is Holds[i]'s limit
	heapIdx int
	run     *runState // the run that holds it, if a run does
}

// Machine is the state machine. It is not safe for concurrent use; its
// owner serialises commands.
type Machine struct {
	cfg       Config
	byID      map[uuid.UUID]*limitState
	byName    map[string]*limitState
	sorted    []*limitState // by name
	templates []*limitState
	leases    map[uuid.UUID]*leaseState
	expiry    leaseHeap
	wakes     wakeHeap
	idles     wakeHeap // template-created limits' idle deadlines
	waiters   map[uint64]*waiter
	lastWait  uint64
	// The tickets of live leases and of waiters in line.
	ticketLeases  map[string]*leaseState
	ticketWaiters map[string]*waiter
	fence         uint64
	changes       []Change
	events        []Event
	soft          []*limitState

	runs     map[uuid.UUID]*runState
	runSeq   uint64   // the WaitSeq of the run that joined the line last
	finished runQueue // runs in a final state, in the order they finished
}

// New returns an empty Machine. Zero settings in cfg take DefaultConfig's.
func New(cfg Config) *Machine {
	d := DefaultConfig()
	if cfg.DefaultAvgOccupancy <= 0 {
		cfg.DefaultAvgOccupancy = d.DefaultAvgOccupancy
	}
	if cfg.TagMaxWait <= 0 {
		cfg.TagMaxWait = d.TagMaxWait
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = d.MaxWait
	}
	return &Machine{
		cfg:     cfg,
		byID:    make(map[uuid.UUID]*limitState),
		byName:  make(map[string]*limitState),
		leases:  make(map[uuid.UUID]*leaseState),
		waiters: make(map[uint64]*waiter),
		runs:    make(map[uuid.UUID]*runState),

		ticketLeases:  make(map[string]*leaseState),
		ticketWaiters: make(map[string]*waiter),
	}
}

// Restore loads durable state into an empty Machine. Holds on limits that no
// longer exist are dropped; leases past their expiry are expired by the next
// Tick. fence is the highest fencing token ever granted.
func (m *Machine) Restore(limits []Limit, leases []Lease, fence uint64) {
	for _, l := range limits {
		ls := &limitState{Limit: l}
		m.insertLimit(ls)
		// Its last use is not durable: count from its last durable change.
		m.touch(latest(l.Created, l.Updated, l.DecayAt), ls)
	}
	for _, l := range leases {
		ls := &leaseState{Lease: l}
		ls.Holds = nil
		for _, h := range l.Holds {
			lim := m.byID[h.LimitID]
			if lim == nil {
				continue
			}
			ls.Holds = append(ls.Holds, h)
			ls.limits = append(ls.limits, lim)
		}
		m.addLease(ls)
		fence = max(fence, l.Fence)
	}
	m.fence = fence
}

// Drain returns and forgets the changes and events recorded since the last
// Drain.
//
// The returned slices are the machine's own buffers, reused by the next
// command: the caller must be done with them (or have copied them) before
// it gives the machine another command.
func (m *Machine) Drain() ([]Change, []Event) {
	c, e := m.changes, m.events
	m.changes, m.events = c[:0], e[:0]
	return c, e
}

// FlushSoft records the limits whose Retry-After statistics (denied slots,
// average occupancy) changed since the last flush. Those statistics are
// written lazily: losing them in a crash only shapes Retry-After hints.
func (m *Machine) FlushSoft() {
	for _, l := range m.soft {
		if l.soft && !l.deleted {
			m.putLimit(l)
		}
		l.soft = false
	}
	m.soft = m.soft[:0]
}

// Fence returns the highest fencing token granted so far.
func (m *Machine) Fence() uint64 { return m.fence }

func (m *Machine) putLimit(l *limitState) {
	l.soft = false
	m.changes = append(m.changes, Change{Kind: PutLimit, Limit: l.Limit})
}

func (m *Machine) markSoft(l *limitState) {
	if !l.soft {
		l.soft = true
		m.soft = append(m.soft, l)
	}
}

func (m *Machine) insertLimit(l *limitState) {
	l.leases = make(map[*leaseState]struct{})
	m.byID[l.ID] = l
	m.byName[l.Name] = l
	i, _ := slices.BinarySearchFunc(m.sorted, l.Name, func(e *limitState, n string) int { return strings.Compare(e.Name, n) })
	m.sorted = slices.Insert(m.sorted, i, l)
	if l.IsTemplate() {
		m.templates = append(m.templates, l)
	}
}

func (m *Machine) unindexName(l *limitState) {
	delete(m.byName, l.Name)
	i, ok := slices.BinarySearchFunc(m.sorted, l.Name, func(e *limitState, n string) int { return strings.Compare(e.Name, n) })
	if ok {
		m.sorted = slices.Delete(m.sorted, i, i+1)
	}
	if i := slices.Index(m.templates, l); i >= 0 {
		m.templates = slices.Delete(m.templates, i, i+1)
	}
}

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

func (l *limitState) ref() LimitRef { return LimitRef{ID: l.ID, Name: l.Name, Limit: l.Limit.Limit} }

// settle folds the decay accrued up to now into Level and Denied.
func (m *Machine) settle(now time.Time, l *limitState) {
	dt := now.Sub(l.DecayAt).Seconds()
	if dt <= 0 {
		return
	}
	l.Level = max(0, l.Level-l.SlotDecayPerSecond*dt)
	l.Denied = max(0, l.Denied-m.deniedRate(l)*dt)
	l.DecayAt = now
}

func (m *Machine) maxWait(l *limitState) time.Duration {
	if strings.HasPrefix(l.Name, "tag:") {
		return m.cfg.TagMaxWait
	}
	return m.cfg.MaxWait
}

func (m *Machine) deniedRate(l *limitState) float64 {
	if l.SlotDecayPerSecond > 0 {
		return l.SlotDecayPerSecond
	}
	return 1 / max(0.1, min(l.AvgSlotOccupancySeconds, m.maxWait(l).Seconds()))
}

// level is the undecayed part of Level at now.
func level(now time.Time, l *limitState) float64 {
	dt := now.Sub(l.DecayAt).Seconds()
	if dt <= 0 || l.SlotDecayPerSecond == 0 {
		return l.Level
	}
	return max(0, l.Level-l.SlotDecayPerSecond*dt)
}

// used is the slots of l in use at now, rounded up as Prefect reads them.
func used(now time.Time, l *limitState) int {
	return l.held + int(math.Ceil(level(now, l)-epsilon))
}

func fits(now time.Time, l *limitState, slots int) bool {
	return float64(l.held)+level(now, l)+float64(slots) <= float64(l.Limit.Limit)+epsilon
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

func refs(ls []*limitState) []LimitRef {
	out := make([]LimitRef, len(ls))
	for i, l := range ls {
		out[i] = l.ref()
	}
	return out
}

// Acquire grants a request now, queues it (when it asks to wait), or refuses
// it with a *LockedError. Requests that can never be granted fail with a
// *NeverError whatever they ask.
func (m *Machine) Acquire(now time.Time, req Request) (Outcome, error) {
	if len(req.Names) == 0 {
		return Outcome{}, invalid("names", "must name at least one limit")
	}
	if req.Slots <= 0 || req.Slots > MaxSlots {
		return Outcome{}, invalid("slots", "must be between 1 and %d", MaxSlots)
	}
	if err := req.Holder.Validate(); err != nil {
		return Outcome{}, err
	}
	if req.Ticket != "" {
		if why := ValidateTicket(req.Ticket); why != "" {
			return Outcome{}, invalid("ticket", "%s", why)
		}
		if out, ok, err := m.resume(now, req); ok {
			return out, err
		}
	}
	ls, err := m.resolve(now, req.Names)
	if err != nil {
		return Outcome{}, err
	}
	return m.admit(now, req, ls, nil)
}

// admit grants req on ls now, queues it or refuses it. A request of a run
// (r not nil) stands in line for r.
func (m *Machine) admit(now time.Time, req Request, ls []*limitState, r *runState) (Outcome, error) {
	var over, nodecay []string
	blocked := false
	for _, l := range ls {
		if !l.Active {
			continue
		}
		if req.slotsFor(l) > l.Limit.Limit {
			over = append(over, l.Name)
		}
		if req.Mode == ModeRateLimit && l.SlotDecayPerSecond == 0 {
			nodecay = append(nodecay, l.Name)
		}
		if l.queue.n > 0 || !fits(now, l, req.slotsFor(l)) {
			blocked = true
		}
	}
	if over != nil {
		return Outcome{}, slotsExceed(over)
	}
	if nodecay != nil {
		return Outcome{}, noDecay(nodecay)
	}
	if !blocked {
		lease := m.grant(now, req, ls)
		return Outcome{Granted: true, Lease: lease, Limits: refs(ls)}, nil
	}
	if !req.Wait {
		return Outcome{}, m.refuse(now, req, ls)
	}
	m.lastWait++
	w := &waiter{id: m.lastWait, req: req, since: now, limits: ls, nodes: make([]qnode, len(ls)), run: r}
	pos := 0
	for i, l := range ls {
		w.nodes[i].w = w
		l.queue.push(&w.nodes[i])
		if l.Active {
			pos = max(pos, l.queue.n)
		}
	}
	m.waiters[w.id] = w
	if req.Ticket != "" {
		m.ticketWaiters[req.Ticket] = w
		m.putWaiter(w)
	}
	// A decaying limit may let it in later without any release.
	for _, l := range ls {
		m.scheduleWake(now, l, w)
	}
	return Outcome{Limits: refs(ls), WaiterID: w.id, Position: pos}, nil
}

// refuse counts the denied slots and computes Retry-After as Prefect does
// (PrefectHQ/prefect: src/prefect/server/api/concurrency_limits_v2.py).
func (m *Machine) refuse(now time.Time, req Request, ls []*limitState) error {
	var b *limitState
	var worst float64
	for _, l := range ls {
		if !l.Active {
			continue
		}
		m.settle(now, l)
		var blocking float64
		if l.SlotDecayPerSecond > 0 {
			blocking = float64(req.slotsFor(l)) + l.Denied
		} else {
			blocking = (float64(req.slotsFor(l)) + l.Denied) / float64(max(1, l.Limit.Limit))
		}
		if b == nil || blocking > worst {
			b, worst = l, blocking
		}
	}
	var wait float64
	if b.SlotDecayPerSecond == 0 {
		mw := m.maxWait(b).Seconds()
		wait = min(min(b.AvgSlotOccupancySeconds, mw)*worst, mw)
	} else {
		wait = worst / b.SlotDecayPerSecond
	}
	le := &LockedError{Blocking: b.Name}
	for _, l := range ls {
		if l.Active {
			if l.queue.n > 0 || !fits(now, l, req.slotsFor(l)) {
				if le.Full == nil {
					le.Used, le.Capacity, le.Waiting = used(now, l), l.Limit.Limit, l.queue.n
				}
				le.Full = append(le.Full, l.Name)
			}
			l.Denied += float64(req.slotsFor(l))
			m.markSoft(l)
		}
	}
	wait = min(wait, 24*3600) // a day is as far as any answer should point
	le.RetryAfter = time.Duration(wait * float64(time.Second))
	return le
}

// grant takes the slots for req on ls and records the lease.
func (m *Machine) grant(now time.Time, req Request, ls []*limitState) Lease {
	for _, l := range ls {
		m.touch(now, l)
	}
	if req.Mode == ModeRateLimit {
		for _, l := range ls {
			if l.Active {
				m.settle(now, l)
				l.Level += float64(req.Slots)
				m.putLimit(l)
			}
		}
		lease := Lease{ID: req.LeaseID, Slots: req.Slots, Mode: req.Mode, Holder: req.Holder,
			Created: now, Duration: req.LeaseDuration, Expires: now.Add(req.LeaseDuration)}
		if !req.NoLease {
			lease.Ticket = req.Ticket
			// Only a kept lease takes a fencing token: the store records the
			// high-water mark with the lease, so a token handed out without
			// one could be handed out again after a restart.
			m.fence++
			lease.Fence = m.fence
			m.addLease(&leaseState{Lease: lease})
			m.changes = append(m.changes, Change{Kind: PutLease, Lease: lease})
		}
		m.events = append(m.events, Event{Kind: Granted, Lease: lease, Limits: refs(ls)})
		return lease
	}
	m.fence++
	ll := &leaseState{Lease: Lease{
		ID: req.LeaseID, Slots: req.Slots, Mode: req.Mode, Holder: req.Holder, Anonymous: req.Anonymous,
		Created: now, Duration: req.LeaseDuration, Expires: now.Add(req.LeaseDuration), Fence: m.fence,
		Holds: make([]Hold, len(ls)), Ticket: req.Ticket,
	}, limits: ls}
	for i, l := range ls {
		ll.Holds[i] = Hold{LimitID: l.ID}
		if l.Active { // inactive limits are named but not counted
			ll.Holds[i].Slots = req.slotsFor(l)
		}
	}
	m.addLease(ll)
	m.changes = append(m.changes, Change{Kind: PutLease, Lease: ll.Lease})
	m.events = append(m.events, Event{Kind: Granted, Lease: ll.Lease, Limits: refs(ls)})
	return ll.Lease
}

func (m *Machine) addLease(ll *leaseState) {
	m.leases[ll.ID] = ll
	if ll.Ticket != "" {
		m.ticketLeases[ll.Ticket] = ll
	}
	heap.Push(&m.expiry, ll)
	for i, l := range ll.limits {
		l.held += ll.Holds[i].Slots
		l.leases[ll] = struct{}{}
		l.lastFence = max(l.lastFence, ll.Fence)
	}
}

// dropLease forgets a lease and returns its slots, updating each limit's
// average occupancy. It returns the limits whose capacity grew.
func (m *Machine) dropLease(now time.Time, ll *leaseState) []*limitState {
	m.forgetLease(ll)
	if ll.heapIdx >= 0 {
		heap.Remove(&m.expiry, ll.heapIdx)
	}
	occupancy := now.Sub(ll.Created).Seconds()
	for i, l := range ll.limits {
		slots := ll.Holds[i].Slots
		l.held -= slots
		delete(l.leases, ll)
		m.touch(now, l)
		if l.Active && !l.deleted && slots > 0 {
			m.observeOccupancy(l, occupancy/float64(slots))
		}
	}
	m.changes = append(m.changes, Change{Kind: DeleteLease, ID: ll.ID})
	return ll.limits
}

// observeOccupancy folds one sample into the limit's moving average as
// Prefect does: an EWMA over about twice the limit's samples, at least 0.1 s.
func (m *Machine) observeOccupancy(l *limitState, seconds float64) {
	if seconds <= 0 {
		return
	}
	occ := max(seconds, 0.1)
	n := 2 * float64(max(1, l.Limit.Limit))
	l.AvgSlotOccupancySeconds += occ/n - l.AvgSlotOccupancySeconds/n
	m.markSoft(l)
}

// Release returns a lease's slots and hands them to the waiters next in
// line. It reports whether the lease was held; a lease past its expiry is
// expired instead and reported as not held.
func (m *Machine) Release(now time.Time, id uuid.UUID) bool {
	ll := m.leases[id]
	if ll == nil {
		return false
	}
	return m.release(now, ll, "its lease was released through the lease API")
}

// ReleaseUnclaimed releases a lease that was granted to a waiter whose
// caller had gone and did not come back for it: nobody was ever told it
// was granted. Its Released event has Reason ReasonUnclaimed. It reports
// whether the lease was held.
func (m *Machine) ReleaseUnclaimed(now time.Time, id uuid.UUID) bool {
	ll := m.leases[id]
	if ll == nil {
		return false
	}
	return m.release(now, ll, ReasonUnclaimed)
}

// release releases ll, or expires it if its time is up. A run that held
// it is Crashed with why as its message: it did not say it was done.
func (m *Machine) release(now time.Time, ll *leaseState, why string) bool {
	if !now.Before(ll.Expires) {
		m.expire(now, ll)
		return false
	}
	m.events = append(m.events, Event{Kind: Released, Lease: ll.Lease, Limits: refs(ll.limits), Reason: why})
	m.lostLease(now, ll, why)
	m.pump(now, m.dropLease(now, ll))
	return true
}

// Renew extends a live lease to now+d. A lease past its expiry cannot be
// renewed: it is expired now and ErrLeaseNotFound is returned, so a renewal
// can never revive slots that were already handed on.
func (m *Machine) Renew(now time.Time, id uuid.UUID, d time.Duration) (Lease, error) {
	ll := m.leases[id]
	if ll == nil {
		return Lease{}, ErrLeaseNotFound
	}
	if !now.Before(ll.Expires) {
		m.expire(now, ll)
		return Lease{}, ErrLeaseNotFound
	}
	if d > 0 {
		ll.Duration = d
	}
	ll.Expires = now.Add(ll.Duration)
	heap.Fix(&m.expiry, ll.heapIdx)
	m.changes = append(m.changes, Change{Kind: PutLease, Lease: ll.Lease})
	return ll.Lease, nil
}

func (m *Machine) expire(now time.Time, ll *leaseState) {
	why := "lease expired: no heartbeat for " + strconv.FormatFloat(ll.Duration.Seconds(), 'g', -1, 64) + "s"
	m.events = append(m.events, Event{Kind: Expired, Lease: ll.Lease, Limits: refs(ll.limits), Reason: why})
	m.lostLease(now, ll, why)
	m.pump(now, m.dropLease(now, ll))
}

// Decrement gives back up to slots slots on each named limit that were
// taken without a lease of the caller's: first from plain increments'
// anonymous leases (oldest first), then from the level taken by rate-limit
// increments and preset active slots. Leases granted with
// increment-with-lease are only ever released by their own id. occupancy,
// when positive, is folded into the limits' average occupancy. It returns
// the existing named limits.
func (m *Machine) Decrement(now time.Time, names []string, slots int, occupancy float64) ([]LimitRef, error) {
	if len(names) == 0 {
		return nil, invalid("names", "must name at least one limit")
	}
	if slots <= 0 || slots > MaxSlots {
		return nil, invalid("slots", "must be between 1 and %d", MaxSlots)
	}
	var ls []*limitState
	for i, name := range names {
		if l := m.byName[name]; l != nil && !slices.Contains(names[:i], name) {
			ls = append(ls, l)
		}
	}
	for _, l := range ls {
		if !l.Active {
			continue
		}
		left := slots
		var anon []*leaseState
		for ll := range l.leases {
			if ll.Anonymous {
				anon = append(anon, ll)
			}
		}
		slices.SortFunc(anon, func(a, b *leaseState) int { return compareLease(a, b) })
		for _, ll := range anon {
			if left == 0 {
				break
			}
			i := slices.Index(ll.limits, l)
			// Copy on write: earlier Changes, Events and Outcomes share the
			// old slices.
			ll.Holds, ll.limits = slices.Clone(ll.Holds), slices.Clone(ll.limits)
			take := min(left, ll.Holds[i].Slots)
			left -= take
			ll.Holds[i].Slots -= take
			l.held -= take
			if ll.Holds[i].Slots == 0 {
				delete(l.leases, ll)
				ll.Holds = slices.Delete(ll.Holds, i, i+1)
				ll.limits = slices.Delete(ll.limits, i, i+1)
			}
			if len(ll.Holds) == 0 {
				m.forgetLease(ll)
				heap.Remove(&m.expiry, ll.heapIdx)
				m.changes = append(m.changes, Change{Kind: DeleteLease, ID: ll.ID})
			} else {
				m.changes = append(m.changes, Change{Kind: PutLease, Lease: ll.Lease})
			}
		}
		if left > 0 {
			m.settle(now, l)
			if l.Level > 0 {
				l.Level = max(0, l.Level-float64(left))
				m.putLimit(l)
			}
		}
		if occupancy > 0 {
			m.observeOccupancy(l, occupancy/float64(slots))
		}
		m.touch(now, l)
	}
	m.pump(now, ls)
	return refs(ls), nil
}

func compareLease(a, b *leaseState) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmpUint(a.Fence, b.Fence)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CancelWaiter removes a waiter that gave up. It reports whether the waiter
// was still waiting; false means it was granted or failed already. A run's
// place in line is not a waiter's to give up (a run leaves the line by
// changing state), so CancelWaiter leaves it and reports false.
func (m *Machine) CancelWaiter(now time.Time, id uint64) bool {
	w := m.waiters[id]
	if w == nil || w.run != nil {
		return false
	}
	m.removeWaiter(now, w)
	// The head may have been the one blocking everybody behind it.
	m.pump(now, w.limits)
	return true
}

func (m *Machine) removeWaiter(now time.Time, w *waiter) {
	delete(m.waiters, w.id)
	if t := w.req.Ticket; t != "" && m.ticketWaiters[t] == w {
		delete(m.ticketWaiters, t)
		m.changes = append(m.changes, Change{Kind: DeleteWaiter, Ticket: t})
	}
	for i, l := range w.limits {
		l.queue.remove(&w.nodes[i])
		m.touch(now, l)
	}
}

// Tick expires the leases whose time is up, lets in the waiters that decay
// has made room for, and removes the template-created limits that have sat
// unused for their idle time.
func (m *Machine) Tick(now time.Time) {
	for len(m.expiry) > 0 && !now.Before(m.expiry[0].Expires) {
		m.expire(now, m.expiry[0])
	}
	var due []*limitState
	for len(m.wakes) > 0 && !now.Before(m.wakes[0].at) {
		w := heap.Pop(&m.wakes).(wake)
		if w.limit.wakeAt.Equal(w.at) {
			w.limit.wakeAt = time.Time{}
		}
		due = append(due, w.limit)
	}
	m.pump(now, due)
	for len(m.idles) > 0 && !now.Before(m.idles[0].at) {
		m.idleDue(now, heap.Pop(&m.idles).(wake).limit)
	}
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

func latest(ts ...time.Time) time.Time {
	var t time.Time
	for _, u := range ts {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// NextDeadline returns the next moment Tick has work to do.
func (m *Machine) NextDeadline() (time.Time, bool) {
	var t time.Time
	ok := false
	if len(m.expiry) > 0 {
		t, ok = m.expiry[0].Expires, true
	}
	if len(m.wakes) > 0 && (!ok || m.wakes[0].at.Before(t)) {
		t, ok = m.wakes[0].at, true
	}
	if len(m.idles) > 0 && (!ok || m.idles[0].at.Before(t)) {
		t, ok = m.idles[0].at, true
	}
	return t, ok
}

// pump grants the head waiters of the given limits while they fit.
func (m *Machine) pump(now time.Time, work []*limitState) {
	for len(work) > 0 {
		l := work[len(work)-1]
		work = work[:len(work)-1]
		// The order of an inactive or deleted limit's line does not
		// matter: anyone in it may be next on their other limits.
		scan := l.deleted || !l.Active
		for n := l.queue.head; n != nil; {
			w := n.w
			n = n.next
			if !m.grantable(now, w) {
				if scan {
					continue
				}
				break
			}
			m.removeWaiter(now, w)
			live := slices.DeleteFunc(slices.Clone(w.limits), func(l *limitState) bool { return l.deleted })
			lease := m.grant(now, w.req, live)
			m.events[len(m.events)-1].WaiterID = w.id
			if r := w.run; r != nil {
				r.waiter = nil
				m.started(now, r, m.leases[lease.ID])
			}
			work = append(work, live...)
			if !scan {
				n = l.queue.head
			}
		}
	}
}

// grantable reports whether w is at the head of every active limit it waits
// for and fits on all of them. When decay alone will make room, it schedules
// a wake.
func (m *Machine) grantable(now time.Time, w *waiter) bool {
	for i, l := range w.limits {
		if l.deleted || !l.Active {
			continue
		}
		if l.queue.head != &w.nodes[i] {
			return false
		}
		if !fits(now, l, w.req.slotsFor(l)) {
			m.scheduleWake(now, l, w)
			return false
		}
	}
	return true
}

// scheduleWake arranges a Tick for when l's decay will have made room for
// w, if decay alone can.
func (m *Machine) scheduleWake(now time.Time, l *limitState, w *waiter) {
	if !l.Active || l.SlotDecayPerSecond == 0 || l.queue.first() != w {
		return
	}
	room := float64(l.Limit.Limit - l.held - w.req.slotsFor(l))
	lv := level(now, l)
	if room < 0 || lv <= room+epsilon {
		return
	}
	secs := (lv - room) / l.SlotDecayPerSecond
	at := now.Add(time.Duration(math.Ceil(secs*float64(time.Second))) + time.Microsecond)
	if !l.wakeAt.IsZero() && !l.wakeAt.After(at) && l.wakeAt.After(now) {
		return
	}
	l.wakeAt = at
	heap.Push(&m.wakes, wake{at: at, limit: l})
}
