package memstore_test

import (
	"testing"

	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/memstore"
	"github.com/allot-dev/allot/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			s := memstore.New()
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			return s
		},
		Reopen: func(t *testing.T, s store.Store) store.Store { return s.(*memstore.Store).Reopen() },
	})
}
