package allot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// This file runs functions as task runs and flow runs of the server's runs
// API: the server, not the client, admits a run when every limited tag
// (task) or label (flow) has a slot, shares a slot with the run's
// ancestors, and crashes a run whose heartbeats stop.

// DefaultRunLeaseDuration is how long a running run may go without a
// heartbeat before the server marks it Crashed, when RunLeaseDuration does
// not say otherwise; it is the server's default.
const DefaultRunLeaseDuration = 60 * time.Second

// maxStateMessage is the most bytes of a state message a run keeps (the
// server's MaxRunMessage; a test checks they agree). The server cuts a
// longer one itself; the SDK cuts it the same way before sending, so that
// no error, however long, makes the request too large to end the run.
const maxStateMessage = 2048

// The kinds of runs and the collision strategy of CancelNew, as the server
// names them (a test checks them against the server's).
const (
	kindTask           = "task"
	kindFlow           = "flow"
	collisionCancelNew = "cancel_new"
)

// Run states, as the server names them (a test checks them against the
// server's).
const (
	StatePending                 = "Pending"
	StateAwaitingConcurrencySlot = "AwaitingConcurrencySlot"
	StateRunning                 = "Running"
	StateCompleted               = "Completed"
	StateFailed                  = "Failed"
	StateCrashed                 = "Crashed"
	StateCancelled               = "Cancelled"
)

// ErrRunNotStarted matches a run that reached a final state before it
// could run: Cancelled (CancelNew and its limits were full) or Failed (a
// limit of 0). Such an error is a *RunError.
var ErrRunNotStarted = errors.New("run not started")

// RunError is a run that ended before its function ran. It matches
// ErrRunNotStarted.
type RunError struct {
	// RunID is the run's id.
	RunID string
	// State is the final state the run ended in.
	State string
	// Message is the server's reason, from the run's state history.
	Message string
}

