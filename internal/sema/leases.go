package sema

import (
	"container/heap"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
)

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
	m.events = append(m.events, Event{Kind: Queued, WaiterID: w.id, Limits: refs(ls),
		Lease: Lease{Holder: req.Holder, Slots: req.Slots, Mode: req.Mode}})
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
		lease := Lease{ID: req.LeaseID, Slots: req.Slots, Mode: req.Mode, Holder: req.Holder, KeyID: req.KeyID,
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
		ID: req.LeaseID, Slots: req.Slots, Mode: req.Mode, Holder: req.Holder, Anonymous: req.Anonymous, KeyID: req.KeyID,
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
	if ll.KeyID != "" {
		m.keyLeases[ll.KeyID]++
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

// Shorten brings a live lease's expiry forward to now+d, if that is
// sooner, keeping its duration: a Renew with no duration later gives it its
// full term again. It says whether the lease is live. A coordinator uses it
// for a lease nobody has been told of yet, so that the lease ends by itself
// (across a restart too) unless its caller claims it.
func (m *Machine) Shorten(now time.Time, id uuid.UUID, d time.Duration) bool {
	ll := m.leases[id]
	if ll == nil || !now.Before(ll.Expires) {
		return false
	}
	if t := now.Add(max(d, 0)); t.Before(ll.Expires) {
		ll.Expires = t
		heap.Fix(&m.expiry, ll.heapIdx)
		m.changes = append(m.changes, Change{Kind: PutLease, Lease: ll.Lease})
	}
	return true
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
	m.events = append(m.events, Event{Kind: LeftLine, WaiterID: w.id, Limits: refs(w.limits),
		Lease: Lease{Holder: w.req.Holder, Slots: w.req.Slots, Mode: w.req.Mode}})
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

// RevokeLimitLeases takes away every lease that holds a slot of the limit
// (an operator's reset): their slots on all their limits go back to the
// next waiters, and a run whose lease is revoked is Crashed with reason as
// its message. It returns how many leases were revoked.
func (m *Machine) RevokeLimitLeases(now time.Time, limitID uuid.UUID, reason string) (int, error) {
	l := m.byID[limitID]
	if l == nil {
		return 0, ErrLimitNotFound
	}
	lls := make([]*leaseState, 0, len(l.leases))
	for ll := range l.leases {
		lls = append(lls, ll)
	}
	slices.SortFunc(lls, compareLease)
	var work []*limitState
	for _, ll := range lls {
		m.events = append(m.events, Event{Kind: Revoked, Lease: ll.Lease, Limits: refs(ll.limits), Reason: reason})
		m.lostLease(now, ll, reason)
		work = append(work, m.dropLease(now, ll)...)
	}
	m.pump(now, work)
	return len(lls), nil
}

// RevokeLease takes one lease away (an operator's revoke): its slots go
// back to the next waiters, and a run that held it is Crashed with reason
// as its message, as a reset does. A lease past its expiry is expired
// instead. It fails with ErrLeaseNotFound for a lease that is not held.
func (m *Machine) RevokeLease(now time.Time, id uuid.UUID, reason string) (Lease, error) {
	ll := m.leases[id]
	if ll == nil {
		return Lease{}, ErrLeaseNotFound
	}
	if !now.Before(ll.Expires) {
		m.expire(now, ll)
		return Lease{}, ErrLeaseNotFound
	}
	m.events = append(m.events, Event{Kind: Revoked, Lease: ll.Lease, Limits: refs(ll.limits), Reason: reason})
	m.lostLease(now, ll, reason)
	m.pump(now, m.dropLease(now, ll))
	return ll.Lease, nil
}

// PlainIncrement is how a plain increment (Prefect's POST
// /v2/concurrency_limits/increment, which returns no lease id) holds its
// slots: in mode concurrency in an anonymous lease, which a plain Decrement
// gives back (or which expires); in mode rate_limit in no lease at all, its
// slots decaying. It returns the Request fields to set.
func PlainIncrement(mode Mode) (noLease, anonymous bool) {
	if mode == ModeRateLimit {
		return true, false
	}
	return false, true
}
