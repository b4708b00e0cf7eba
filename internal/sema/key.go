package sema

import (
	"slices"
	"strings"
	"time"
)

// Key is the durable record of an API key. Package auth gives it its
// meaning (the form of the id, the scopes' syntax, the hash); the machine
// only keeps the records, so that keys are durable, and replicated, with
// the rest of the state.
type Key struct {
	ID     string
	Name   string
	Scopes []string
	// Hash is the SHA-256 of the key's secret; the secret is never kept.
	Hash    []byte
	Created time.Time
	// Expires is when the key stops working; zero: never.
	Expires time.Time
	// Revoked is when the key was revoked; zero: it is not.
	Revoked time.Time
	// LastUsed is when the key last authenticated a request, as of the
	// last flush; zero: never.
	LastUsed time.Time
}

// RestoreKeys loads the durable keys into a Machine.
func (m *Machine) RestoreKeys(keys []Key) {
	for _, k := range keys {
		m.keys[k.ID] = k
	}
}

// PutKey creates or replaces the key with k's id.
func (m *Machine) PutKey(k Key) {
	k.Scopes = slices.Clone(k.Scopes)
	k.Hash = slices.Clone(k.Hash)
	m.keys[k.ID] = k
	c := k
	m.changes = append(m.changes, Change{Kind: PutKey, Key: &c})
}

// KeyLeases returns the number of leases the API key id holds.
func (m *Machine) KeyLeases(id string) int { return m.keyLeases[id] }

func (m *Machine) forgetKeyLease(ll *leaseState) {
	if ll.KeyID == "" {
		return
	}
	if n := m.keyLeases[ll.KeyID] - 1; n > 0 {
		m.keyLeases[ll.KeyID] = n
	} else {
		delete(m.keyLeases, ll.KeyID)
	}
}

// Keys returns every key, by id.
func (m *Machine) Keys() []Key {
	out := make([]Key, 0, len(m.keys))
	for _, k := range m.keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// AuditRecord is one entry of the audit log: a change of keys or limits, a
// reset or revocation, or a refused key. Before and After are JSON (or
// empty); no field ever holds a key's secret.
type AuditRecord struct {
	// Seq numbers the records in the order they were made, from 1.
	Seq       uint64
	Time      time.Time
	KeyID     string
	KeyName   string
	Remote    string
	RequestID string
	// Action is what was done ("limit.create", "key.revoke",
	// "auth.refused"…), Target what it was done to.
	Action string
	Target string
	// Status is the HTTP status of the answer.
	Status int
	Before string
	After  string
}

// RestoreAudit loads the durable audit records, oldest first.
func (m *Machine) RestoreAudit(recs []AuditRecord) {
	m.audit = append(m.audit[:0], recs...)
	for _, r := range recs {
		m.auditSeq = max(m.auditSeq, r.Seq)
	}
}

// Audit appends a record, numbering it, and returns it.
func (m *Machine) Audit(r AuditRecord) AuditRecord {
	m.auditSeq++
	r.Seq = m.auditSeq
	m.audit = append(m.audit, r)
	c := r
	m.changes = append(m.changes, Change{Kind: PutAudit, Audit: &c})
	return r
}

// PruneAudit drops the records older than before.
func (m *Machine) PruneAudit(before time.Time) {
	i := 0
	for i < len(m.audit) && m.audit[i].Time.Before(before) {
		i++
	}
	if i == 0 {
		return
	}
	m.audit = slices.Delete(m.audit, 0, i)
	m.changes = append(m.changes, Change{Kind: PruneAudit, Before: before})
}

// AuditLog returns up to n records, newest first, of keyID ("" any) with
// Seq below beforeSeq (0: from the newest).
func (m *Machine) AuditLog(keyID string, beforeSeq uint64, n int) []AuditRecord {
	var out []AuditRecord
	for i := len(m.audit) - 1; i >= 0 && len(out) < n; i-- {
		r := m.audit[i]
		if (beforeSeq != 0 && r.Seq >= beforeSeq) || (keyID != "" && r.KeyID != keyID) {
			continue
		}
		out = append(out, r)
	}
	return out
}
