// Package memstore is a Store kept in memory: nothing survives the process.
// It exists for tests of the layers above the store and passes the same
// conformance suite as the durable backends. Fail lets a test make commits
// fail, to exercise what happens when the disk does.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
)

// Store is an in-memory store.Store.
type Store struct {
	mu      sync.Mutex
	closed  bool
	limits  map[uuid.UUID]sema.Limit
	leases  map[uuid.UUID]sema.Lease
	runs    map[uuid.UUID]sema.Run
	waiters map[string]sema.Waiter
	keys    map[string]sema.Key
	audit   []sema.AuditRecord
	fence   uint64
	fail    error
	commits int
}

// New returns an empty Store.
func New() *Store {
	return &Store{limits: make(map[uuid.UUID]sema.Limit), leases: make(map[uuid.UUID]sema.Lease), runs: make(map[uuid.UUID]sema.Run),
		waiters: make(map[string]sema.Waiter), keys: make(map[string]sema.Key)}
}

// Fail makes every later Commit return err (nil: succeed again).
func (s *Store) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// Commits returns how many batches were committed.
func (s *Store) Commits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// Reopen returns a new open Store with the same contents, as a durable
// backend would after a restart.
func (s *Store) Reopen() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return &Store{limits: maps.Clone(s.limits), leases: maps.Clone(s.leases), runs: maps.Clone(s.runs),
		waiters: maps.Clone(s.waiters), keys: maps.Clone(s.keys), audit: slices.Clone(s.audit), fence: s.fence}
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context) (store.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.State{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.State{}, err
	}
	st := store.State{Fence: s.fence}
	for _, id := range slices.SortedFunc(maps.Keys(s.limits), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }) {
		st.Limits = append(st.Limits, s.limits[id])
	}
	for _, id := range slices.SortedFunc(maps.Keys(s.leases), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }) {
		st.Leases = append(st.Leases, cloneLease(s.leases[id]))
	}
	for _, id := range slices.SortedFunc(maps.Keys(s.runs), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }) {
		st.Runs = append(st.Runs, cloneRun(s.runs[id]))
	}
	for _, t := range slices.Sorted(maps.Keys(s.waiters)) {
		st.Waiters = append(st.Waiters, cloneWaiter(s.waiters[t]))
	}
	for _, a := range s.audit {
		a.Time = utc(a.Time)
		st.Audit = append(st.Audit, a)
	}
	for _, id := range slices.Sorted(maps.Keys(s.keys)) {
		st.Keys = append(st.Keys, cloneKey(s.keys[id]))
	}
	return st, nil
}

// cloneKey copies what a key shares with its caller, and puts its times in
// UTC as a durable backend returns them.
func cloneKey(k sema.Key) sema.Key {
	k.Scopes = slices.Clone(k.Scopes)
	k.Hash = slices.Clone(k.Hash)
	k.Created, k.Expires, k.Revoked, k.LastUsed = utc(k.Created), utc(k.Expires), utc(k.Revoked), utc(k.LastUsed)
	return k
}

// cloneRun copies what a run shares with its caller, and puts its times in
// UTC as a durable backend returns them.
func cloneRun(r sema.Run) sema.Run {
	r.Tags = slices.Clone(r.Tags)
	r.Limits = slices.Clone(r.Limits)
	r.History = slices.Clone(r.History)
	for i := range r.History {
		r.History[i].At = utc(r.History[i].At)
	}
	r.Created, r.Updated = utc(r.Created), utc(r.Updated)
	return r
}

// cloneWaiter copies what a waiter shares with its caller, and puts its
// times in UTC as a durable backend returns them.
func cloneWaiter(w sema.Waiter) sema.Waiter {
	w.Names = slices.Clone(w.Names)
	w.Holder.Metadata = maps.Clone(w.Holder.Metadata)
	w.Since, w.Deadline = utc(w.Since), utc(w.Deadline)
	return w
}

