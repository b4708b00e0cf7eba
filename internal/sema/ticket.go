package sema

import (
	"cmp"
	"slices"
	"time"

	"github.com/google/uuid"
)

// MaxTicketLength bounds a ticket.
const MaxTicketLength = 128

// ValidateTicket reports why t cannot be a ticket, or "". A ticket is 1 to
// MaxTicketLength characters of A-Z, a-z, 0-9 and ". _ : -".
func ValidateTicket(t string) string {
	if t == "" || len(t) > MaxTicketLength {
		return "must be 1 to 128 characters"
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return "may contain only A-Z, a-z, 0-9 and . _ : -"
		}
	}
	return ""
}

// resume answers a request whose ticket names a live lease (that lease,
// Granted) or a waiter in line (that waiter, with its place). ok is false
// when the ticket names neither: the request is new. A ticket of another
// request (other names, slots or mode) is ErrTicketConflict.
func (m *Machine) resume(now time.Time, req Request) (out Outcome, ok bool, err error) {
	if ll := m.ticketLeases[req.Ticket]; ll != nil {
		if !now.Before(ll.Expires) {
			// Its time is up: it is expired now, and the ticket with it.
			m.expire(now, ll)
			return Outcome{}, false, nil
		}
		if !m.sameAsLease(req, ll) || ll.KeyID != req.KeyID {
			return Outcome{}, true, ErrTicketConflict
		}
		return Outcome{Granted: true, Lease: ll.Lease, Limits: refs(ll.limits), Resumed: true}, true, nil
	}
	w := m.ticketWaiters[req.Ticket]
	if w == nil {
		return Outcome{}, false, nil
	}
	if !sameRequest(w.req, req) || w.req.KeyID != req.KeyID {
		return Outcome{}, true, ErrTicketConflict
	}
	if !req.Wait && slices.ContainsFunc(w.limits, func(l *limitState) bool { return l.Active && !l.deleted }) {
		// It would not wait: refused, as the waiter is not at the front
		// yet; the waiter keeps its place.
		return Outcome{}, true, m.refuse(now, req, w.limits)
	}
	if req.Deadline.After(w.req.Deadline) || req.Deadline.IsZero() != w.req.Deadline.IsZero() {
		w.req.Deadline = req.Deadline
		m.putWaiter(w)
	}
	return Outcome{Limits: refs(w.limits), WaiterID: w.id, Position: m.position(w), Resumed: true}, true, nil
}

// sameRequest reports whether two requests ask for the same thing: the
// same set of names, slots and mode.
func sameRequest(a, b Request) bool {
	return a.Slots == b.Slots && a.Mode == b.Mode && a.NoLease == b.NoLease &&
		sameNames(a.Names, b.Names)
}

func sameNames(a, b []string) bool {
	for _, n := range a {
		if !slices.Contains(b, n) {
			return false
		}
	}
	for _, n := range b {
		if !slices.Contains(a, n) {
			return false
		}
	}
	return true
}

// sameAsLease reports whether req asks for what ll holds: its slots and
// mode, and names that include every limit it holds. (Limits created
// since the grant, or deleted, do not count against it.)
func (m *Machine) sameAsLease(req Request, ll *leaseState) bool {
	if req.Slots != ll.Slots || req.Mode != ll.Mode || req.NoLease {
		return false
	}
	for _, l := range ll.limits {
		if !slices.Contains(req.Names, l.Name) {
			return false
		}
	}
	return true
}

// position is w's place in line: the longest line before it on its active
// limits, plus one.
func (m *Machine) position(w *waiter) int {
	pos := 0
	for i, l := range w.limits {
		if !l.Active || l.deleted {
			continue
		}
		n := 1
		for q := w.nodes[i].prev; q != nil; q = q.prev {
			n++
		}
		pos = max(pos, n)
	}
	return pos
}

