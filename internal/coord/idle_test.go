package coord_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/allot-dev/allot/internal/sema"
)

// TestTemplateCreatedLimitRemovedWhenIdle: a limit that a template created
// is removed, durably and with an event, one idle time after its last use,
// and not before.
func TestTemplateCreatedLimitRemovedWhenIdle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		idle := time.Minute
		if _, err := b.c.CreateLimit(t.Context(), sema.LimitSpec{Name: "resource:*", Limit: 1, Active: true, Idle: &idle}); err != nil {
			t.Fatal(err)
		}
		events, stop := b.c.Subscribe(64)
		defer stop()
		g := acquire(t, b.c, "resource:7", 0)
		time.Sleep(30 * time.Second)
		if _, err := b.c.Release(t.Context(), g.Lease.ID); err != nil {
			t.Fatal(err)
		}
		released := time.Now()
		time.Sleep(idle - time.Nanosecond)
		synctest.Wait()
		if _, err := b.c.ReadLimit(t.Context(), "resource:7", sema.Summary); err != nil {
			t.Fatalf("before its idle time: %v, want the limit", err)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if _, err := b.c.ReadLimit(t.Context(), "resource:7", sema.Summary); !errors.Is(err, sema.ErrLimitNotFound) {
			t.Fatalf("at its idle time: %v, want it removed", err)
		}
		var removed *sema.Event
		for len(events) > 0 {
			e := <-events
			if e.Kind == sema.LimitChanged && e.Deleted {
				removed = &e
			}
		}
		if removed == nil || removed.Reason != "idle" || removed.Limits[0].Name != "resource:7" {
			t.Errorf("deletion event %+v, want resource:7 deleted as idle", removed)
		}
		if got := time.Since(released); got != idle {
			t.Errorf("removed %v after its release, want %v", got, idle)
		}
		st, err := b.st.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Limits) != 1 || st.Limits[0].Name != "resource:*" {
			t.Errorf("stored limits %+v, want only the template", st.Limits)
		}
	})
}
