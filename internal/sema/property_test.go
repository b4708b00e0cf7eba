package sema

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

// The names the property test draws from. "res:*" is a template, so
// "res:1" and "res:2" may come to exist on first use; the others exist only
// once created.
var (
	propCreateNames  = []string{"a", "b", "c", "tag:d", "res:*", "res:1"}
	propAcquireNames = []string{"a", "b", "c", "tag:d", "res:1", "res:2", "res:*"}
)

// propWaiter is what the model knows of a queued request.
type propWaiter struct {
	req    Request
	limits []uuid.UUID // Outcome.Limits at the time it queued
}

// propState drives a Machine with random commands and checks it against a
// model after every one.
type propState struct {
	m     *Machine
	now   time.Time
	store *mapStore
	next  uint64

	waiters map[uint64]*propWaiter
	queues  map[uuid.UUID][]uint64 // per limit, the model's line
	fence   uint64
	tick    bool // the last command was a Tick

	// prevLeases is the store's leases before the current command.
	prevLeases map[uuid.UUID]Lease
	// tickets are the requests sent with a ticket, by ticket, and the
	// lease each was granted (if it was).
	tickets      map[string]Request
	ticketLeases map[string]uuid.UUID
}

func newPropState() *propState {
	return &propState{
		m:       New(DefaultConfig()),
		now:     t0,
		store:   newMapStore(),
		waiters: map[uint64]*propWaiter{},
		queues:  map[uuid.UUID][]uint64{},

		tickets:      map[string]Request{},
		ticketLeases: map[string]uuid.UUID{},
	}
}

func (s *propState) id(kind byte) uuid.UUID {
	s.next++
	return testID(kind, s.next)
}

// advance moves the clock by a random step, often zero.
func (s *propState) advance(t *rapid.T) {
	ms := rapid.SampledFrom([]int{0, 0, 0, 0, 1, 10, 100, 100, 500, 1000, 2500, 7000}).Draw(t, "advance_ms")
	s.now = s.now.Add(time.Duration(ms) * time.Millisecond)
}

func (s *propState) begin(t *rapid.T) {
	s.prevLeases = maps.Clone(s.store.leases)
	s.tick = false
	s.advance(t)
}

// existing returns the live limits, by name.
func (s *propState) existing() []*limitState { return slices.Clone(s.m.sorted) }

func (s *propState) pickLimit(t *rapid.T) *limitState {
	ls := s.existing()
	if len(ls) == 0 {
		t.Skip("no limits")
	}
	return rapid.SampledFrom(ls).Draw(t, "limit")
}

func (s *propState) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"":             s.check,
		"CreateLimit":  s.create,
		"UpdateLimit":  s.update,
		"DeleteLimit":  s.delete,
		"Acquire":      s.acquire,
		"CreateLimit2": s.create, // some commands are drawn more often
		"Acquire2":     s.acquire,
		"Acquire3":     s.acquire,
		"Release":      s.release,
		"Release2":     s.release,
		"Tick2":        s.doTick,
		"Renew":        s.renew,
		"CancelWaiter": s.cancel,
		"Tick":         s.doTick,
		"Decrement":    s.decrement,
		"CreateRun":    s.createRun,
		"CreateRun2":   s.createRun,
		"StartRun":     s.startRun,
		"StartRun2":    s.startRun,
		"FinishRun":    s.finishRun,
		"Heartbeat":    s.heartbeat,
		"Revoke":       s.revoke,
		"Retry":        s.retry,
		"Retry2":       s.retry,
		"Conflict":     s.conflict,
		"EnsureLimit":  s.ensure,
		"ResetTag":     s.resetTag,
		"IncrementTag": s.incrementTag,
		"DecrementTag": s.decrementTag,
	}
}

// propRunTags are the tags runs draw from: "tag:d" may exist as a limit,
// "tag:e" never does (an unlimited tag).
var propRunTags = []string{"d", "d", "e"}

