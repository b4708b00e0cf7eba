package coord

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// EnsureLimit makes sure the limit called e.Name exists with e's settings
// (see sema.Machine.EnsureLimit) in one command: created, changed where it
// differs, or left alone. created reports whether it was created.
// Concurrent ensures of one name leave one limit.
func (c *Coordinator) EnsureLimit(ctx context.Context, e sema.LimitEnsure) (v sema.LimitView, created bool, err error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return v, false, err
	}
	err = c.do(func(m *sema.Machine, now time.Time) error {
		l, made, err := m.EnsureLimit(now, id, e)
		if err != nil {
			return err
		}
		created = made
		v, err = m.LimitByID(now, l.ID, sema.Full)
		return err
	})
	return v, created, err
}
