package coord_test

import (
	"sync"
	"testing"
	"testing/synctest"

	"github.com/allot-dev/allot/internal/sema"
)

// Concurrent ensures of one name leave one limit, and all of them answer
// it; only one of them created it.
func TestEnsureLimitConcurrentlyLeavesOneLimit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, nil)
		const n = 8
		var wg sync.WaitGroup
		views := make([]sema.LimitView, n)
		created := make([]bool, n)
		for i := range n {
			wg.Go(func() {
				v, c, err := b.c.EnsureLimit(t.Context(), sema.LimitEnsure{Name: "shared", Limit: 3})
				if err != nil {
					t.Errorf("ensure %d: %v", i, err)
				}
				views[i], created[i] = v, c
			})
		}
		wg.Wait()
		all, err := b.c.ListLimits(t.Context(), "", 0, 100, sema.Summary)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Name != "shared" || all[0].Limit.Limit != 3 {
			t.Fatalf("limits after %d ensures = %+v, want one limit shared of 3", n, all)
		}
		made := 0
		for i, v := range views {
			if v.ID != all[0].ID {
				t.Errorf("ensure %d answered limit %v, want %v", i, v.ID, all[0].ID)
			}
			if created[i] {
				made++
			}
		}
		if made != 1 {
			t.Errorf("%d ensures say they created the limit, want 1", made)
		}
		// A different limit count changes the one limit.
		v, c, err := b.c.EnsureLimit(t.Context(), sema.LimitEnsure{Name: "shared", Limit: 5})
		if err != nil || c || v.ID != all[0].ID || v.Limit.Limit != 5 {
			t.Errorf("ensure to 5 = (%v limit %d, created %v, %v), want %v limit 5, not created", v.ID, v.Limit.Limit, c, err, all[0].ID)
		}
	})
}
