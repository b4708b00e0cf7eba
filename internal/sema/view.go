package sema

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// LimitView is a limit as read at one moment.
type LimitView struct {
	Limit
	// ActiveSlots is the slots in use: held by leases plus the undecayed
	// level, rounded up.
	ActiveSlots int
	DeniedSlots int
	Held        int
	Template    bool
	// FencingToken is the token of the latest grant on this limit.
	FencingToken uint64
	Holders      []HolderView
	Waiters      []WaiterView
	// Waiting is the number of queued requests.
	Waiting int
	// Head explains why the first waiter waits (Full views with waiters).
	Head *HeadView
	// HeadSince is when the first waiter joined the line (zero: none).
	HeadSince time.Time
}

// HolderView is one lease holding a limit.
type HolderView struct {
	LeaseID      uuid.UUID
	Holder       Holder
	Slots        int
	Since        time.Time
	Expires      time.Time
	FencingToken uint64
}

// WaiterView is one queued request on a limit.
type WaiterView struct {
	ID       uint64
	Position int
	Slots    int
	Mode     Mode
	Holder   Holder
	Since    time.Time
	// Deadline is when the request stops waiting (zero: a run, which
	// waits until it is granted or cancelled).
	Deadline time.Time
	// Others are the other limits the request waits for together with
	// this one.
	Others []string
}

// Detail says how much a view includes.
type Detail uint8

// The levels of Detail.
const (
	Summary Detail = iota // counts only
	Full                  // holders and waiters too
)

func (m *Machine) view(now time.Time, l *limitState, d Detail) LimitView {
	v := LimitView{
		Limit:        l.Limit,
		ActiveSlots:  used(now, l),
		Held:         l.held,
		Template:     l.IsTemplate(),
		FencingToken: l.lastFence,
		Waiting:      l.queue.n,
	}
	if w := l.queue.first(); w != nil {
		v.HeadSince = w.since
	}
	dt := now.Sub(l.DecayAt).Seconds()
	v.DeniedSlots = int(math.Ceil(max(0, l.Denied-m.deniedRate(l)*max(0, dt)) - epsilon))
	if d == Summary {
		return v
	}
	holders := make([]*leaseState, 0, len(l.leases))
	for ll := range l.leases {
		holders = append(holders, ll)
	}
	slices.SortFunc(holders, compareLease)
	for _, ll := range holders {
		i := slices.Index(ll.limits, l)
		v.Holders = append(v.Holders, HolderView{LeaseID: ll.ID, Holder: ll.Holder, Slots: ll.Holds[i].Slots,
			Since: ll.Created, Expires: ll.Expires, FencingToken: ll.Fence})
	}
	pos := 0
	for n := l.queue.head; n != nil; n = n.next {
		pos++
		var others []string
		for _, o := range n.w.limits {
			if o != l {
				others = append(others, o.Name)
			}
		}
		v.Waiters = append(v.Waiters, WaiterView{ID: n.w.id, Position: pos, Slots: n.w.req.slotsFor(l),
			Mode: n.w.req.Mode, Holder: n.w.req.Holder, Since: n.w.since, Deadline: n.w.req.Deadline, Others: others})
	}
	v.Head = m.explain(now, l)
	return v
}

// LimitByID returns the view of the limit with that id.
func (m *Machine) LimitByID(now time.Time, id uuid.UUID, d Detail) (LimitView, error) {
	l := m.byID[id]
	if l == nil {
		return LimitView{}, ErrLimitNotFound
	}
	return m.view(now, l, d), nil
}

// LimitByName returns the view of the limit with that name.
func (m *Machine) LimitByName(now time.Time, name string, d Detail) (LimitView, error) {
	l := m.byName[name]
	if l == nil {
		return LimitView{}, ErrLimitNotFound
	}
	return m.view(now, l, d), nil
}

// Limits returns up to n limits whose names start with prefix, ordered by
// name, skipping the first offset.
func (m *Machine) Limits(now time.Time, prefix string, offset, n int, d Detail) []LimitView {
	out := []LimitView{}
	i, _ := slices.BinarySearchFunc(m.sorted, prefix, func(e *limitState, p string) int { return strings.Compare(e.Name, p) })
	for i += max(0, offset); i < len(m.sorted) && len(out) < n; i++ {
		l := m.sorted[i]
		if !strings.HasPrefix(l.Name, prefix) {
			break
		}
		out = append(out, m.view(now, l, d))
	}
	return out
}

// LimitCount returns the number of limits.
func (m *Machine) LimitCount() int { return len(m.sorted) }

// Lease returns a live lease.
func (m *Machine) Lease(now time.Time, id uuid.UUID) (Lease, []LimitRef, error) {
	ll := m.leases[id]
	if ll == nil || !now.Before(ll.Expires) {
		return Lease{}, nil, ErrLeaseNotFound
	}
	return ll.Lease, refs(ll.limits), nil
}

// Holds reports whether the machine still holds the lease, past its expiry
// or not, and its expiry: a lease past its expiry is held until it is
// expired (by Tick, or by a renewal or release that finds it so).
func (m *Machine) Holds(id uuid.UUID) (time.Time, bool) {
	ll := m.leases[id]
	if ll == nil {
		return time.Time{}, false
	}
	return ll.Expires, true
}

// Counts returns the number of live leases and queued waiters.
func (m *Machine) Counts() (leases, waiters int) { return len(m.leases), len(m.waiters) }

// LimitKind is a class of limits, as the web UI filters them.
type LimitKind uint8

// The kinds of limit.
const (
	AnyKind      LimitKind = iota
	GlobalKind             // a global concurrency limit named freely
	TagKind                // tag:… (task runs' tags)
	LabelKind              // label:… (flow runs' labels)
	TemplateKind           // a name with '*': applies on first use
)

// ParseLimitKind parses a kind as the UI spells it ("" is AnyKind).
func ParseLimitKind(s string) (LimitKind, bool) {
	switch s {
	case "", "all":
		return AnyKind, true
	case "global":
		return GlobalKind, true
	case "tag":
		return TagKind, true
	case "label":
		return LabelKind, true
	case "template":
		return TemplateKind, true
	}
	return 0, false
}

// String returns the kind as the UI spells it.
func (k LimitKind) String() string {
	return [...]string{"all", "global", "tag", "label", "template"}[k]
}

// KindOf returns the kind of the limit named name.
func KindOf(name string) LimitKind {
	switch {
	case isPattern(name):
		return TemplateKind
	case strings.HasPrefix(name, "tag:"):
		return TagKind
	case strings.HasPrefix(name, "label:"):
		return LabelKind
	}
	return GlobalKind
}

// FindLimits returns up to n limits of kind k whose names contain query,
// by name, skipping the first offset matches, and the number of matches.
// It scans every limit: about a millisecond per 100,000.
func (m *Machine) FindLimits(now time.Time, k LimitKind, query string, offset, n int) ([]LimitView, int) {
	out := []LimitView{}
	total := 0
	for _, l := range m.sorted {
		if k != AnyKind && KindOf(l.Name) != k || !strings.Contains(l.Name, query) {
			continue
		}
		if total >= offset && len(out) < n {
			out = append(out, m.view(now, l, Summary))
		}
		total++
	}
	return out, total
}
