package sema

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// RunKind says whether a run is a task run or a flow run.
type RunKind uint8

// The kinds of run.
const (
	// KindTask is a task run; its tags are limited by "tag:{tag}" limits.
	KindTask RunKind = iota + 1
	// KindFlow is a flow run; its labels are limited by "label:{label}"
	// limits.
	KindFlow
)

// String returns the kind as the API spells it: "task" or "flow".
func (k RunKind) String() string {
	switch k {
	case KindTask:
		return "task"
	case KindFlow:
		return "flow"
	}
	return fmt.Sprintf("RunKind(%d)", k)
}

// ParseRunKind parses a kind as the API spells it.
func ParseRunKind(s string) (RunKind, bool) {
	switch s {
	case "task":
		return KindTask, true
	case "flow":
		return KindFlow, true
	}
	return 0, false
}

// LimitPrefix returns the prefix of the limits of a run of this kind's tags:
// "tag:" for task runs, "label:" for flow runs.
func (k RunKind) LimitPrefix() string {
	if k == KindFlow {
		return "label:"
	}
	return "tag:"
}

// HolderType returns the holder type of the leases of runs of this kind:
// "task_run" or "flow_run".
func (k RunKind) HolderType() string {
	if k == KindFlow {
		return "flow_run"
	}
	return "task_run"
}

// Noun returns what a run of this kind calls its tags: "tag" or "label".
func (k RunKind) Noun() string {
	if k == KindFlow {
		return "label"
	}
	return "tag"
}

// RunState is the state of a run.
type RunState uint8

// The states of a run. A run starts Pending, waits in AwaitingConcurrency-
// Slot while its limits are full, holds its slots while Running, and ends in
// one of the four final states, which it never leaves.
const (
	Pending RunState = iota + 1
	AwaitingConcurrencySlot
	Running
	Completed
	Failed
	Crashed
	Cancelled
)

var runStateNames = [...]string{
	Pending:                 "Pending",
	AwaitingConcurrencySlot: "AwaitingConcurrencySlot",
	Running:                 "Running",
	Completed:               "Completed",
	Failed:                  "Failed",
	Crashed:                 "Crashed",
	Cancelled:               "Cancelled",
}

// String returns the state's name as the API spells it.
func (s RunState) String() string {
	if s >= Pending && int(s) < len(runStateNames) {
		return runStateNames[s]
	}
	return fmt.Sprintf("RunState(%d)", s)
}

// ParseRunState parses a state's name as the API spells it.
func ParseRunState(s string) (RunState, bool) {
	for i, n := range runStateNames {
		if n != "" && n == s {
			return RunState(i), true
		}
	}
	return 0, false
}

// IsFinal reports whether s is a final state: Completed, Failed, Crashed or
// Cancelled.
func (s RunState) IsFinal() bool { return s >= Completed && s <= Cancelled }

// CollisionStrategy says what a run does when its limits are full.
type CollisionStrategy uint8

// The collision strategies.
const (
	// Enqueue waits in line (AwaitingConcurrencySlot); the default.
	Enqueue CollisionStrategy = iota
	// CancelNew ends the run Cancelled at once.
	CancelNew
)

// String returns the strategy as the API spells it.
func (c CollisionStrategy) String() string {
	if c == CancelNew {
		return "cancel_new"
	}
	return "enqueue"
}

// ParseCollisionStrategy parses a strategy as the API spells it; the empty
// string is Enqueue.
func ParseCollisionStrategy(s string) (CollisionStrategy, bool) {
	switch s {
	case "", "enqueue":
		return Enqueue, true
	case "cancel_new":
		return CancelNew, true
	}
	return 0, false
}

// StateEntry is one state a run entered.
type StateEntry struct {
	State   RunState
	At      time.Time
	Message string
}