func (s *propState) pickRun(t *rapid.T) *runState {
	ids := slices.SortedFunc(maps.Keys(s.m.runs), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	if len(ids) == 0 {
		t.Skip("no runs")
	}
	return s.m.runs[rapid.SampledFrom(ids).Draw(t, "run")]
}

func (s *propState) createRun(t *rapid.T) {
	s.begin(t)
	spec := RunSpec{
		ID:            s.id('r'),
		Kind:          KindTask,
		Tags:          rapid.SliceOfN(rapid.SampledFrom(propRunTags), 0, 2).Draw(t, "tags"),
		LeaseDuration: time.Duration(rapid.IntRange(1, 20).Draw(t, "lease_s")) * time.Second,
	}
	if rapid.IntRange(0, 3).Draw(t, "cancel_new") == 0 {
		spec.CollisionStrategy = CancelNew
	}
	if len(s.m.runs) > 0 && rapid.Bool().Draw(t, "nested") {
		spec.ParentID = s.pickRun(t).ID
	}
	if _, err := s.m.CreateRun(s.now, spec); err != nil {
		t.Fatalf("CreateRun: %v", err)
	}
}

func (s *propState) startRun(t *rapid.T) {
	s.begin(t)
	r := s.pickRun(t)
	before := r.State
	// Which limits of its tags a Running ancestor holds: the run must
	// never wait for those (no self-deadlock).
	shared := map[*limitState]bool{}
	for _, tag := range r.Tags {
		if l := s.m.byName[r.Kind.LimitPrefix()+tag]; l != nil && s.m.holdingAncestor(r, l) != nil {
			shared[l] = true
		}
	}
	got, err := s.m.SetRunState(s.now, r.ID, Running, "")
	var te *TransitionError
	switch {
	case errors.As(err, &te):
		if !te.From.IsFinal() {
			t.Fatalf("refused Running from %v: %v", te.From, err)
		}
		return
	case err != nil:
		t.Fatalf("SetRunState(Running): %v", err)
	}
	if before == Pending && got.State == AwaitingConcurrencySlot {
		w := r.waiter
		for _, l := range w.limits {
			if shared[l] {
				t.Fatalf("run waits for %s, whose slot its ancestor holds", l.Name)
			}
		}
		if s.waiters[w.id] != nil {
			t.Fatalf("waiter id %d reused", w.id)
		}
		pw := &propWaiter{req: w.req}
		for _, l := range w.limits {
			pw.limits = append(pw.limits, l.ID)
			s.queues[l.ID] = append(s.queues[l.ID], w.id)
		}
		s.waiters[w.id] = pw
	}
}

func (s *propState) finishRun(t *rapid.T) {
	s.begin(t)
	r := s.pickRun(t)
	var w uint64
	if r.waiter != nil {
		w = r.waiter.id
	}
	to := rapid.SampledFrom([]RunState{Completed, Completed, Failed, Crashed, Cancelled}).Draw(t, "state")
	_, err := s.m.SetRunState(s.now, r.ID, to, "")
	var te *TransitionError
	if err != nil && !(errors.As(err, &te) && te.From.IsFinal()) {
		t.Fatalf("SetRunState(%v): %v", to, err)
	}
	if w != 0 && r.waiter == nil && r.State.IsFinal() {
		s.dropWaiter(w)
	}
}

func (s *propState) heartbeat(t *rapid.T) {
	s.begin(t)
	r := s.pickRun(t)
	_, err := s.m.HeartbeatRun(s.now, r.ID)
	if r.State.IsFinal() != errors.Is(err, ErrRunFinished) || (err != nil && !errors.Is(err, ErrRunFinished)) {
		t.Fatalf("HeartbeatRun of a %v run: %v", r.State, err)
	}
}

func (s *propState) revoke(t *rapid.T) {
	s.begin(t)
	l := s.pickLimit(t)
	if _, err := s.m.RevokeLimitLeases(s.now, l.ID, "revoked"); err != nil {
		t.Fatalf("RevokeLimitLeases: %v", err)
	}
}

func (s *propState) ensure(t *rapid.T) {
	s.begin(t)
	e := LimitEnsure{
		Name:  rapid.SampledFrom(propCreateNames).Draw(t, "name"),
		Limit: rapid.IntRange(0, 4).Draw(t, "limit"),
	}
	if rapid.Bool().Draw(t, "set_active") {
		a := rapid.IntRange(0, 4).Draw(t, "active") > 0
		e.Active = &a
	}
	if rapid.IntRange(0, 2).Draw(t, "set_decay") == 0 {
		d := rapid.SampledFrom([]float64{0, 0.3, 1, 5}).Draw(t, "decay")
		e.SlotDecayPerSecond = &d
	}
	before := s.m.byName[e.Name]
	var was Limit
	if before != nil {
		was = before.Limit
	}
	l, created, err := s.m.EnsureLimit(s.now, s.id('L'), e)
	if err != nil {
		t.Fatalf("EnsureLimit(%q): %v", e.Name, err)
	}
	if created != (before == nil) || (before != nil && l.ID != was.ID) {
		t.Fatalf("EnsureLimit(%q): created %v, id %v; existed before: %v (%v)", e.Name, created, l.ID, before != nil, was.ID)
	}
	wantActive, wantDecay := true, 0.0
	if before != nil {
		wantActive, wantDecay = was.Active, was.SlotDecayPerSecond
	}
	if e.Active != nil {
		wantActive = *e.Active
	}
	if e.SlotDecayPerSecond != nil {
		wantDecay = *e.SlotDecayPerSecond
	}
	if l.Limit != e.Limit || l.Active != wantActive || l.SlotDecayPerSecond != wantDecay {
		t.Fatalf("EnsureLimit(%+v) = limit %d active %v decay %v, want %d %v %v", e, l.Limit, l.Active, l.SlotDecayPerSecond, e.Limit, wantActive, wantDecay)
	}
}

// propTagHolders are the holder ids of the v1 tag commands.
var propTagHolders = []string{"h1", "h2", "h3"}

// resetTag resets the tag limit "tag:d" with a slot override: every
// override holder gets a slot or is refused, and one that is refused could
// not have had one.
func (s *propState) resetTag(t *rapid.T) {
	s.begin(t)
	override := rapid.SliceOfN(rapid.SampledFrom(propTagHolders), 0, 4).Draw(t, "override")
	ids := make([]uuid.UUID, len(override))
	for i := range ids {
		ids[i] = s.id('l')
	}
	l := s.m.byName["tag:d"]
	res, err := s.m.ResetTagLimit(s.now, KindTask, TagLimitRef{Key: "d"}, override, ids, time.Hour)
	if l == nil {
		if !errors.Is(err, ErrLimitNotFound) {
			t.Fatalf("ResetTagLimit without the limit: %v, want ErrLimitNotFound", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("ResetTagLimit: %v", err)
	}
	var distinct []string
	for _, h := range override {
		if !slices.Contains(distinct, h) {
			distinct = append(distinct, h)
		}
	}
	got := append(slices.Clone(res.Granted), res.Refused...)
	slices.Sort(got)
	slices.Sort(distinct)
	if !slices.Equal(got, distinct) {
		t.Fatalf("ResetTagLimit(%v): granted %v refused %v", override, res.Granted, res.Refused)
	}
	if len(res.Granted) > 0 && l.Active && l.queue.n > 0 {
		t.Fatalf("override slots granted while %d wait on tag:d", l.queue.n)
	}
	if len(res.Refused) > 0 && !(l.Active && (l.queue.n > 0 || !fits(s.now, l, 1))) {
		t.Fatalf("override holders %v refused with room on tag:d", res.Refused)
	}
}

func (s *propState) incrementTag(t *rapid.T) {
	s.begin(t)
	keys := rapid.SliceOfN(rapid.SampledFrom([]string{"d", "e"}), 1, 2).Draw(t, "keys")
	holder := rapid.SampledFrom(propTagHolders).Draw(t, "holder")
	busy := false
	for _, k := range keys {
		if l := s.m.byName["tag:"+k]; l != nil && l.Active && l.queue.n > 0 {
			busy = true
		}
	}
	refs, err := s.m.IncrementTagLimits(s.now, KindTask, keys, holder, s.id('l'), time.Hour)
	var le *LockedError
	var ne *NeverError
	switch {
	case errors.As(err, &le):
		if le.RetryAfter != s.m.cfg.TagMaxWait {
			t.Fatalf("v1 increment refused with Retry-After %v, want %v", le.RetryAfter, s.m.cfg.TagMaxWait)
		}
	case errors.As(err, &ne):
	case err != nil:
		t.Fatalf("IncrementTagLimits: %v", err)
	case busy:
		t.Fatalf("v1 increment of %v granted ahead of waiters (%v)", keys, refs)
	}
}

func (s *propState) decrementTag(t *rapid.T) {
	s.begin(t)
	keys := rapid.SliceOfN(rapid.SampledFrom([]string{"d", "e"}), 1, 2).Draw(t, "keys")
	holder := rapid.SampledFrom(propTagHolders).Draw(t, "holder")
	if _, err := s.m.DecrementTagLimits(s.now, KindTask, keys, holder); err != nil {
		t.Fatalf("DecrementTagLimits: %v", err)
	}
	for _, ll := range s.m.leases {
		for _, l := range ll.limits {
			if ll.Holder.Type == "task_run" && ll.Holder.ID == holder && slices.Contains(keys, strings.TrimPrefix(l.Name, "tag:")) {
				t.Fatalf("lease %s of %s on %s survived its decrement", ll.ID, holder, l.Name)
			}
		}
	}
}

func (s *propState) create(t *rapid.T) {
	s.begin(t)
	spec := LimitSpec{
		Name:   rapid.SampledFrom(propCreateNames).Draw(t, "name"),
		Limit:  rapid.IntRange(0, 4).Draw(t, "limit"),
		Active: rapid.IntRange(0, 4).Draw(t, "active") > 0,
	}
	if rapid.Bool().Draw(t, "decays") {
		spec.SlotDecayPerSecond = rapid.SampledFrom([]float64{0.3, 1, 5}).Draw(t, "decay")
	}
	if rapid.IntRange(0, 3).Draw(t, "preset") == 0 {
		spec.ActiveSlots = rapid.IntRange(1, 3).Draw(t, "active_slots")
	}
	if isPattern(spec.Name) {
		// Short idle times, so that idle removal happens within a run.
		idle := time.Duration(rapid.SampledFrom([]int{0, 1, 1, 1, 5, 3600}).Draw(t, "idle_s")) * time.Second
		spec.Idle = &idle
	}
	taken := s.m.byName[spec.Name] != nil
	_, err := s.m.CreateLimit(s.now, s.id('L'), spec)
	if taken != errors.Is(err, ErrNameTaken) || (!taken && err != nil) {
		t.Fatalf("CreateLimit(%q) with taken=%v: %v", spec.Name, taken, err)
	}
}

func (s *propState) update(t *rapid.T) {
	s.begin(t)
	l := s.pickLimit(t)
	var p LimitPatch
	if rapid.Bool().Draw(t, "set_limit") {
		n := rapid.IntRange(0, 4).Draw(t, "limit")
		p.Limit = &n
	}
	if rapid.Bool().Draw(t, "set_active") {
		a := rapid.Bool().Draw(t, "active")
		p.Active = &a
	}
	if rapid.IntRange(0, 3).Draw(t, "set_decay") == 0 {
		d := rapid.SampledFrom([]float64{0, 0.3, 1, 5}).Draw(t, "decay")
		p.SlotDecayPerSecond = &d
	}
	if rapid.IntRange(0, 4).Draw(t, "set_active_slots") == 0 {
		n := rapid.IntRange(0, 3).Draw(t, "active_slots")
		p.ActiveSlots = &n
	}
	if rapid.IntRange(0, 5).Draw(t, "rename") == 0 {
		n := rapid.SampledFrom(propCreateNames).Draw(t, "new_name")
		p.Name = &n
	}
	_, err := s.m.UpdateLimit(s.now, l.ID, p)
	if p.Name != nil && s.m.byName[*p.Name] != nil && s.m.byName[*p.Name] != l {
		if !errors.Is(err, ErrNameTaken) {
			t.Fatalf("rename to a taken name: %v, want ErrNameTaken", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("UpdateLimit: %v", err)
	}
}

func (s *propState) delete(t *rapid.T) {
	s.begin(t)
	l := s.pickLimit(t)
	if err := s.m.DeleteLimit(s.now, l.ID); err != nil {
		t.Fatalf("DeleteLimit: %v", err)
	}
}

func (s *propState) acquire(t *rapid.T) {
	s.begin(t)
	// Mostly names that exist, so that requests meet.
	pool := slices.Clone(propAcquireNames)
	for _, l := range s.existing() {
		if !l.IsTemplate() {
			pool = append(pool, l.Name, l.Name, l.Name)
		}
	}
	req := Request{
		Names:         rapid.SliceOfN(rapid.SampledFrom(pool), 1, 3).Draw(t, "names"),
		Slots:         rapid.IntRange(1, 3).Draw(t, "slots"),
		LeaseID:       s.id('l'),
		LeaseDuration: time.Duration(rapid.IntRange(1, 20).Draw(t, "lease_s")) * time.Second,
		Wait:          rapid.IntRange(0, 3).Draw(t, "wait") > 0,
	}
	if rapid.IntRange(0, 2).Draw(t, "rate") == 0 {
		req.Mode = ModeRateLimit
		req.NoLease = rapid.Bool().Draw(t, "no_lease")
	} else {
		req.Anonymous = rapid.IntRange(0, 2).Draw(t, "anonymous") == 0
	}
	if rapid.Bool().Draw(t, "ticket") {
		req.Ticket = "t" + s.id('t').String()[24:]
		s.tickets[req.Ticket] = req
	}
	s.send(t, req)
}

// send sends a new request and checks the answer against the model.
func (s *propState) send(t *rapid.T, req Request) {
	// Which named limits already had someone waiting.
	busy := false
	for _, n := range req.Names {
		if l := s.m.byName[n]; l != nil && l.Active && l.queue.n > 0 {
			busy = true
		}
	}
	o, err := s.m.Acquire(s.now, req)
	named := func(n string) *limitState {
		l := s.m.byName[n]
		if l == nil {
			t.Fatalf("error names %q, which does not exist", n)
		}
		return l
	}
	var ne *NeverError
	var le *LockedError
	switch {
	case errors.As(err, &ne):
		for _, n := range ne.Names {
			switch ne.Reason {
			case "template":
				if !isPattern(n) {
					t.Fatalf("template error for %q", n)
				}
			case "slots_exceed_limit":
				if l := named(n); !l.Active || l.Limit.Limit >= req.Slots {
					t.Fatalf("slots_exceed_limit for %q: active %v limit %d slots %d", n, l.Active, l.Limit.Limit, req.Slots)
				}
			case "no_decay":
				if l := named(n); !l.Active || l.SlotDecayPerSecond != 0 || req.Mode != ModeRateLimit {
					t.Fatalf("no_decay for %q: active %v decay %v", n, l.Active, l.SlotDecayPerSecond)
				}
			default:
				t.Fatalf("unknown reason %q", ne.Reason)
			}
		}
	case errors.As(err, &le):
		if req.Wait {
			t.Fatalf("a waiting request was refused: %v", err)
		}
		if !s.blocked(req, 0) {
			t.Fatalf("refused with room on every limit: %v", err)
		}
	case err != nil:
		t.Fatalf("Acquire: %v", err)
	case o.Granted:
		if busy {
			t.Fatalf("granted %v ahead of waiters", req.Names)
		}
		s.checkHolds(t, o.Lease, req, refIDs(o.Limits))
		if wantT := req.Ticket; o.Resumed || (!req.NoLease && o.Lease.Ticket != wantT) {
			t.Fatalf("new grant: Resumed %v, ticket %q, want false, %q", o.Resumed, o.Lease.Ticket, wantT)
		}
		if req.Ticket != "" && !req.NoLease {
			s.ticketLeases[req.Ticket] = o.Lease.ID
		}
	default:
		if !req.Wait {
			t.Fatalf("queued a request that did not ask to wait")
		}
		if !s.blocked(req, 1) {
			t.Fatalf("queued %v with room on every limit and nobody ahead", req.Names)
		}
		if s.waiters[o.WaiterID] != nil {
			t.Fatalf("waiter id %d reused", o.WaiterID)
		}
		ids := refIDs(o.Limits)
		s.waiters[o.WaiterID] = &propWaiter{req: req, limits: ids}
		for _, id := range ids {
			s.queues[id] = append(s.queues[id], o.WaiterID)
		}
	}
}

// blocked reports whether some active limit of req has other waiters than
// the last mine, or no room.
func (s *propState) blocked(req Request, mine int) bool {
	for _, n := range req.Names {
		l := s.m.byName[n]
		if l == nil || !l.Active {
			continue
		}
		if l.queue.n > mine || !fits(s.now, l, req.Slots) {
			return true
		}
	}
	return false
}

func refIDs(rs []LimitRef) []uuid.UUID {
	out := []uuid.UUID{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// checkHolds checks that a concurrency lease holds every one of limits that
// still exists (all or nothing), req.Slots of the active ones.
func (s *propState) checkHolds(t *rapid.T, l Lease, req Request, limits []uuid.UUID) {
	if req.Mode == ModeRateLimit {
		if len(l.Holds) != 0 {
			t.Fatalf("rate-limit lease with holds %v", l.Holds)
		}
		return
	}
	want := []Hold{}
	for _, id := range limits {
		ls := s.m.byID[id]
		if ls == nil {
			continue
		}
		h := Hold{LimitID: id}
		if ls.Active {
			h.Slots = req.Slots
		}
		want = append(want, h)
	}
	got := append([]Hold{}, l.Holds...)
	if !slices.Equal(want, got) {
		t.Fatalf("lease %v holds %v, want %v", l.ID, got, want)
	}
}

func (s *propState) pickLease(t *rapid.T) uuid.UUID {
	ids := slices.SortedFunc(maps.Keys(s.store.leases), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	ids = append(ids, testID('x', 1)) // never granted
	return rapid.SampledFrom(ids).Draw(t, "lease")
}

func (s *propState) release(t *rapid.T) {
	s.begin(t)
	id := s.pickLease(t)
	l, known := s.store.leases[id]
	got := s.m.Release(s.now, id)
	if want := known && s.now.Before(l.Expires); got != want {
		t.Fatalf("Release = %v, want %v (known %v, expires %v)", got, want, known, l.Expires.Sub(s.now))
	}
}

func (s *propState) renew(t *rapid.T) {
	s.begin(t)
	id := s.pickLease(t)
	l, known := s.store.leases[id]
	d := time.Duration(rapid.IntRange(0, 10).Draw(t, "renew_s")) * time.Second
	got, err := s.m.Renew(s.now, id, d)
	if !known || !s.now.Before(l.Expires) {
		if !errors.Is(err, ErrLeaseNotFound) {
			t.Fatalf("Renew of a dead lease: %v, want ErrLeaseNotFound", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if d == 0 {
		d = l.Duration
	}
	if !got.Expires.Equal(s.now.Add(d)) {
		t.Fatalf("renewed to %v, want now+%v", got.Expires.Sub(s.now), d)
	}
}

// ticketOf picks a ticket sent before.
func (s *propState) ticketOf(t *rapid.T) string {
	ts := slices.Sorted(maps.Keys(s.tickets))
	if len(ts) == 0 {
		t.Skip("no tickets")
	}
	return rapid.SampledFrom(ts).Draw(t, "ticket")
}

// retry sends a request again with its ticket, as a client does after a
// lost answer or a dropped connection: a live lease of the ticket is
// given back, a waiter keeps its place in every line, and anything else
// is a new request.
func (s *propState) retry(t *rapid.T) {
	s.begin(t)
	tk := s.ticketOf(t)
	req := s.tickets[tk]
	req.LeaseID = s.id('l')
	var waiting uint64
	for id, w := range s.waiters {
		if w.req.Ticket == tk {
			waiting = id
		}
	}
	lid, granted := s.ticketLeases[tk]
	stored, live := s.store.leases[lid]
	live = live && granted && s.now.Before(stored.Expires)
	if !live && waiting == 0 {
		delete(s.ticketLeases, tk)
		s.send(t, req)
		return
	}
	if ll := s.m.leases[lid]; live && ll != nil {
		for _, l := range ll.limits {
			if !slices.Contains(req.Names, l.Name) {
				// Renamed since: the retry names other limits.
				if _, err := s.m.Acquire(s.now, req); !errors.Is(err, ErrTicketConflict) {
					t.Fatalf("retry %s after %s was renamed: %v, want ErrTicketConflict", tk, l.Name, err)
				}
				return
			}
		}
	}
	o, err := s.m.Acquire(s.now, req)
	if err != nil {
		t.Fatalf("retry %s: %v", tk, err)
	}
	if !o.Resumed {
		t.Fatalf("retry %s: not resumed", tk)
	}
	if live {
		if !o.Granted || o.Lease.ID != lid || o.Lease.Fence != stored.Fence {
			t.Fatalf("retry %s: got lease %v (fence %d, granted %v), want %v (fence %d)", tk, o.Lease.ID, o.Lease.Fence, o.Granted, lid, stored.Fence)
		}
		return
	}
	if o.Granted || o.WaiterID != waiting {
		t.Fatalf("retry %s: got waiter %d (granted %v), want waiter %d", tk, o.WaiterID, o.Granted, waiting)
	}
	// The lines are checked against the model, unchanged, after this.
}

// conflict sends another request with a ticket in use: it is refused and
// changes nothing.
func (s *propState) conflict(t *rapid.T) {
	s.begin(t)
	tk := s.ticketOf(t)
	req := s.tickets[tk]
	req.Slots++
	req.LeaseID = s.id('l')
	inUse := s.m.ticketLeases[tk] != nil || s.m.ticketWaiters[tk] != nil
	if ll := s.m.ticketLeases[tk]; ll != nil && !s.now.Before(ll.Expires) {
		inUse = false // expired by this very request
	}
	if !inUse {
		t.Skip("ticket not in use")
	}
	if _, err := s.m.Acquire(s.now, req); !errors.Is(err, ErrTicketConflict) {
		t.Fatalf("ticket %s for other slots: got %v, want ErrTicketConflict", tk, err)
	}
}

func (s *propState) cancel(t *rapid.T) {
	s.begin(t)
	ids := slices.Sorted(maps.Keys(s.waiters))
	ids = append(ids, 1<<40)
	id := rapid.SampledFrom(ids).Draw(t, "waiter")
	_, want := s.waiters[id]
	if w := s.m.waiters[id]; w != nil && w.run != nil {
		want = false // a run leaves the line by changing state
	}
	if got := s.m.CancelWaiter(s.now, id); got != want {
		t.Fatalf("CancelWaiter(%d) = %v, want %v", id, got, want)
	}
	if want {
		s.dropWaiter(id)
	}
}

func (s *propState) doTick(t *rapid.T) {
	s.begin(t)
	if d, ok := s.m.NextDeadline(); ok && rapid.Bool().Draw(t, "to_deadline") {
		if d.Before(s.now) {
			d = s.now
		}
		s.now = d
	}
	s.m.Tick(s.now)
	s.tick = true
}

func (s *propState) decrement(t *rapid.T) {
	s.begin(t)
	ns := rapid.SliceOfN(rapid.SampledFrom(propAcquireNames), 1, 2).Draw(t, "names")
	slots := rapid.IntRange(1, 3).Draw(t, "slots")
	occ := rapid.SampledFrom([]float64{0, 0.5, 4}).Draw(t, "occupancy")
	if _, err := s.m.Decrement(s.now, ns, slots, occ); err != nil {
		t.Fatalf("Decrement: %v", err)
	}
}

func (s *propState) dropWaiter(id uint64) {
	w := s.waiters[id]
	if w == nil {
		return
	}
	delete(s.waiters, id)
	for _, l := range w.limits {
		s.queues[l] = slices.DeleteFunc(s.queues[l], func(x uint64) bool { return x == id })
	}
}

// check runs after every command.
func (s *propState) check(t *rapid.T) {
	s.m.FlushSoft()
	changes, events := s.m.Drain()
	s.store.apply(changes)

	involved := map[*limitState]bool{}
	for _, e := range events {
		switch e.Kind {
		case Granted:
			// (e) fencing tokens grow on every kept lease; a grant without
			// a lease takes none.
			if e.Lease.Fence == 0 {
				if _, kept := s.m.leases[e.Lease.ID]; kept {
					t.Fatalf("kept lease %s granted without a fencing token", e.Lease.ID)
				}
			} else if e.Lease.Fence <= s.fence {
				t.Fatalf("fence %d after %d", e.Lease.Fence, s.fence)
			} else {
				s.fence = e.Lease.Fence
			}
			for _, r := range e.Limits {
				if l := s.m.byID[r.ID]; l != nil && l.Active {
					involved[l] = true
				}
			}
			if e.WaiterID == 0 {
				continue
			}
			w := s.waiters[e.WaiterID]
			if w == nil {
				t.Fatalf("granted unknown waiter %d", e.WaiterID)
			}
			// (b) first in, first out on every active limit.
			for _, id := range w.limits {
				if l := s.m.byID[id]; l != nil && l.Active && s.queues[id][0] != e.WaiterID {
					t.Fatalf("waiter %d granted on %s ahead of %v", e.WaiterID, l.Name, s.queues[id])
				}
			}
			// (c) all or nothing.
			s.checkHolds(t, e.Lease, w.req, w.limits)
			if !w.req.NoLease && e.Lease.Ticket != w.req.Ticket {
				t.Fatalf("waiter %d with ticket %q granted a lease with ticket %q", e.WaiterID, w.req.Ticket, e.Lease.Ticket)
			}
			if w.req.Ticket != "" && !w.req.NoLease {
				s.ticketLeases[w.req.Ticket] = e.Lease.ID
			}
			for _, r := range e.Limits {
				if s.m.byID[r.ID] == nil {
					t.Fatalf("waiter %d granted with deleted limit %s", e.WaiterID, r.Name)
				}
			}
			s.dropWaiter(e.WaiterID)
		case WaiterFailed:
			var ne *NeverError
			if s.waiters[e.WaiterID] == nil || !errors.As(e.Err, &ne) {
				t.Fatalf("WaiterFailed %d: %v", e.WaiterID, e.Err)
			}
			s.dropWaiter(e.WaiterID)
		case Expired:
			// (d) only leases whose time is up expire.
			if e.Lease.Expires.After(s.now) {
				t.Fatalf("lease %v expired %v early", e.Lease.ID, e.Lease.Expires.Sub(s.now))
			}
			if p, ok := s.prevLeases[e.Lease.ID]; ok && p.Expires.After(s.now) {
				t.Fatalf("lease %v renewed to %v expired at %v", e.Lease.ID, p.Expires, s.now)
			}
		case LimitChanged:
			if e.Deleted {
				id := e.Limits[0].ID
				// (g) idle removal never takes a limit that was held or
				// waited on.
				if e.Reason == "idle" {
					if len(s.queues[id]) > 0 {
						t.Fatalf("%s removed as idle with waiters %v", e.Limits[0].Name, s.queues[id])
					}
					for _, l := range s.prevLeases {
						for _, h := range l.Holds {
							if h.LimitID == id {
								t.Fatalf("%s removed as idle while lease %s held it", e.Limits[0].Name, l.ID)
							}
						}
					}
				}
				// A template name deleted and used again gets the same id,
				// but waiters queued before wait only for the old one.
				delete(s.queues, id)
				for _, w := range s.waiters {
					w.limits = slices.DeleteFunc(w.limits, func(x uuid.UUID) bool { return x == id })
				}
			}
		}
	}

	// Held slots, from the durable leases.
	held := map[uuid.UUID]int{}
	for _, l := range s.store.leases {
		for _, h := range l.Holds {
			held[h.LimitID] += h.Slots
		}
	}
	for _, l := range s.existing() {
		if l.held != held[l.ID] {
			t.Fatalf("%s: held %d, the stored leases hold %d", l.Name, l.held, held[l.ID])
		}
		// (a) never over-granted at a grant.
		if involved[l] && float64(l.held)+level(s.now, l) > float64(l.Limit.Limit)+epsilon {
			t.Fatalf("%s over-granted: held %d level %v limit %d", l.Name, l.held, level(s.now, l), l.Limit.Limit)
		}
		// The machine's line is the model's.
		var line []uint64
		for n := l.queue.head; n != nil; n = n.next {
			line = append(line, n.w.id)
		}
		if !slices.Equal(line, s.queues[l.ID]) {
			t.Fatalf("%s: line %v, want %v", l.Name, line, s.queues[l.ID])
		}
	}
	checkRuns(t, s.m)
	if n, w := s.m.Counts(); n != len(s.store.leases) || w != len(s.waiters) {
		t.Fatalf("Counts = %d leases %d waiters, want %d %d", n, w, len(s.store.leases), len(s.waiters))
	}

	if s.tick {
		// (d) every lease whose time is up is gone.
		for _, l := range s.store.leases {
			if !s.now.Before(l.Expires) {
				t.Fatalf("lease %v outlived its expiry by %v", l.ID, s.now.Sub(l.Expires))
			}
		}
		s.checkLiveness(t, true)
	} else {
		s.checkLiveness(t, false)
	}

	// (g) a restart restores the same limits, leases and runs, and the
	// runs it puts back in line are consistent.
	if d := diffRestored(s.m, s.store, s.now); d != "" {
		t.Fatal(d)
	}
	restored := s.store.restore(s.m.cfg, s.now)
	checkRuns(t, restored)
	checkTicketLines(t, s.m, restored)
}

// ticketLine is the tickets of the waiters in l's line, in order.
func ticketLine(l *limitState) []string {
	var out []string
	for n := l.queue.head; n != nil; n = n.next {
		if t := n.w.req.Ticket; t != "" {
			out = append(out, t)
		}
	}
	return out
}

// checkTicketLines checks that a restart keeps the waiters with a ticket in
// their order: on every active limit the restored line of tickets is the
// live one less those granted at once, which were at its head (and plus
// those that named the limit before it existed, less those it refuses now).
func checkTicketLines(t *rapid.T, live, restored *Machine) {
	for _, l := range live.sorted {
		if !l.Active {
			continue
		}
		r := restored.byID[l.ID]
		// A waiter that cannot stand in line again (a limit it names now
		// refuses it) is gone after a restart.
		want := slices.DeleteFunc(ticketLine(l), func(t string) bool {
			return restored.ticketWaiters[t] == nil && restored.ticketLeases[t] == nil
		})
		// A waiter that named this limit before it existed waits for it
		// after a restart, which names its limits again.
		got := slices.DeleteFunc(ticketLine(r), func(t string) bool { return !slices.Contains(want, t) })
		if len(got) > len(want) || !slices.Equal(got, want[len(want)-len(got):]) {
			t.Fatalf("%s: restored line of tickets %v, live %v", l.Name, got, want)
		}
	}
}

// checkRuns checks that runs and their leases and waiters agree: a run is
// Running exactly when it holds a live lease of its own, and waiting
// exactly when it stands in line.
func checkRuns(t *rapid.T, m *Machine) {
	for _, r := range m.runs {
		switch r.State {
		case Running:
			if r.lease == nil || r.lease.run != r || m.leases[r.lease.ID] != r.lease || r.waiter != nil {
				t.Fatalf("Running run %s without its lease", r.ID)
			}
		case AwaitingConcurrencySlot:
			if r.waiter == nil || r.waiter.run != r || m.waiters[r.waiter.id] != r.waiter || r.lease != nil {
				t.Fatalf("waiting run %s not in line", r.ID)
			}
		default:
			if r.lease != nil || r.waiter != nil {
				t.Fatalf("%v run %s holds a lease or waits", r.State, r.ID)
			}
		}
	}
	for _, ll := range m.leases {
		if ll.run != nil && (ll.run.lease != ll || m.runs[ll.run.ID] != ll.run) {
			t.Fatalf("lease %s names a run that does not hold it", ll.ID)
		}
	}
	for _, w := range m.waiters {
		if w.run != nil && w.run.waiter != w {
			t.Fatalf("waiter %d names a run that does not wait", w.id)
		}
	}
}

// checkLiveness checks (f): no waiter is first in line on all its active
// limits with room on every one of them. After a Tick every waiter is
// checked, its room judged a millisecond ago so that a decay wake due a
// moment from now is not counted; after other commands, which need not
// notice what decay alone has freed, only waiters on limits without decay.
func (s *propState) checkLiveness(t *rapid.T, tick bool) {
	past := s.now.Add(-time.Millisecond)
	idle := true
	for _, l := range s.existing() {
		if l.Active && (l.held > 0 || level(past, l) > epsilon) {
			idle = false
		}
	}
	for _, w := range s.m.waiters {
		ready := true
		for i, l := range w.limits {
			if l.deleted || !l.Active {
				continue
			}
			if !tick && l.SlotDecayPerSecond > 0 {
				ready = false
			}
			if l.queue.head != &w.nodes[i] || !fits(past, l, w.req.Slots) {
				ready = false
			}
		}
		if ready {
			t.Fatalf("waiter %d (%v, %d slots) is stuck", w.id, w.req.Names, w.req.Slots)
		}
	}
	if tick && idle && len(s.m.waiters) > 0 {
		t.Fatalf("%d waiters left with nothing held", len(s.m.waiters))
	}
}

func TestMachineProperties(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		s := newPropState()
		t.Repeat(s.actions())
	})
}