// cloneLease copies what a lease shares with its caller, and puts its times
// in UTC as a durable backend returns them.
func cloneLease(l sema.Lease) sema.Lease {
	l.Holds = slices.Clone(l.Holds)
	l.Holder.Metadata = maps.Clone(l.Holder.Metadata)
	l.Created, l.Expires = utc(l.Created), utc(l.Expires)
	return l
}

func utcLimit(l sema.Limit) sema.Limit {
	l.Created, l.Updated, l.DecayAt = utc(l.Created), utc(l.Updated), utc(l.DecayAt)
	return l
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// checkNames reports a PutLimit that would give a limit a name another
// limit has at that point of the batch, as a durable backend's unique
// constraint does.
func checkNames(limits map[uuid.UUID]sema.Limit, changes []sema.Change) error {
	names := make(map[uuid.UUID]string, len(limits))
	for id, l := range limits {
		names[id] = l.Name
	}
	for i, c := range changes {
		switch c.Kind {
		case sema.PutLimit:
			for id, n := range names {
				if n == c.Limit.Name && id != c.Limit.ID {
					return fmt.Errorf("change %d: limit name %q: %w", i, n, errNameTaken)
				}
			}
			names[c.Limit.ID] = c.Limit.Name
		case sema.DeleteLimit:
			delete(names, c.ID)
		}
	}
	return nil
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, changes []sema.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	if s.fail != nil {
		return s.fail
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	limitChanges := false
	for i, c := range changes {
		switch c.Kind {
		case sema.PutLimit, sema.DeleteLimit:
			limitChanges = true
		case sema.PutLease, sema.DeleteLease, sema.DeleteRun, sema.DeleteWaiter:
		case sema.PutRun:
			if c.Run == nil {
				return fmt.Errorf("change %d: %w", i, errNoRun)
			}
		case sema.PutWaiter:
			if c.Waiter == nil {
				return fmt.Errorf("change %d: %w", i, errNoWaiter)
			}
		case sema.PutKey:
			if c.Key == nil {
				return fmt.Errorf("change %d: %w", i, errNoKey)
			}
		case sema.PutAudit:
			if c.Audit == nil {
				return fmt.Errorf("change %d: %w", i, errNoAudit)
			}
		case sema.PruneAudit:
		default:
			return fmt.Errorf("change %d: %w", i, errUnknownKind)
		}
	}
	if limitChanges {
		if err := checkNames(s.limits, changes); err != nil {
			return err
		}
	}
	for _, c := range changes {
		switch c.Kind {
		case sema.PutLimit:
			s.limits[c.Limit.ID] = utcLimit(c.Limit)
		case sema.DeleteLimit:
			delete(s.limits, c.ID)
		case sema.PutLease:
			l := cloneLease(c.Lease)
			s.leases[l.ID] = l
			s.fence = max(s.fence, l.Fence)
		case sema.DeleteLease:
			delete(s.leases, c.ID)
		case sema.PutRun:
			s.runs[c.Run.ID] = cloneRun(*c.Run)
		case sema.DeleteRun:
			delete(s.runs, c.ID)
		case sema.PutWaiter:
			s.waiters[c.Waiter.Ticket] = cloneWaiter(*c.Waiter)
		case sema.DeleteWaiter:
			delete(s.waiters, c.Ticket)
		case sema.PutKey:
			s.keys[c.Key.ID] = cloneKey(*c.Key)
		case sema.PutAudit:
			s.audit = append(s.audit, *c.Audit)
		case sema.PruneAudit:
			s.audit = slices.DeleteFunc(s.audit, func(a sema.AuditRecord) bool { return a.Time.Before(c.Before) })
		}
	}
	s.commits++
	return nil
}

var (
	errUnknownKind = errors.New("unknown change kind")
	errNameTaken   = errors.New("name taken by another limit")
	errNoRun       = errors.New("put run without a run")
	errNoWaiter    = errors.New("put waiter without a waiter")
	errNoKey       = errors.New("put key without a key")
	errNoAudit     = errors.New("put audit without a record")
)

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
