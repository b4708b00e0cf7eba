package allottest_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/allottest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerServesTheSDK(t *testing.T) {
	t.Parallel()
	srv := allottest.NewServer(t)
	c := srv.Client(t)
	if got, want := c.URL(), srv.URL(); got != want {
		t.Errorf("client URL = %q, want %q", got, want)
	}
	if _, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	err := c.Concurrency(t.Context(), []string{"db"}, func(ctx context.Context) error {
		_, err := c.TryAcquire(ctx, []string{"db"})
		if !errors.Is(err, allot.ErrLocked) {
			t.Errorf("TryAcquire while held = %v, want ErrLocked", err)
		}
		return nil
	}, allot.Strict())
	if err != nil {
		t.Fatalf("Concurrency: %v", err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := allottest.NewServer(t), allottest.NewServer(t)
	if a.URL() == b.URL() {
		t.Fatalf("both servers at %s", a.URL())
	}
	if _, err := a.Client(t).CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client(t).GetLimit(t.Context(), "db"); !errors.Is(err, allot.ErrLimitNotFound) {
		t.Errorf("second server's GetLimit = %v, want ErrLimitNotFound", err)
	}
}