// Run is the durable record of a task run or a flow run.
type Run struct {
	ID   uuid.UUID
	Kind RunKind
	Name string
	// Tags are a task run's tags or a flow run's labels, without duplicates.
	Tags []string
	// Limits are global limits the run takes Slots slots of, together
	// with its tags' limits, all at once; never shared with ancestors.
	Limits []string
	// Slots is the number of slots the run takes of each of Limits (1 if
	// it names none).
	Slots int
	// ParentID is the run this one runs inside (a task run's flow run, a
	// nested task's parent task), or the zero UUID.
	ParentID          uuid.UUID
	State             RunState
	History           []StateEntry // oldest first, at most MaxRunHistory
	CollisionStrategy CollisionStrategy
	LeaseDuration     time.Duration
	// LeaseID and Fence are the lease the run holds or held, once it has
	// been Running.
	LeaseID uuid.UUID
	Fence   uint64
	// WaitSeq orders the runs that joined the line: a restart puts the runs
	// still AwaitingConcurrencySlot back in line in this order.
	WaitSeq uint64
	Created time.Time
	Updated time.Time
}

// Bounds of a run's fields.
const (
	MaxRunTags = 100
	MaxRunName = 512
	// MaxRunMessage is the most bytes of a state message a run keeps: a
	// longer message is cut (see TruncateRunMessage), never refused, so
	// that no message keeps a run from ending.
	MaxRunMessage = 2048
	MaxRunHistory = 50
	// maxRunDepth bounds the walk up a run's ancestors.
	maxRunDepth = 100
)

// RunSpec is what a new run is made of.
type RunSpec struct {
	ID   uuid.UUID
	Kind RunKind
	Name string
	Tags []string
	// Limits are global limits (or names their templates make) that the
	// run takes together with its tags' limits, in the same all-or-nothing
	// wait; Slots (0 means 1) is how many slots of each. A name that does
	// not exist when the run asks to start is an error (ErrLimitNotFound),
	// unlike a tag without a limit.
	Limits            []string
	Slots             int
	ParentID          uuid.UUID
	CollisionStrategy CollisionStrategy
	// LeaseDuration is the time to live of the run's lease: a Running run
	// that sends no heartbeat for this long is Crashed.
	LeaseDuration time.Duration
}

type runState struct {
	Run
	waiter *waiter     // while AwaitingConcurrencySlot
	lease  *leaseState // while Running
	// startMsg is the message of its Running entry to come: the caller's,
	// or which slots it shares with its ancestors.
	startMsg string
}

// runQueue is a first-in-first-out list of runs.
type runQueue struct {
	runs []*runState
	head int
}

func (q *runQueue) push(r *runState) { q.runs = append(q.runs, r) }

func (q *runQueue) first() *runState {
	if q.head == len(q.runs) {
		return nil
	}
	return q.runs[q.head]
}

func (q *runQueue) pop() {
	q.runs[q.head] = nil
	q.head++
	if q.head > 32 && q.head*2 > len(q.runs) {
		q.runs = slices.Delete(q.runs, 0, q.head)
		q.head = 0
	}
}

// runLeaseID is the id of the one lease a run may ever hold.
func runLeaseID(id uuid.UUID) uuid.UUID { return uuid.NewSHA1(id, []byte("allot run lease")) }

func validateRunText(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return invalid(field, "must be at most %d bytes", maxLen)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	return nil
}

// truncatedMark ends a state message that TruncateRunMessage cut.
const truncatedMark = "…"

// TruncateRunMessage returns the state message a run keeps of message: the
// message itself when it is at most MaxRunMessage bytes, else its longest
// head that fits with "…" after it, cut between characters. Each run of
// bytes that are not UTF-8 becomes U+FFFD first.
func TruncateRunMessage(message string) string {
	message = strings.ToValidUTF8(message, "\uFFFD")
	if len(message) <= MaxRunMessage {
		return message
	}
	n := MaxRunMessage - len(truncatedMark)
	for n > 0 && !utf8.RuneStart(message[n]) {
		n--
	}
	return message[:n] + truncatedMark
}

