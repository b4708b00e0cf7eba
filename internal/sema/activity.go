package sema

import (
	"container/list"
	"time"

	"github.com/google/uuid"
)

// ActivityKind says what an ActivityEvent reports.
type ActivityKind uint8

// The kinds of ActivityEvent.
const (
	ActGranted ActivityKind = iota + 1
	ActReleased
	ActExpired
	ActRevoked
	// ActDenied: a request was refused at once (423, not waiting).
	ActDenied
	// ActTimedOut: a request waited in line and gave up without a grant.
	ActTimedOut
)

var activityNames = [...]string{"", "granted", "released", "expired", "revoked", "denied", "timed_out"}

// String returns the kind as pages and the API spell it.
func (k ActivityKind) String() string {
	if int(k) < len(activityNames) {
		return activityNames[k]
	}
	return "unknown"
}

// ActivityEvent is one thing that happened on a limit.
type ActivityEvent struct {
	At      time.Time
	Kind    ActivityKind
	LeaseID uuid.UUID // zero for denials and time-outs
	Holder  Holder
	Slots   int
}

// MinuteStats is one minute of a limit's history.
type MinuteStats struct {
	Start time.Time
	// Granted … TimedOut count the events of the minute.
	Granted, Released, Expired, Revoked, Denied, TimedOut int
	// Held and Waiting are the slots held and requests waiting at the
	// minute's last event (or carried over from an earlier minute).
	Held, Waiting int
}

// ActivityView is a limit's recent history.
type ActivityView struct {
	// Minutes are the last HistoryMinutes minutes, oldest first; empty
	// when the limit is not tracked.
	Minutes []MinuteStats
	// Events are the last EventMemory events, newest first.
	Events []ActivityEvent
	// Denied and TimedOut are the totals of the last hour.
	Denied, TimedOut int
}

// The bounds of an Activity.
const (
	HistoryMinutes = 60
	EventMemory    = 50
)

type bucket struct {
	minute                                                int64 // unix minute; 0: empty
	granted, released, expired, revoked, denied, timedOut int32
	held, waiting                                         int32
}

type track struct {
	name          string
	buckets       [HistoryMinutes]bucket
	events        [EventMemory]ActivityEvent
	nextEvent     int
	nEvents       int
	held, waiting int32
	elem          *list.Element
}

// Activity keeps the recent history of the limits last active or viewed:
// for each, counts by minute over the last hour and its last events. It
// tracks at most a fixed number of limits; the one least recently touched
// is forgotten first, so its memory does not grow with the number of
// limits (about 8 KiB per tracked limit, holders' metadata aside). Not safe
// for concurrent use; the coordinator holds it under its lock.
type Activity struct {
	max    int
	byName map[string]*track
	lru    *list.List // front: most recently touched
}

// NewActivity returns an Activity that tracks up to limits limits (at
// least 1).
func NewActivity(limits int) *Activity {
	return &Activity{max: max(1, limits), byName: make(map[string]*track), lru: list.New()}
}

func (a *Activity) touch(name string) *track {
	if t := a.byName[name]; t != nil {
		a.lru.MoveToFront(t.elem)
		return t
	}
	var t *track
	if a.lru.Len() >= a.max {
		t = a.lru.Remove(a.lru.Back()).(*track)
		delete(a.byName, t.name)
		*t = track{}
	} else {
		t = new(track)
	}
	t.name = name
	t.elem = a.lru.PushFront(t)
	a.byName[name] = t
	return t
}

// Watch starts (or keeps) tracking name, as a page that shows it does.
func (a *Activity) Watch(name string) { a.touch(name) }

// Forget stops tracking name (its limit was deleted).
func (a *Activity) Forget(name string) {
	if t := a.byName[name]; t != nil {
		a.lru.Remove(t.elem)
		delete(a.byName, name)
	}
}