// forgetLease takes ll out of the indexes of leases.
func (m *Machine) forgetLease(ll *leaseState) {
	delete(m.leases, ll.ID)
	m.forgetKeyLease(ll)
	if ll.Ticket != "" && m.ticketLeases[ll.Ticket] == ll {
		delete(m.ticketLeases, ll.Ticket)
	}
}

// putWaiter records w, a waiter with a ticket, as it is now.
func (m *Machine) putWaiter(w *waiter) {
	r := w.req
	m.changes = append(m.changes, Change{Kind: PutWaiter, Waiter: &Waiter{
		Ticket: r.Ticket, Seq: w.id, Names: slices.Clone(r.Names), Slots: r.Slots, Mode: r.Mode,
		LeaseID: r.LeaseID, LeaseDuration: r.LeaseDuration, Holder: r.Holder,
		NoLease: r.NoLease, Anonymous: r.Anonymous, Since: w.since, Deadline: r.Deadline, KeyID: r.KeyID,
	}})
}

// Waiting reports whether the waiter id is still in line.
func (m *Machine) Waiting(id uint64) bool { return m.waiters[id] != nil }

// Restored is what became of one durable waiter put back in line by
// RestoreWaiters.
type Restored struct {
	Waiter Waiter
	// Outcome is the request's: Granted at once, or in line again (its
	// WaiterID is new).
	Outcome Outcome
	// Err is why it could not stand in line again (a limit that can never
	// grant it now, say); its record is deleted.
	Err error
}

// RestoreWaiters puts the durable waiters of a store back in line, in the
// order they first arrived, after Restore (and RestoreRuns). Each asks
// again as it first did, with Wait: those that fit now are granted (the
// lease keeps the ticket, so their caller can claim it), the others wait
// again in their order. A waiter whose deadline has passed is dropped. Every
// record is written again (or deleted), so the store matches the new line.
func (m *Machine) RestoreWaiters(now time.Time, ws []Waiter) []Restored {
	ws = slices.Clone(ws)
	slices.SortFunc(ws, func(a, b Waiter) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Ticket, b.Ticket)) })
	out := make([]Restored, 0, len(ws))
	for _, w := range ws {
		m.changes = append(m.changes, Change{Kind: DeleteWaiter, Ticket: w.Ticket})
		if !w.Deadline.IsZero() && !now.Before(w.Deadline) {
			continue
		}
		o, err := m.Acquire(now, Request{Names: w.Names, Slots: w.Slots, Mode: w.Mode, LeaseID: w.LeaseID,
			LeaseDuration: w.LeaseDuration, Holder: w.Holder, NoLease: w.NoLease, Anonymous: w.Anonymous,
			Wait: true, Ticket: w.Ticket, Deadline: w.Deadline, KeyID: w.KeyID})
		out = append(out, Restored{Waiter: w, Outcome: o, Err: err})
	}
	return out
}

// TicketKey returns the API key of what a ticket names (a waiter in line
// or a live lease), and whether it names anything.
func (m *Machine) TicketKey(ticket string) (string, bool) {
	if w := m.ticketWaiters[ticket]; w != nil && w.run == nil {
		return w.req.KeyID, true
	}
	if ll := m.ticketLeases[ticket]; ll != nil {
		return ll.KeyID, true
	}
	return "", false
}

// CancelTicket ends what a ticket names, for a caller that gave up: its
// waiter leaves the line (waiter is its id), or its lease is released
// (lease is its id; the Released event has Reason ReasonTicketCancelled). Both are
// zero when the ticket names nothing.
func (m *Machine) CancelTicket(now time.Time, ticket string) (waiter uint64, lease uuid.UUID) {
	if w := m.ticketWaiters[ticket]; w != nil && w.run == nil {
		m.removeWaiter(now, w)
		m.pump(now, w.limits)
		return w.id, uuid.Nil
	}
	if ll := m.ticketLeases[ticket]; ll != nil {
		m.release(now, ll, ReasonTicketCancelled)
		return 0, ll.ID
	}
	return 0, uuid.Nil
}
