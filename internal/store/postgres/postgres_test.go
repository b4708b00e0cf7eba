package postgres_test

import (
	"testing"

	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/postgres"
	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
	"github.com/allot-dev/allot/internal/store/storetest"
)

// open opens a store over schema that is closed when the test ends.
func open(t *testing.T, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

type opened struct {
	*postgres.Store
	url  string
	opts postgres.Options
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			url, schema := pgtest.Schema(t)
			opts := postgres.Options{Schema: schema, MaxConns: 2}
			return opened{open(t, url, opts), url, opts}
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			o := s.(opened)
			if err := o.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return opened{open(t, o.url, o.opts), o.url, o.opts}
		},
	})
}