// ValidateTag reports why tag cannot be a tag (or label) of a run of kind
// k, or "". A tag names the limit k.LimitPrefix()+tag, so it follows the
// rules of limit names, and it may not contain '*' (a run names limits, it
// does not acquire templates).
func ValidateTag(k RunKind, tag string) string {
	if tag == "" {
		return "must not be empty"
	}
	if strings.IndexByte(tag, '*') >= 0 {
		return "must not contain *"
	}
	if len(k.LimitPrefix()+tag) > MaxNameLength {
		return fmt.Sprintf("must be at most %d bytes", MaxNameLength-len(k.LimitPrefix()))
	}
	if why := ValidateName(k.LimitPrefix() + tag); why != "" {
		return why
	}
	return ""
}

// CreateRun creates a Pending run. Creating a run again with the id of one
// that exists and the same spec (a retry after a lost answer) returns the
// run as it is and changes nothing; another spec fails with ErrRunExists.
func (m *Machine) CreateRun(now time.Time, s RunSpec) (Run, error) {
	if s.ID == uuid.Nil {
		return Run{}, invalid("id", "must not be the nil UUID")
	}
	if s.Kind != KindTask && s.Kind != KindFlow {
		return Run{}, invalid("kind", `must be "task" or "flow"`)
	}
	if err := validateRunText("name", s.Name, MaxRunName); err != nil {
		return Run{}, err
	}
	if len(s.Tags) > MaxRunTags {
		return Run{}, invalid("tags", "must have at most %d items", MaxRunTags)
	}
	if len(s.Limits) > MaxRunTags {
		return Run{}, invalid("limits", "must have at most %d items", MaxRunTags)
	}
	var limits []string
	for i, n := range s.Limits {
		why := ValidateName(n)
		if why == "" && isPattern(n) {
			why = "is a limit template; name the limits it matches, not the template"
		}
		if why != "" {
			return Run{}, invalid("limits", "item %d (%q) %s", i, n, why)
		}
		if !slices.Contains(limits, n) {
			limits = append(limits, n)
		}
	}
	slots := s.Slots
	if slots == 0 {
		slots = 1
	}
	if slots < 0 || slots > MaxSlots {
		return Run{}, invalid("slots", "must be between 1 and %d", MaxSlots)
	}
	var tags []string
	for i, t := range s.Tags {
		if why := ValidateTag(s.Kind, t); why != "" {
			return Run{}, invalid("tags", "item %d (%q) %s", i, t, why)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if s.CollisionStrategy != Enqueue && s.CollisionStrategy != CancelNew {
		return Run{}, invalid("collision_strategy", `must be "enqueue" or "cancel_new"`)
	}
	if s.LeaseDuration <= 0 {
		return Run{}, invalid("lease_duration", "must be positive")
	}
	if s.ParentID != uuid.Nil && (s.ParentID == s.ID || m.runs[s.ParentID] == nil) {
		return Run{}, invalid("parent_id", "no run with this id")
	}
	if r := m.runs[s.ID]; r != nil {
		// The same run asked for again (a retry after a lost answer) is
		// the run that exists; another run with its id is a conflict.
		if r.Kind == s.Kind && r.Name == s.Name && slices.Equal(r.Tags, tags) && slices.Equal(r.Limits, limits) &&
			r.Slots == slots && r.ParentID == s.ParentID &&
			r.CollisionStrategy == s.CollisionStrategy && r.LeaseDuration == s.LeaseDuration {
			return r.snapshot(), nil
		}
		return Run{}, ErrRunExists
	}
	r := &runState{Run: Run{
		ID: s.ID, Kind: s.Kind, Name: s.Name, Tags: tags, Limits: limits, Slots: slots, ParentID: s.ParentID, State: Pending,
		History:           []StateEntry{{State: Pending, At: now}},
		CollisionStrategy: s.CollisionStrategy, LeaseDuration: s.LeaseDuration,
		Created: now, Updated: now,
	}}
	m.runs[s.ID] = r
	return m.putRun(r), nil
}

// snapshot copies the run with slices of its own.
func (r *runState) snapshot() Run {
	out := r.Run
	out.Tags = slices.Clone(r.Tags)
	out.Limits = slices.Clone(r.Limits)
	out.History = slices.Clone(r.History)
	return out
}

// putRun records the run as it is now, and returns that snapshot.
func (m *Machine) putRun(r *runState) Run {
	snap := r.snapshot()
	p := &snap
	m.changes = append(m.changes, Change{Kind: PutRun, Run: p})
	m.events = append(m.events, Event{Kind: RunChanged, Run: p})
	return snap
}

// transition moves r to state s and records it.
func (m *Machine) transition(now time.Time, r *runState, s RunState, msg string) {
	r.State = s
	r.Updated = now
	r.History = append(r.History, StateEntry{State: s, At: now, Message: msg})
	if n := len(r.History) - MaxRunHistory; n > 0 {
		r.History = slices.Delete(r.History, 0, n)
	}
	if s.IsFinal() {
		m.finished.push(r)
	}
	m.putRun(r)
}

// SetRunState moves a run to Running or to a final state, and returns it.
//
// Running takes the slots of every limited tag of the run at once: the run
// is Running when they are all free, AwaitingConcurrencySlot in line for
// them otherwise (or Cancelled at once with CollisionStrategy CancelNew),
// and Failed at once if they can never be granted (a limit of 0). Slots that
// an ancestor of the run holds are shared, not taken again. Asking a run
// that is already Running or waiting to run changes nothing.
//
// A final state releases the run's lease (or takes it out of line). Asking
// for the final state the run is in changes nothing; any other change of a
// final run fails with a *TransitionError.
//
// The message is kept as TruncateRunMessage cuts it: a message too long is
// no reason to keep a run from ending.
func (m *Machine) SetRunState(now time.Time, id uuid.UUID, to RunState, message string) (Run, error) {
	r := m.runs[id]
	if r == nil {
		return Run{}, ErrRunNotFound
	}
	message = TruncateRunMessage(message)
	if to != Running && !to.IsFinal() {
		return Run{}, invalid("state", "must be Running, Completed, Failed, Crashed or Cancelled")
	}
	// A lease past its expiry is expired first, whatever is asked: the
	// slots were no longer the run's.
	if r.lease != nil && !now.Before(r.lease.Expires) {
		m.expire(now, r.lease)
	}
	switch {
	case r.State == to:
	case r.State.IsFinal():
		last := r.History[len(r.History)-1]
		detail := fmt.Sprintf("run is already %s", r.State)
		if last.Message != "" {
			detail += ": " + last.Message
		}
		return r.snapshot(), &TransitionError{From: r.State, To: to, Detail: detail}
	case to == Running:
		if r.State == Pending {
			if err := m.queueRun(now, r, message, true); err != nil {
				return Run{}, err
			}
		}
	default:
		m.finish(now, r, to, message)
	}
	return r.snapshot(), nil
}

// queueRun asks for r's slots: r starts Running, waits in line, or ends.
// A run that was already waiting (after a restart) keeps its place in the
// order of WaitSeq and records no new state when it waits again.
func (m *Machine) queueRun(now time.Time, r *runState, message string, fresh bool) error {
	ls, slotsOn, sharing, err := m.runLimits(now, r)
	if err != nil {
		return err
	}
	r.startMsg = sharing
	if message != "" {
		r.startMsg = message
	}
	req := Request{Slots: 1, LeaseID: runLeaseID(r.ID), LeaseDuration: r.LeaseDuration,
		Holder:  Holder{Type: r.Kind.HolderType(), ID: r.ID.String()},
		Wait:    r.CollisionStrategy == Enqueue || !fresh,
		slotsOn: slotsOn}
	out, err := m.admit(now, req, ls, r)
	var ne *NeverError
	var le *LockedError
	switch {
	case errors.As(err, &ne):
		m.transition(now, r, Failed, neverMessage(r, ne))
	case errors.As(err, &le):
		m.transition(now, r, Cancelled, fmt.Sprintf("collision strategy cancel_new: the concurrency limit on %s is full", keyList(r.Kind, le.Full)))
	case err != nil:
		return err
	case out.Granted:
		m.started(now, r, m.leases[out.Lease.ID])
	default:
		r.waiter = m.waiters[out.WaiterID]
		if fresh {
			m.runSeq++
			r.WaitSeq = m.runSeq
			var full []string
			for _, l := range ls {
				if l.Active && (l.queue.n > 1 || !fits(now, l, req.slotsFor(l))) {
					full = append(full, l.Name)
				}
			}
			switch {
			case message != "":
			case len(full) == 0:
				message = "waiting in line"
			default:
				message = "waiting for a slot of " + keyList(r.Kind, full)
			}
			m.transition(now, r, AwaitingConcurrencySlot, message)
		}
	}
	return nil
}

// keyList names limits the way a run's user knows them: `tag "a"` or
// `tags "a", "b"`, and `limit "x"` for a limit the run names itself.
func keyList(k RunKind, names []string) string {
	var keys, others []string
	for _, n := range names {
		if key, ok := strings.CutPrefix(n, k.LimitPrefix()); ok {
			keys = append(keys, fmt.Sprintf("%q", key))
		} else {
			others = append(others, fmt.Sprintf("%q", n))
		}
	}
	var parts []string
	for _, g := range []struct {
		noun  string
		names []string
	}{{k.Noun(), keys}, {"limit", others}} {
		if len(g.names) == 0 {
			continue
		}
		noun := g.noun
		if len(g.names) != 1 {
			noun += "s"
		}
		parts = append(parts, noun+" "+strings.Join(g.names, ", "))
	}
	return strings.Join(parts, " and ")
}

// neverMessage says why a run can never get its slots.
func neverMessage(r *runState, err error) string {
	var ne *NeverError
	if errors.As(err, &ne) && ne.Reason == "slots_exceed_limit" && len(ne.Names) > 0 {
		if key, ok := strings.CutPrefix(ne.Names[0], r.Kind.LimitPrefix()); ok {
			// A run takes one slot of a tag: only a limit of 0 cannot give it.
			return ZeroLimitDetail(r.Kind, key)
		}
	}
	return err.Error()
}

// runLimits resolves the limits of r's tags, leaving out those whose slots
// an ancestor holds (sharing says which those are), and then r's own
// Limits, which are never shared and must exist (or match a template);
// slotsOn gives their slot counts.
func (m *Machine) runLimits(now time.Time, r *runState) (ls []*limitState, slotsOn map[uuid.UUID]int, sharingMsg string, err error) {
	names := make([]string, len(r.Tags))
	for i, t := range r.Tags {
		names[i] = r.Kind.LimitPrefix() + t
	}
	ls, err = m.resolve(now, names)
	if err != nil {
		return nil, nil, "", err
	}
	var sharing []string
	ls = slices.DeleteFunc(ls, func(l *limitState) bool {
		a := m.holdingAncestor(r, l)
		if a != nil {
			sharing = append(sharing, fmt.Sprintf("%s %q of run %s", r.Kind.Noun(), strings.TrimPrefix(l.Name, r.Kind.LimitPrefix()), a.ID))
		}
		return a != nil
	})
	msg := ""
	if len(sharing) > 0 {
		msg = "sharing the slot of " + strings.Join(sharing, ", ")
	}
	if len(r.Limits) == 0 {
		return ls, nil, msg, nil
	}
	extra, err := m.resolve(now, r.Limits)
	if err != nil {
		return nil, nil, "", err
	}
	if len(extra) < len(r.Limits) {
		for _, n := range r.Limits {
			if !slices.ContainsFunc(extra, func(l *limitState) bool { return l.Name == n }) {
				return nil, nil, "", fmt.Errorf("limit %q does not exist and no template matches it: %w", n, ErrLimitNotFound)
			}
		}
	}
	slotsOn = make(map[uuid.UUID]int, len(extra))
	for _, l := range extra {
		if !slices.Contains(ls, l) {
			ls = append(ls, l)
		}
		slotsOn[l.ID] = max(slotsOn[l.ID], r.Slots, 1)
	}
	return ls, slotsOn, msg, nil
}

// holdingAncestor returns the nearest ancestor of r that is Running with a
// slot of l, or nil.
func (m *Machine) holdingAncestor(r *runState, l *limitState) *runState {
	p := m.runs[r.ParentID]
	for depth := 0; p != nil && depth < maxRunDepth; depth++ {
		if p.State == Running && p.lease != nil {
			if i := slices.Index(p.lease.limits, l); i >= 0 && p.lease.Holds[i].Slots > 0 {
				return p
			}
		}
		if p.ParentID == uuid.Nil {
			break
		}
		p = m.runs[p.ParentID]
	}
	return nil
}

// started moves r to Running with lease ll.
func (m *Machine) started(now time.Time, r *runState, ll *leaseState) {
	r.lease, ll.run = ll, r
	r.LeaseID, r.Fence = ll.ID, ll.Fence
	m.transition(now, r, Running, r.startMsg)
	r.startMsg = ""
}

// finish moves r to the final state s, releasing its lease or taking it
// out of line.
func (m *Machine) finish(now time.Time, r *runState, s RunState, message string) {
	var work []*limitState
	if w := r.waiter; w != nil {
		r.waiter = nil
		m.removeWaiter(now, w)
		work = w.limits
	}
	if ll := r.lease; ll != nil {
		r.lease, ll.run = nil, nil
		m.events = append(m.events, Event{Kind: Released, Lease: ll.Lease, Limits: refs(ll.limits), Reason: "its run ended " + s.String()})
		work = append(work, m.dropLease(now, ll)...)
	}
	m.transition(now, r, s, message)
	m.pump(now, work)
}

// lostLease crashes the run that held ll, if one did: its lease ended
// without the run saying it was done.
func (m *Machine) lostLease(now time.Time, ll *leaseState, why string) {
	r := ll.run
	if r == nil {
		return
	}
	r.lease, ll.run = nil, nil
	m.transition(now, r, Crashed, why)
}

// HeartbeatRun says that a run's process is alive: a Running run's lease
// is renewed for its LeaseDuration, and it returns the new expiry. A run
// that is Pending or waiting has nothing to renew (the zero time). A run in
// a final state (a lease that expired is expired now, and its run Crashed)
// fails with ErrRunFinished.
func (m *Machine) HeartbeatRun(now time.Time, id uuid.UUID) (time.Time, error) {
	r := m.runs[id]
	if r == nil {
		return time.Time{}, ErrRunNotFound
	}
	if ll := r.lease; ll != nil {
		if l, err := m.Renew(now, ll.ID, 0); err == nil {
			return l.Expires, nil
		}
	}
	if r.State.IsFinal() {
		return time.Time{}, fmt.Errorf("run %s is %s: %w", r.ID, r.State, ErrRunFinished)
	}
	return time.Time{}, nil
}

// Run returns a run.
func (m *Machine) Run(id uuid.UUID) (Run, error) {
	r := m.runs[id]
	if r == nil {
		return Run{}, ErrRunNotFound
	}
	return r.snapshot(), nil
}

// RunFilter selects runs; zero fields select everything.
type RunFilter struct {
	Kind  RunKind
	State RunState
	// Tag selects runs with this tag (or label).
	Tag string
	// Ancestor selects the runs inside this run, at any depth.
	Ancestor uuid.UUID
}

func (m *Machine) matches(r *runState, f RunFilter) bool {
	switch {
	case f.Kind != 0 && r.Kind != f.Kind,
		f.State != 0 && r.State != f.State,
		f.Tag != "" && !slices.Contains(r.Tags, f.Tag):
		return false
	case f.Ancestor == uuid.Nil:
		return true
	}
	p := r.ParentID
	for depth := 0; p != uuid.Nil && depth < maxRunDepth; depth++ {
		if p == f.Ancestor {
			return true
		}
		a := m.runs[p]
		if a == nil {
			break
		}
		p = a.ParentID
	}
	return false
}

// Runs returns up to n runs that f selects, oldest first (by Created, then
// id), skipping the first offset.
func (m *Machine) Runs(f RunFilter, offset, n int) []Run {
	var sel []*runState
	for _, r := range m.runs {
		if m.matches(r, f) {
			sel = append(sel, r)
		}
	}
	slices.SortFunc(sel, func(a, b *runState) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	out := []Run{}
	for i := max(0, offset); i < len(sel) && len(out) < n; i++ {
		out = append(out, sel[i].snapshot())
	}
	return out
}

// RunCount returns the number of runs kept.
func (m *Machine) RunCount() int { return len(m.runs) }

// PruneRuns forgets the runs that reached a final state before before, and
// returns how many.
func (m *Machine) PruneRuns(before time.Time) int {
	n := 0
	for r := m.finished.first(); r != nil && r.Updated.Before(before); r = m.finished.first() {
		m.finished.pop()
		if m.runs[r.ID] == r {
			delete(m.runs, r.ID)
			m.changes = append(m.changes, Change{Kind: DeleteRun, ID: r.ID})
			n++
		}
	}
	return n
}

// RestoreRuns loads the durable runs into a Machine that Restore has
// loaded. A Running run gets its lease back (a run whose lease is gone is
// Crashed); runs that were AwaitingConcurrencySlot stand in line again in
// the order they first joined it, and those that fit now are granted.
func (m *Machine) RestoreRuns(now time.Time, runs []Run) {
	var waiting, done []*runState
	for _, run := range runs {
		r := &runState{Run: run}
		r.Tags, r.Limits, r.History = slices.Clone(run.Tags), slices.Clone(run.Limits), slices.Clone(run.History)
		m.runs[r.ID] = r
		m.runSeq = max(m.runSeq, r.WaitSeq)
		switch {
		case r.State == AwaitingConcurrencySlot:
			waiting = append(waiting, r)
		case r.State.IsFinal():
			done = append(done, r)
		}
	}
	slices.SortFunc(done, func(a, b *runState) int { return a.Updated.Compare(b.Updated) })
	for _, r := range done {
		m.finished.push(r)
	}
	for _, run := range runs {
		r := m.runs[run.ID]
		if r.State != Running {
			continue
		}
		if ll := m.leases[r.LeaseID]; ll != nil && ll.run == nil {
			r.lease, ll.run = ll, r
		} else {
			m.transition(now, r, Crashed, "its lease was lost in a restart")
		}
	}
	slices.SortFunc(waiting, func(a, b *runState) int {
		return cmp.Or(cmp.Compare(a.WaitSeq, b.WaitSeq), slices.Compare(a.ID[:], b.ID[:]))
	})
	for _, r := range waiting {
		if err := m.queueRun(now, r, "", false); err != nil {
			m.transition(now, r, Failed, err.Error())
		}
	}
}

// RunStates returns the number of runs in each state, indexed by state.
func (m *Machine) RunStates() [Cancelled + 1]int {
	var out [Cancelled + 1]int
	for _, r := range m.runs {
		out[r.State]++
	}
	return out
}

// RecentRuns returns up to n runs that f selects, newest first, skipping
// the first offset, and the number selected.
func (m *Machine) RecentRuns(f RunFilter, offset, n int) ([]Run, int) {
	var sel []*runState
	for _, r := range m.runs {
		if m.matches(r, f) {
			sel = append(sel, r)
		}
	}
	slices.SortFunc(sel, func(a, b *runState) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return slices.Compare(b.ID[:], a.ID[:])
	})
	out := []Run{}
	for i := max(0, offset); i < len(sel) && len(out) < n; i++ {
		out = append(out, sel[i].snapshot())
	}
	return out, len(sel)
}