// Record adds e to the history of the limit name, which now has held slots
// held and waiting requests in line.
func (a *Activity) Record(name string, e ActivityEvent, held, waiting int) {
	t := a.touch(name)
	minute := e.At.Unix() / 60
	b := &t.buckets[minute%HistoryMinutes]
	if b.minute != minute {
		*b = bucket{minute: minute}
	}
	switch e.Kind {
	case ActGranted:
		b.granted++
	case ActReleased:
		b.released++
	case ActExpired:
		b.expired++
	case ActRevoked:
		b.revoked++
	case ActDenied:
		b.denied++
	case ActTimedOut:
		b.timedOut++
	}
	if held >= 0 {
		t.held, t.waiting = int32(held), int32(waiting)
	}
	b.held, b.waiting = t.held, t.waiting
	t.events[t.nextEvent] = e
	t.nextEvent = (t.nextEvent + 1) % EventMemory
	t.nEvents = min(t.nEvents+1, EventMemory)
}

// Sample notes that the limit name has held slots held and waiting
// requests in line at at, without an event (someone joined or left the
// line). It only updates a tracked limit.
func (a *Activity) Sample(name string, at time.Time, held, waiting int) {
	t := a.byName[name]
	if t == nil {
		return
	}
	minute := at.Unix() / 60
	b := &t.buckets[minute%HistoryMinutes]
	if b.minute != minute {
		*b = bucket{minute: minute}
	}
	t.held, t.waiting = int32(held), int32(waiting)
	b.held, b.waiting = t.held, t.waiting
}

// Counts returns the denials and time-outs of name over the hour before
// now, without touching it.
func (a *Activity) Counts(now time.Time, name string) (denied, timedOut int) {
	t := a.byName[name]
	if t == nil {
		return 0, 0
	}
	first := now.Unix()/60 - HistoryMinutes + 1
	for i := range t.buckets {
		if b := &t.buckets[i]; b.minute >= first {
			denied += int(b.denied)
			timedOut += int(b.timedOut)
		}
	}
	return denied, timedOut
}

// View returns the history of name as of now. An untracked name has an
// empty view.
func (a *Activity) View(now time.Time, name string) ActivityView {
	t := a.byName[name]
	if t == nil {
		return ActivityView{}
	}
	v := ActivityView{Minutes: make([]MinuteStats, HistoryMinutes), Events: make([]ActivityEvent, 0, t.nEvents)}
	last := now.Unix() / 60
	// Held and waiting carry over minutes without events, from the last
	// minute before the window that had one.
	var held, waiting int32
	var seen int64
	for i := range t.buckets {
		if b := &t.buckets[i]; b.minute != 0 && b.minute <= last-HistoryMinutes && b.minute > seen {
			seen, held, waiting = b.minute, b.held, b.waiting
		}
	}
	for i := range HistoryMinutes {
		minute := last - HistoryMinutes + 1 + int64(i)
		ms := &v.Minutes[i]
		ms.Start = time.Unix(minute*60, 0).UTC()
		if b := &t.buckets[minute%HistoryMinutes]; b.minute == minute {
			ms.Granted, ms.Released, ms.Expired, ms.Revoked = int(b.granted), int(b.released), int(b.expired), int(b.revoked)
			ms.Denied, ms.TimedOut = int(b.denied), int(b.timedOut)
			held, waiting = b.held, b.waiting
			v.Denied += ms.Denied
			v.TimedOut += ms.TimedOut
		}
		ms.Held, ms.Waiting = int(held), int(waiting)
	}
	for i := range t.nEvents {
		v.Events = append(v.Events, t.events[(t.nextEvent-1-i+2*EventMemory)%EventMemory])
	}
	return v
}

// Occupancy returns the slots held by leases on the limit name and the
// requests in its line.
func (m *Machine) Occupancy(name string) (held, waiting int, ok bool) {
	l := m.byName[name]
	if l == nil {
		return 0, 0, false
	}
	return l.held, l.queue.n, true
}