func (e *RunError) Error() string {
	s := fmt.Sprintf("run %s not started: %s", e.RunID, e.State)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is ErrRunNotStarted.
func (e *RunError) Is(target error) bool { return target == ErrRunNotStarted }

// RunOption tunes one run: RunTask or RunFlow.
type RunOption func(*runSettings)

type runSettings struct {
	tags          []string
	cancelNew     bool
	leaseDuration time.Duration
	created       func(id string)
	limits        []string
	slots         int
}

// RunTags adds tags to the run, beyond those of its context (WithTags).
// For a flow run they are its labels.
func RunTags(tags ...string) RunOption {
	tags = slices.Clone(tags)
	return func(s *runSettings) { s.tags = append(s.tags, tags...) }
}

// RunLimits makes the run take slots slots of each of the named global
// limits (or the limits their templates make) together with its tags'
// limits, all at once in the same wait: the run is Running only when all of
// them have room, and holds none of them until then. Unlike a tag without
// a limit, a name that does not exist is an error matching
// ErrLimitNotFound, and these slots are not shared with ancestor runs.
// Called again, it adds names; the last slots wins.
func RunLimits(slots int, names ...string) RunOption {
	names = slices.Clone(names)
	return func(s *runSettings) {
		s.limits = append(s.limits, names...)
		s.slots = slots
	}
}

// CancelNew makes a run whose limits are full end Cancelled at once
// (collision strategy "cancel_new") instead of waiting in line; RunTask
// and RunFlow then fail with a *RunError matching ErrRunNotStarted.
func CancelNew() RunOption { return func(s *runSettings) { s.cancelNew = true } }

// RunLeaseDuration sets how long the run may go without a heartbeat before
// the server marks it Crashed and gives its slots to the next run (default
// DefaultRunLeaseDuration; the server accepts 1 s to 24 h). The run
// heartbeats at a third of it.
func RunLeaseDuration(d time.Duration) RunOption {
	return func(s *runSettings) { s.leaseDuration = d }
}

// RunCreated calls fn with the run's id as soon as the server has created
// the run, before it waits for its slots: to follow a run that waits (for
// example to show where it stands in its tags' lines). fn must not block.
func RunCreated(fn func(id string)) RunOption {
	return func(s *runSettings) { s.created = fn }
}

// tagsKey is the context key of the tags WithTags and WithoutTags set.
type tagsKey struct{}

// runKey is the context key of the id of the run whose function ctx is.
type runKey struct{}

// WithTags returns a copy of ctx with tags added to those it carries, as
// Prefect's `with tags(...)`: runs started with the context, or any
// context derived from it, carry them.
func WithTags(ctx context.Context, tags ...string) context.Context {
	return context.WithValue(ctx, tagsKey{}, normalTags(append(TagsFrom(ctx), tags...)))
}

// WithoutTags returns a copy of ctx without tags, which it may have
// inherited from WithTags; runs started with it do not carry them.
func WithoutTags(ctx context.Context, tags ...string) context.Context {
	kept := slices.DeleteFunc(TagsFrom(ctx), func(t string) bool { return slices.Contains(tags, t) })
	return context.WithValue(ctx, tagsKey{}, kept)
}

// TagsFrom returns the tags ctx carries, sorted and without duplicates.
func TagsFrom(ctx context.Context) []string {
	tags, _ := ctx.Value(tagsKey{}).([]string)
	return slices.Clone(tags)
}

// normalTags sorts tags and drops duplicates and empty ones.
func normalTags(tags []string) []string {
	tags = slices.DeleteFunc(tags, func(t string) bool { return t == "" })
	slices.Sort(tags)
	return slices.Compact(tags)
}

// RunFrom returns the id of the run whose function ctx was given to (by
// RunTask or RunFlow), if any.
func RunFrom(ctx context.Context) (id string, ok bool) {
	id, ok = ctx.Value(runKey{}).(string)
	return id, ok
}

// run is a run as the server reports it.
type run struct {
	ID           string       `json:"id"`
	State        string       `json:"state"`
	LeaseID      string       `json:"lease_id"`
	StateHistory []stateEntry `json:"state_history"`
}

type stateEntry struct {
	State   string `json:"state"`
	Message string `json:"message"`
}

// message is the message of the run's latest state.
func (r *run) message() string {
	if n := len(r.StateHistory); n > 0 {
		return r.StateHistory[n-1].Message
	}
	return ""
}

// final reports whether state is never left.
func final(state string) bool {
	switch state {
	case StateCompleted, StateFailed, StateCrashed, StateCancelled:
		return true
	}
	return false
}

type runCreateBody struct {
	ID                string   `json:"id"`
	Kind              string   `json:"kind"`
	Name              string   `json:"name"`
	Tags              []string `json:"tags"`
	Limits            []string `json:"limits,omitempty"`
	Slots             int      `json:"slots,omitempty"`
	ParentID          string   `json:"parent_id,omitempty"`
	CollisionStrategy string   `json:"collision_strategy,omitempty"`
	LeaseDuration     float64  `json:"lease_duration"`
}

type setStateBody struct {
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

type waitBody struct {
	State          string  `json:"state"`
	TimeoutSeconds float64 `json:"timeout_seconds"`
}

func runPath(id string) string { return "/runs/" + url.PathEscape(id) }

// RunTask runs fn as a task run named name. The run carries the tags of
// ctx (WithTags) and of RunTags, and is the child of the run ctx belongs to
// (RunFrom), so RunTask inside another run's function nests: the child
// shares the slots its ancestors hold instead of waiting for them.
//
// The server admits the run when every one of its limited tags has a free
// slot, all at once; until then RunTask waits in line (without polling), or
// with CancelNew gives up at once. A run that ends before it runs is a
// *RunError matching ErrRunNotStarted. If ctx is done while it waits, the
// run is Cancelled and RunTask returns ctx's cause.
//
// While fn runs, RunTask heartbeats every third of the run's lease
// duration and watches the run's lease. If the server says the run is over
// (its lease expired, or a reset revoked its slots: the watch hears it
// within about a second), fn's context is cancelled with a cause matching
// ErrLeaseLost, and RunTask returns fn's error joined with one matching
// ErrLeaseLost. Otherwise the run ends Completed if fn returns
// nil, Cancelled if it fails after ctx is done, and Failed, with the
// error's text, otherwise; RunTask returns fn's error. If fn panics, the
// run ends Crashed with the panic's text and the panic goes on. A text
// over 2,048 bytes is kept cut between characters, ending in "…": however
// long the error, the run ends.
func (c *Client) RunTask(ctx context.Context, name string, fn func(ctx context.Context) error, opts ...RunOption) error {
	return c.runFunc(ctx, kindTask, name, fn, opts)
}

// RunFlow runs fn as a flow run named name: RunTask for a flow, whose tags
// are labels, limited by label limits.
func (c *Client) RunFlow(ctx context.Context, name string, fn func(ctx context.Context) error, opts ...RunOption) error {
	return c.runFunc(ctx, kindFlow, name, fn, opts)
}

func (c *Client) runFunc(ctx context.Context, kind, name string, fn func(ctx context.Context) error, opts []RunOption) error {
	s := runSettings{leaseDuration: DefaultRunLeaseDuration}
	for _, o := range opts {
		o(&s)
	}
	op := fmt.Sprintf("%s run %q", kind, name)
	if s.leaseDuration <= 0 {
		return fmt.Errorf("%s: %w: RunLeaseDuration(%s) must be positive", op, ErrInvalid, s.leaseDuration)
	}
	if len(s.limits) > 0 && s.slots < 1 {
		return fmt.Errorf("%s: %w: RunLimits(%d, …) must take at least 1 slot", op, ErrInvalid, s.slots)
	}
	// The id is chosen here, so that a creation retried after a lost
	// answer names the same run (the server answers it as it is).
	body := runCreateBody{ID: newRunID(), Kind: kind, Name: name, Tags: normalTags(append(TagsFrom(ctx), s.tags...)),
		Limits: s.limits, LeaseDuration: s.leaseDuration.Seconds()}
	if len(s.limits) > 0 {
		body.Slots = s.slots
	}
	body.ParentID, _ = RunFrom(ctx)
	if s.cancelNew {
		body.CollisionStrategy = collisionCancelNew
	}
	var r run
	err := c.do(ctx, request{method: http.MethodPost, path: "/runs/", body: jsonBody(body),
		accept: []int{http.StatusCreated, http.StatusOK}}, &r)
	if err != nil {
		return fmt.Errorf("%s: create: %w", op, err)
	}
	op = fmt.Sprintf("%s run %s", kind, r.ID)
	if s.created != nil {
		s.created(r.ID)
	}
	if err := c.start(ctx, &r); err != nil {
		if !final(r.State) {
			// Leave the line rather than be granted slots nobody uses.
			c.finishRun(ctx, r.ID, StateCancelled, err.Error())
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if r.State != StateRunning {
		return &RunError{RunID: r.ID, State: r.State, Message: r.message()}
	}

	fctx, cancel := context.WithCancelCause(context.WithValue(ctx, runKey{}, r.ID))
	defer cancel(nil)
	hctx, stop := context.WithCancel(context.Background())
	beating, watching := make(chan error, 1), make(chan error, 1)
	go func() { beating <- c.heartbeat(hctx, r.ID, s.leaseDuration/3, cancel) }()
	go func() { watching <- c.watchRun(hctx, r.ID, r.LeaseID, cancel) }()
	// lost stops the heartbeats and the watch and says whether either
	// found the run over.
	lost := sync.OnceValue(func() error {
		stop()
		herr, werr := <-beating, <-watching
		if werr != nil {
			return werr
		}
		return herr
	})

	returned := false
	defer func() {
		if returned {
			return
		}
		p := recover()
		if lost() == nil {
			msg := "the function exited without returning"
			if p != nil {
				msg = fmt.Sprintf("panic: %v", p)
			}
			c.finishRun(ctx, r.ID, StateCrashed, msg)
		}
		if p != nil {
			panic(p)
		}
	}()
	fnErr := fn(fctx)
	returned = true

	if lostErr := lost(); lostErr != nil {
		if errors.Is(fnErr, context.Canceled) || errors.Is(fnErr, ErrLeaseLost) {
			fnErr = nil
		}
		return errors.Join(fnErr, fmt.Errorf("%s: %w", op, lostErr))
	}
	state, msg := StateCompleted, ""
	switch {
	case fnErr == nil:
	case ctx.Err() != nil:
		state, msg = StateCancelled, fnErr.Error()
	default:
		state, msg = StateFailed, fnErr.Error()
	}
	if serr := c.finishRun(ctx, r.ID, state, msg); serr != nil {
		if errors.Is(serr, ErrConflict) {
			// The server ended the run first (a reset revoked its slot,
			// its lease expired): the run was lost before fn returned.
			return errors.Join(fnErr, fmt.Errorf("%s: %w: the run was already over on the server: %w", op, ErrLeaseLost, serr))
		}
		return errors.Join(fnErr, fmt.Errorf("%s: %w", op, serr))
	}
	return fnErr
}

// start asks the run to run and waits until it is Running or final.
func (c *Client) start(ctx context.Context, r *run) error {
	err := c.do(ctx, request{method: http.MethodPost, path: runPath(r.ID) + "/set_state",
		body: jsonBody(setStateBody{State: StateRunning}), accept: []int{http.StatusOK}}, r)
	if err != nil {
		return fmt.Errorf("set state %s: %w", StateRunning, err)
	}
	reconnects := 0
	for r.State != StateRunning && !final(r.State) {
		hold := func() time.Duration {
			h := c.longPoll
			if d, ok := ctx.Deadline(); ok {
				h = min(h, time.Until(d))
			}
			return max(h, 0)
		}
		err := c.do(ctx, request{method: http.MethodPost, path: runPath(r.ID) + "/wait",
			body: func() (any, time.Duration) {
				h := hold()
				return waitBody{State: StateRunning, TimeoutSeconds: h.Seconds()}, h
			},
			accept: []int{http.StatusOK}}, r)
		if err != nil && transient(err) && ctx.Err() == nil {
			// The run keeps its place in line on the server, across a
			// restart too: ask again once it answers.
			reconnects++
			pause := c.reconnectPause(reconnects, time.Time{})
			c.log.Warn("allot: server unreachable while the run waits for its slots; reconnecting",
				"run_id", r.ID, "reconnect", reconnects, "pause", pause, "err", err)
			if !sleep(ctx, pause) {
				return context.Cause(ctx)
			}
			continue
		}
		reconnects = 0
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	return nil
}

// heartbeat tells the server the run is alive every interval until ctx is
// done. If the server answers that the run is over, it calls lose with an
// error matching ErrLeaseLost and returns that error; other failures are
// logged and the next heartbeat tries again. It returns nil when ctx is
// done.
func (c *Client) heartbeat(ctx context.Context, id string, interval time.Duration, lose func(error)) error {
	for sleep(ctx, interval) {
		err := c.do(ctx, request{method: http.MethodPost, path: runPath(id) + "/heartbeat",
			accept: []int{http.StatusNoContent, http.StatusOK}}, nil)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseNotFound) || errors.Is(err, ErrNotFound):
			lostErr := fmt.Errorf("%w: heartbeat: %w", ErrLeaseLost, err)
			c.log.Warn("allot: run is over on the server; its slots may be held by others now", "run_id", id, "err", err)
			lose(lostErr)
			return lostErr
		default:
			c.log.Warn("allot: run heartbeat failed; will try again", "run_id", id, "err", err)
		}
	}
	return nil
}

// watchRun watches the lease of a Running run (see Client.watchLease)
// until ctx is done. If the server says the lease ended — a reset revoked
// it, it expired, or the run was ended elsewhere — it calls lose with an
// error matching ErrLeaseLost and returns that error. It returns nil when
// ctx is done, and at once for a run that holds no lease.
func (c *Client) watchRun(ctx context.Context, id, leaseID string, lose func(error)) error {
	if leaseID == "" {
		return nil
	}
	ended := c.watchLease(ctx, leaseID)
	if ended == nil {
		return nil
	}
	lostErr := fmt.Errorf("%w: %w", ErrLeaseLost, ended)
	c.log.Warn("allot: run is over on the server; its slots may be held by others now", "run_id", id, "err", ended)
	lose(lostErr)
	return lostErr
}

// finishRun moves the run to a final state, even when ctx is done.
func (c *Client) finishRun(ctx context.Context, id, state, msg string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := c.do(ctx, request{method: http.MethodPost, path: runPath(id) + "/set_state",
		body: jsonBody(setStateBody{State: state, Message: truncateMessage(msg)}), accept: []int{http.StatusOK}}, nil)
	if err != nil {
		if !errors.Is(err, ErrConflict) {
			// A 409 is a run the server ended first; the caller says so.
			c.log.Warn("allot: could not end the run", "run_id", id, "state", state, "err", err)
		}
		return fmt.Errorf("set state %s: %w", state, err)
	}
	return nil
}

// truncateMessage returns what a run keeps of a state message: the
// message when it is at most maxStateMessage bytes, else its longest head
// that fits with "…" after it, cut between characters. Each run of bytes
// that are not UTF-8 becomes U+FFFD first. It is the server's rule (a test
// checks they agree), applied before sending.
func truncateMessage(s string) string {
	const mark = "…"
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxStateMessage {
		return s
	}
	n := maxStateMessage - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// Run is a task run or flow run as the server reports it.
type Run struct {
	ID   string   `json:"id"`
	Kind string   `json:"kind"` // "task" or "flow"
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// Limits are the global limits the run takes Slots slots of with its
	// tags' limits (RunLimits).
	Limits   []string `json:"limits,omitempty"`
	Slots    int      `json:"slots,omitempty"`
	ParentID string   `json:"parent_id,omitempty"`
	// State is one of the State… constants.
	State        string     `json:"state"`
	StateHistory []RunState `json:"state_history"`
	LeaseID      string     `json:"lease_id,omitempty"`
	FencingToken uint64     `json:"fencing_token,omitempty"`
	Created      time.Time  `json:"created"`
	Updated      time.Time  `json:"updated"`
}

// RunState is one entry of a run's state history.
type RunState struct {
	State     string    `json:"state"`
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message,omitempty"`
}

// GetRun reads a run by id. An unknown run is an error matching
// ErrNotFound.
func (c *Client) GetRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	if err := c.do(ctx, request{method: http.MethodGet, path: runPath(id), accept: []int{http.StatusOK}}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
