package sema

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
)

// HeadView explains why the first waiter in a limit's line still waits. It
// is part of a Full view of a limit that has waiters.
type HeadView struct {
	// Blocker is the limit that keeps the head waiting: the limit viewed,
	// or another limit the head needs too.
	Blocker string
	// Slots is what the head needs of Blocker, Free what Blocker has free.
	Slots, Free int
	// Ahead is the number of earlier requests in Blocker's line: the head
	// of this line waits behind them there (Slots and Free are then of no
	// concern yet).
	Ahead int
	// Next is the lease on Blocker that expires first, if any holds it.
	Next *HolderView
	// DecayIn is how long the decay of Blocker's rate-limit level takes
	// to make room, when decay alone can; zero otherwise.
	DecayIn time.Duration
	// Granting is true when nothing blocks the head: it is being granted.
	Granting bool
	now      time.Time
}

// explain computes the HeadView of l, whose line is not empty.
func (m *Machine) explain(now time.Time, l *limitState) *HeadView {
	w := l.queue.first()
	if w == nil {
		return nil
	}
	h := &HeadView{now: now}
	var blocker *limitState
	// This limit first, then the others in the waiter's order.
	order := make([]int, 0, len(w.limits))
	for i, li := range w.limits {
		if li == l {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		li := w.limits[i]
		if li.deleted || !li.Active {
			continue
		}
		if li.queue.head != &w.nodes[i] {
			ahead := 0
			for n := li.queue.head; n != nil && n != &w.nodes[i]; n = n.next {
				ahead++
			}
			blocker, h.Ahead = li, ahead
			break
		}
		if slots := w.req.slotsFor(li); !fits(now, li, slots) {
			blocker, h.Slots, h.Free = li, slots, max(0, li.Limit.Limit-used(now, li))
			break
		}
	}
	if blocker == nil {
		h.Granting = true
		return h
	}
	h.Blocker = blocker.Name
	if h.Ahead > 0 {
		return h
	}
	var next *leaseState
	for ll := range blocker.leases {
		if next == nil || ll.Expires.Before(next.Expires) || (ll.Expires.Equal(next.Expires) && ll.Fence < next.Fence) {
			next = ll
		}
	}
	if next != nil {
		i := indexOf(next.limits, blocker)
		h.Next = &HolderView{LeaseID: next.ID, Holder: next.Holder, Slots: next.Holds[i].Slots,
			Since: next.Created, Expires: next.Expires, FencingToken: next.Fence}
	}
	if blocker.SlotDecayPerSecond > 0 {
		room := float64(blocker.Limit.Limit - blocker.held - h.Slots)
		if lv := level(now, blocker); room >= 0 && lv > room+epsilon {
			h.DecayIn = time.Duration(math.Ceil((lv - room) / blocker.SlotDecayPerSecond * float64(time.Second)))
		}
	}
	return h
}

func indexOf(ls []*limitState, l *limitState) int {
	for i, x := range ls {
		if x == l {
			return i
		}
	}
	return 0
}

// ShortID is the short form of a lease id that pages and sentences show:
// its last eight hex digits (the first ones of a version 7 UUID are a
// timestamp that leases taken together share).
func ShortID(id uuid.UUID) string {
	s := id.String()
	return "…" + s[len(s)-8:]
}

// HolderName is how a sentence names a holder.
func HolderName(h Holder) string {
	switch {
	case h.ID != "" && h.Type != "":
		return h.Type + " " + h.ID
	case h.ID != "":
		return h.ID
	case h.Type != "":
		return "a " + h.Type
	}
	return "an unnamed holder"
}

// Sentence says in one sentence why the head of the line waits, as the
// web UI and `allot gcl inspect` print it: "needs 2 slots of `db`, 1 free;
// `db` frees next when lease …01a2b3c4 held by etl-7 is released or
// expires in 41s".
func (h *HeadView) Sentence() string {
	if h == nil {
		return ""
	}
	if h.Granting {
		return "the first request in line is being granted"
	}
	if h.Ahead > 0 {
		return fmt.Sprintf("waits behind %d earlier %s in the line of `%s`, which it needs too",
			h.Ahead, plural(h.Ahead, "request", "requests"), h.Blocker)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "needs %d %s of `%s`, %d free", h.Slots, plural(h.Slots, "slot", "slots"), h.Blocker, h.Free)
	if h.Next != nil {
		in := h.Next.Expires.Sub(h.now).Round(time.Second)
		fmt.Fprintf(&b, "; `%s` frees next when lease %s held by %s is released or expires in %s",
			h.Blocker, ShortID(h.Next.LeaseID), HolderName(h.Next.Holder), max(0, in))
	}
	if h.DecayIn > 0 {
		fmt.Fprintf(&b, "; decay makes room in %s", h.DecayIn.Round(100*time.Millisecond))
	}
	if h.Next == nil && h.DecayIn == 0 {
		b.WriteString("; no lease holds it and nothing decays: the limit is too low for this request")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
