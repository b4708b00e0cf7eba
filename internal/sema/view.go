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
		v.Waiters = append(v.Waiters, WaiterView{ID: n.w.id, Position: pos, Slots: n.w.req.slotsFor(l),
			Mode: n.w.req.Mode, Holder: n.w.req.Holder, Since: n.w.since})
	}
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
