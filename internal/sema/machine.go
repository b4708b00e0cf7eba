package sema

import (
	"container/heap"
	"math"
	"slices"
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

	keys map[string]Key
	// keyLeases counts the leases held by each API key, for its quota.
	keyLeases map[string]int
	// audit is the audit log, oldest first; auditSeq its last number.
	audit    []AuditRecord
	auditSeq uint64

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

		keys:      make(map[string]Key),
		keyLeases: make(map[string]int),
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

func refs(ls []*limitState) []LimitRef {
	out := make([]LimitRef, len(ls))
	for i, l := range ls {
		out[i] = l.ref()
	}
	return out
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
