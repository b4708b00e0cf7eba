package allot_test

import (
	"errors"
	"testing"
	"time"

	"github.com/allot-dev/allot"
)

func TestLeaseByID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.limit(t, allot.LimitSpec{Name: "by-id", Limit: 1})
	l, err := b.c.Acquire(ctx, []string{"by-id"}, allot.LeaseDuration(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	l.Detach()
	if err := l.Err(); err != nil {
		t.Fatalf("Err after Detach: got %v, want nil (still held)", err)
	}
	if err := b.c.RenewLease(ctx, l.ID(), 2*time.Minute); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	got, err := b.c.GetLimit(ctx, "by-id")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Holders) != 1 || got.Holders[0].LeaseID != l.ID() {
		t.Fatalf("holders after Detach and RenewLease: got %+v, want the lease %s", got.Holders, l.ID())
	}
	if left := time.Until(got.Holders[0].Expires); left < time.Minute+30*time.Second {
		t.Errorf("expiry after RenewLease(2m): got %s from now, want about 2m", left)
	}
	if err := b.c.ReleaseLease(ctx, l.ID()); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if got, err = b.c.GetLimit(ctx, "by-id"); err != nil || len(got.Holders) != 0 {
		t.Fatalf("holders after ReleaseLease: got %+v (%v), want none", got.Holders, err)
	}
	if err := b.c.RenewLease(ctx, l.ID(), 0); !errors.Is(err, allot.ErrLeaseNotFound) {
		t.Errorf("RenewLease of a released lease: got %v, want ErrLeaseNotFound", err)
	}
	if err := b.c.ReleaseLease(ctx, l.ID()); err != nil {
		t.Errorf("ReleaseLease twice: got %v, want nil", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release after ReleaseLease: got %v, want nil", err)
	}
}
