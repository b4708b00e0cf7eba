package allot_test

import (
	"context"
	"errors"
	"testing"

	"github.com/allot-dev/allot"
)

func TestGetRunReadsTheRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "reports", 2)
	ctx := allot.WithTags(deadline(t), "reports")
	var id string
	var inside *allot.Run
	err := b.c.RunTask(ctx, "nightly report", func(ctx context.Context) error {
		id, _ = allot.RunFrom(ctx)
		var err error
		inside, err = b.c.GetRun(ctx, id)
		return err
	})
	if err != nil {
		t.Fatalf("RunTask = %v, want nil", err)
	}
	if inside.Name != "nightly report" || inside.Kind != "task" || inside.State != allot.StateRunning || inside.LeaseID == "" {
		t.Errorf("GetRun inside fn = name %q kind %q state %q lease %q; want nightly report, task, Running and a lease",
			inside.Name, inside.Kind, inside.State, inside.LeaseID)
	}
	after, err := b.c.GetRun(deadline(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != allot.StateCompleted || len(after.StateHistory) < 3 || after.StateHistory[len(after.StateHistory)-1].State != allot.StateCompleted {
		t.Errorf("GetRun after = state %q, history %+v; want Completed last", after.State, after.StateHistory)
	}
	if _, err := b.c.GetRun(deadline(t), "6f0f3a52-4f4e-4d55-9a53-1d8a0c0e7c11"); !errors.Is(err, allot.ErrNotFound) {
		t.Errorf("GetRun of an unknown run: got %v, want ErrNotFound", err)
	}
}
