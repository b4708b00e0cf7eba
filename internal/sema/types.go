package sema

import (
	"time"

	"github.com/google/uuid"
)

// Mode says how a request uses the slots it is granted.
type Mode uint8

const (
	// ModeConcurrency holds the slots until the lease is released or expires.
	ModeConcurrency Mode = iota
	// ModeRateLimit takes slots that are never given back; they decay at the
	// limit's SlotDecayPerSecond.
	ModeRateLimit
)

// String returns the mode's name as the API spells it.
func (m Mode) String() string {
	if m == ModeRateLimit {
		return "rate_limit"
	}
	return "concurrency"
}

// ParseMode parses a mode as the API spells it; the empty string is
// ModeConcurrency.
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "", "concurrency":
		return ModeConcurrency, true
	case "rate_limit":
		return ModeRateLimit, true
	}
	return 0, false
}

// Holder says who holds a lease.
type Holder struct {
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// IsZero reports whether no holder was given.
func (h Holder) IsZero() bool { return h.Type == "" && h.ID == "" && len(h.Metadata) == 0 }

// Limit is the durable record of a limit.
type Limit struct {
	ID                      uuid.UUID
	Name                    string
	Limit                   int
	Active                  bool
	SlotDecayPerSecond      float64
	AvgSlotOccupancySeconds float64
	Created                 time.Time
	Updated                 time.Time

	// Level is the number of slots taken without a lease (rate-limit grants
	// and slots preset with active_slots) as of DecayAt; it decays at
	// SlotDecayPerSecond.
	Level float64
	// Denied is the decaying count of slots refused as of DecayAt; it only
	// shapes Retry-After.
	Denied  float64
	DecayAt time.Time

	// Idle is, on a template, how long a limit it creates may sit unused
	// (no lease, no waiter, its level decayed to zero) before it is removed;
	// 0 keeps such limits. A limit created by a template carries the
	// template's Idle from its creation on.
	Idle time.Duration
	// FromTemplate marks a limit that a template created on first use: the
	// only kind that idle removal ever removes.
	FromTemplate bool
}

// DefaultTemplateIdle is a template's Idle when its creator gives none.
const DefaultTemplateIdle = time.Hour

// MaxIdle bounds a template's Idle.
const MaxIdle = 366 * 24 * time.Hour

// IsTemplate reports whether the limit is a template: a name with a '*'
// that gives its settings to the names it matches on first use.
func (l *Limit) IsTemplate() bool { return isPattern(l.Name) }

// Hold is the number of slots a lease holds on one limit.
type Hold struct {
	LimitID uuid.UUID
	Slots   int
}

// Lease is the durable record of a grant.
type Lease struct {
	ID    uuid.UUID
	Holds []Hold
	// Slots is the number of slots requested on each limit.
	Slots  int
	Mode   Mode
	Holder Holder
	// Anonymous marks a lease granted by a plain increment; a plain
	// decrement gives its slots back.
	Anonymous bool
	Created   time.Time
	Duration  time.Duration
	Expires   time.Time
	Fence     uint64
	// Ticket is the client-chosen ticket of the request that was granted
	// this lease, or "". A request that comes again with it gets this
	// lease back instead of a second one, for as long as the lease lives.
	Ticket string
	// KeyID is the API key that took the lease ("" with authentication
	// off); only that key may renew, release or watch it.
	KeyID string
}

// Waiter is the durable record of a waiting request that carries a ticket:
// enough to put it back in line, in its order, after a restart. Requests
// without a ticket and waiting runs (which are durable as runs) have none.
type Waiter struct {
	Ticket string
	// Seq is the waiter's place in the order of arrival: a restart puts
	// the waiters back in line in the order of Seq.
	Seq           uint64
	Names         []string
	Slots         int
	Mode          Mode
	LeaseID       uuid.UUID
	LeaseDuration time.Duration
	Holder        Holder
	NoLease       bool
	Anonymous     bool
	Since         time.Time
	// Deadline is when the request stops waiting (its timeout), or zero.
	Deadline time.Time
	// KeyID is the API key that asked, or "": the lease it is granted is
	// that key's.
	KeyID string
}

// ChangeKind says what a Change does.
type ChangeKind uint8

// The kinds of Change.
const (
	PutLimit ChangeKind = iota + 1
	DeleteLimit
	PutLease
	DeleteLease
	PutRun
	DeleteRun
	PutWaiter
	DeleteWaiter
	PutKey
	PutAudit
	PruneAudit
)

// Change is one durable effect of a command, to be applied in order.
type Change struct {
	Kind  ChangeKind
	Limit Limit     // PutLimit
	Lease Lease     // PutLease
	ID    uuid.UUID // DeleteLimit, DeleteLease, DeleteRun
	// Run is a snapshot of the run (PutRun), never changed afterwards.
	Run *Run
	// Waiter is a snapshot of a waiter (PutWaiter), never changed
	// afterwards.
	Waiter *Waiter
	// Ticket is the ticket of the waiter to delete (DeleteWaiter).
	Ticket string
	// Key is a snapshot of an API key (PutKey), never changed afterwards.
	Key *Key
	// Audit is an audit record (PutAudit), never changed afterwards.
	Audit *AuditRecord
	// Before is when the audit records older than it are dropped
	// (PruneAudit).
	Before time.Time
}

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of Event.
const (
	// Granted: a lease was granted, at once or to a waiter.
	Granted EventKind = iota + 1
	// WaiterFailed: a waiter can never be granted any more (its limit was
	// lowered below its slots, for example) and was removed.
	WaiterFailed
	// Released: a lease was released by its holder.
	Released
	// Expired: a lease was not renewed in time and its slots were returned.
	Expired
	// LimitChanged: a limit was created, updated or deleted.
	LimitChanged
	// Revoked: a lease was taken away by an operator (a reset of its
	// limit, or a revoke of the lease) and its slots were returned.
	Revoked
	// RunChanged: a run was created or changed state.
	RunChanged
	// Queued: a request joined the line of its limits (WaiterID, Limits,
	// Lease.Holder and Lease.Slots say who and what for).
	Queued
	// LeftLine: a waiting request gave up (its time ran out or its caller
	// left) and left the line.
	LeftLine
)

// Event is something that happened in a command, for the caller to act on
// (wake a waiter) or publish.
type Event struct {
	Kind     EventKind
	WaiterID uint64 // Granted to a waiter, WaiterFailed
	Lease    Lease  // Granted, Released, Expired
	Limits   []LimitRef
	Err      error // WaiterFailed
	Deleted  bool  // LimitChanged
	Run      *Run  // RunChanged: a snapshot of the run
	// Reason says why a lease ended (Released, Expired, Revoked): the
	// operator's reason, or the run's message; ReasonUnclaimed for a
	// grant nobody came back for, ReasonTicketCancelled for one whose
	// ticket its caller cancelled. For LimitChanged, why a limit was
	// deleted when nobody deleted it: "idle" for a limit a template
	// created, removed by idle removal.
	Reason string
}

// LimitRef names a limit in answers.
type LimitRef struct {
	ID    uuid.UUID
	Name  string
	Limit int
}

// Request asks for slots.
type Request struct {
	Names []string
	Slots int
	Mode  Mode
	// LeaseID is the id the lease gets if one is granted.
	LeaseID       uuid.UUID
	LeaseDuration time.Duration
	Holder        Holder
	// NoLease grants without creating a lease (rate-limit increments).
	NoLease bool
	// Anonymous marks the lease as a plain increment's.
	Anonymous bool
	// Wait queues the request when it cannot be granted now.
	Wait bool
	// Ticket is the client-chosen idempotency key of the request, or "".
	// A request with the ticket of a live lease gets that lease; one with
	// the ticket of a waiter takes up that waiter's place in line. A
	// waiting request with a ticket is durable (PutWaiter).
	Ticket string
	// Deadline is when a waiting request gives up, recorded with a
	// durable waiter and shown in views; the caller enforces it.
	Deadline time.Time
	// KeyID is the API key asking; the lease records it.
	KeyID string
	// slotsOn, when set, is the number of slots taken on the limits it
	// names by id; the others take Slots. A run takes one slot of each of
	// its tags' limits and its own count of its extra limits.
	slotsOn map[uuid.UUID]int
}

// slotsFor returns the number of slots req takes on l.
func (req *Request) slotsFor(l *limitState) int {
	if n, ok := req.slotsOn[l.ID]; ok {
		return n
	}
	return req.Slots
}

// ReasonUnclaimed is the Reason of the Released event of a lease granted
// to a waiter whose caller had gone and did not come back for it in time.
const ReasonUnclaimed = "unclaimed: granted while its caller was away, and not claimed in time"

// ReasonTicketCancelled is the Reason of the Released event of a lease
// whose ticket its caller cancelled: it gave up before it was told.
const ReasonTicketCancelled = "cancelled: its caller gave up before it was told of the grant"

// Outcome is the answer to a Request that did not fail.
type Outcome struct {
	// Granted is true when the lease was granted now.
	Granted bool
	Lease   Lease
	// Limits are the existing limits among the request's names, in request
	// order, inactive ones included.
	Limits []LimitRef
	// WaiterID identifies the queued request when Granted is false.
	WaiterID uint64
	// Position is the queued request's place in line (1 is next).
	Position int
	// Resumed is true when the request's ticket named a lease already
	// granted (Granted is then true and Lease is that lease) or a waiter
	// already in line (WaiterID is that waiter): nothing new was taken.
	Resumed bool
}

// Bounds of a Holder (see Holder.Validate).
const (
	MaxHolderID        = 256
	MaxMetadataEntries = 32
	MaxMetadataKey     = 128
	MaxMetadataValue   = 1024
)

// ValidHolderType reports whether t is a kind of holder a lease may name:
// Prefect's three (flow_run, task_run, deployment) and allot's process.
func ValidHolderType(t string) bool {
	switch t {
	case "flow_run", "task_run", "deployment", "process":
		return true
	}
	return false
}

// Validate checks a holder that was given (a zero Holder is no holder and
// valid). Its *InvalidError names the field at fault as "holder.type",
// "holder.id" or "holder.metadata".
func (h Holder) Validate() error {
	if h.IsZero() {
		return nil
	}
	if !ValidHolderType(h.Type) {
		return invalid("holder.type", "must be one of flow_run, task_run, deployment, process")
	}
	if h.ID == "" || len(h.ID) > MaxHolderID {
		return invalid("holder.id", "must be 1 to %d bytes", MaxHolderID)
	}
	if len(h.Metadata) > MaxMetadataEntries {
		return invalid("holder.metadata", "must have at most %d entries", MaxMetadataEntries)
	}
	for k, v := range h.Metadata {
		if k == "" || len(k) > MaxMetadataKey || len(v) > MaxMetadataValue {
			return invalid("holder.metadata", "keys must be 1 to %d bytes and values at most %d bytes", MaxMetadataKey, MaxMetadataValue)
		}
	}
	return nil
}
