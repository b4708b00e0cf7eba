package coord

import (
	"context"
	"time"

	"github.com/allot-dev/allot/internal/sema"
)

// Keys returns every API key record, revoked ones included, by id.
func (c *Coordinator) Keys(ctx context.Context) ([]sema.Key, error) {
	var out []sema.Key
	err := c.read(func(m *sema.Machine, now time.Time) { out = m.Keys() })
	return out, err
}

// PutKeys creates or replaces API key records, durably, in one batch.
func (c *Coordinator) PutKeys(ctx context.Context, keys ...sema.Key) error {
	return c.do(func(m *sema.Machine, now time.Time) error {
		for _, k := range keys {
			m.PutKey(k)
		}
		return nil
	})
}

// Audit appends a record to the audit log, durably.
func (c *Coordinator) Audit(ctx context.Context, r sema.AuditRecord) error {
	return c.do(func(m *sema.Machine, now time.Time) error {
		if r.Time.IsZero() {
			r.Time = now
		}
		m.Audit(r)
		return nil
	})
}

// AuditLog returns up to n audit records, newest first, of keyID ("" for
// any), numbered below beforeSeq (0: from the newest).
func (c *Coordinator) AuditLog(ctx context.Context, keyID string, beforeSeq uint64, n int) ([]sema.AuditRecord, error) {
	var out []sema.AuditRecord
	err := c.read(func(m *sema.Machine, now time.Time) { out = m.AuditLog(keyID, beforeSeq, n) })
	return out, err
}
