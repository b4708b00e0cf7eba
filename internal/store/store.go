// Package store defines how allot's state survives a restart: the Store
// interface that every backend implements, and (in storetest) the one
// conformance suite every backend must pass.
//
// The live state is the state machine in package sema; a Store is its
// durable shadow. The coordinator commits every change sema records, in the
// order it recorded them, and acknowledges a command only after the batch
// that carries its changes is committed. Load returns the state as of the
// last committed batch.
package store

import (
	"context"
	"errors"

	"github.com/allot-dev/allot/internal/sema"
)

// State is everything a Store keeps.
type State struct {
	Limits []sema.Limit
	Leases []sema.Lease
	Runs   []sema.Run
	// Waiters are the waiting requests that carry a ticket (sema.Waiter),
	// one per ticket.
	Waiters []sema.Waiter
	// Keys are the API keys, revoked ones included.
	Keys []sema.Key
	// Audit is the audit log, by Seq (oldest first).
	Audit []sema.AuditRecord
	// Fence is the highest fencing token ever committed.
	Fence uint64
}

// Store keeps allot's state durable. The coordinator calls Load once, before
// any Commit, and Commit from one goroutine at a time; a backend may rely on
// that and need not serialise its own calls (both current ones do anyway).
// A backend must store every value sema can produce: a change it cannot
// store fails its whole batch, and the coordinator then stops.
type Store interface {
	// Load returns the committed state: every limit, every lease (expired
	// ones included; the caller expires them), every run, every waiter,
	// every API key, the audit log and the fencing high-water mark.
	Load(ctx context.Context) (State, error)
	// Commit applies changes in order, atomically: after a crash either all
	// of them are visible to Load or none is. It returns only once they are
	// durable. A PutLease raises the fencing high-water mark to the lease's
	// Fence. Deleting what does not exist is not an error. changes is the
	// caller's again once Commit returns: a backend keeps copies, never
	// the slice.
	Commit(ctx context.Context, changes []sema.Change) error
	// Close releases the store's resources.
	Close() error
}

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store closed")
