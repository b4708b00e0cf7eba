package allot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
)

func TestTagsFlowThroughTheContext(t *testing.T) {
	t.Parallel()
	base := allot.WithTags(context.Background(), "db", "etl")
	tests := []struct {
		name string
		ctx  context.Context
		want []string
	}{
		{"none", context.Background(), nil},
		{"sorted and deduplicated", allot.WithTags(context.Background(), "z", "a", "z", ""), []string{"a", "z"}},
		{"nested add", allot.WithTags(base, "api", "db"), []string{"api", "db", "etl"}},
		{"without drops inherited", allot.WithoutTags(base, "db"), []string{"etl"}},
		{"without an absent tag", allot.WithoutTags(base, "nope"), []string{"db", "etl"}},
		{"added again after removal", allot.WithTags(allot.WithoutTags(base, "db"), "db"), []string{"db", "etl"}},
		{"parent unchanged", base, []string{"db", "etl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, allot.TagsFrom(tt.ctx)); diff != "" {
				t.Errorf("TagsFrom (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("result is a copy", func(t *testing.T) {
		t.Parallel()
		ctx := allot.WithTags(context.Background(), "a", "b")
		allot.TagsFrom(ctx)[0] = "x"
		if diff := cmp.Diff([]string{"a", "b"}, allot.TagsFrom(ctx)); diff != "" {
			t.Errorf("TagsFrom after changing a result (-want +got):\n%s", diff)
		}
	})
	t.Run("no run outside RunTask", func(t *testing.T) {
		t.Parallel()
		if id, ok := allot.RunFrom(base); ok {
			t.Errorf("RunFrom = %q, true; want false", id)
		}
	})
}

// runView is a run as GET /api/runs/{id} returns it.
type runView struct {
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`
	Tags         []string `json:"tags"`
	ParentID     *string  `json:"parent_id"`
	State        string   `json:"state"`
	StateHistory []struct {
		State   string `json:"state"`
		Message string `json:"message"`
	} `json:"state_history"`
}

func (r runView) message() string {
	if n := len(r.StateHistory); n > 0 {
		return r.StateHistory[n-1].Message
	}
	return ""
}

// api calls the server's API directly, for what the SDK does not cover.
func (b *testBundle) api(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	var rd *bytes.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: status %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
}

func (b *testBundle) tagLimit(t *testing.T, tag string, limit int) {
	t.Helper()
	b.api(t, http.MethodPost, "/concurrency_limits/", map[string]any{"tag": tag, "concurrency_limit": limit}, nil)
}

func (b *testBundle) run(t *testing.T, id string) runView {
	t.Helper()
	var r runView
	b.api(t, http.MethodGet, "/runs/"+id, nil, &r)
	return r
}

// deadline bounds a test that would hang if runs deadlocked.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRunTaskRespectsTheTagLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 3)
	ctx := allot.WithTags(deadline(t), "database")

	var (
		running, most atomic.Int32
		full          = make(chan struct{})
		fullOnce      sync.Once
		wg            sync.WaitGroup
		errs          = make([]error, 10)
	)
	for i := range errs {
		wg.Go(func() {
			errs[i] = b.c.RunTask(ctx, fmt.Sprintf("load-%d", i), func(ctx context.Context) error {
				n := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				if n >= 3 {
					fullOnce.Do(func() { close(full) })
				}
				// Hold the slot until three runs hold theirs: a fourth
				// admitted meanwhile would be seen.
				select {
				case <-full:
					return nil
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("RunTask load-%d = %v, want nil", i, err)
		}
	}
	if got := most.Load(); got != 3 {
		t.Errorf("most runs at once = %d, want 3", got)
	}
	var done []runView
	b.api(t, http.MethodPost, "/runs/filter", map[string]any{"tag": "database", "state": "Completed"}, &done)
	if len(done) != 10 {
		t.Errorf("Completed runs = %d, want 10", len(done))
	}
}

func TestNestedRunsShareTheParentsSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 1)
	ctx := allot.WithTags(deadline(t), "database")

	var parentID, childID, childParent string
	err := b.c.RunTask(ctx, "parent", func(ctx context.Context) error {
		parentID, _ = allot.RunFrom(ctx)
		return b.c.RunTask(ctx, "child", func(ctx context.Context) error {
			childID, _ = allot.RunFrom(ctx)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("RunTask = %v, want nil", err)
	}
	child := b.run(t, childID)
	if child.ParentID != nil {
		childParent = *child.ParentID
	}
	if childParent != parentID {
		t.Errorf("child's parent_id = %q, want %q", childParent, parentID)
	}
	for _, r := range []runView{b.run(t, parentID), child} {
		if r.State != "Completed" {
			t.Errorf("run %s state = %s, want Completed", r.ID, r.State)
		}
		if diff := cmp.Diff([]string{"database"}, r.Tags); diff != "" {
			t.Errorf("run %s tags (-want +got):\n%s", r.ID, diff)
		}
	}
}

func TestWithoutTagsDropsAnInheritedTag(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 1)
	ctx := allot.WithTags(deadline(t), "database", "reports")

	var childID string
	err := b.c.RunTask(ctx, "holder", func(hctx context.Context) error {
		// Not nested (ctx has no run): it would have to wait for the
		// holder's slot if it still carried "database"; CancelNew makes
		// that fail instead of hang.
		return b.c.RunTask(allot.WithoutTags(ctx, "database"), "report", func(ctx context.Context) error {
			childID, _ = allot.RunFrom(ctx)
			return nil
		}, allot.CancelNew())
	})
	if err != nil {
		t.Fatalf("RunTask = %v, want nil", err)
	}
	r := b.run(t, childID)
	if diff := cmp.Diff([]string{"reports"}, r.Tags); diff != "" {
		t.Errorf("tags of the run without database (-want +got):\n%s", diff)
	}
	if r.ParentID != nil {
		t.Errorf("parent_id = %q, want none", *r.ParentID)
	}
}

func TestRunEndsInTheFunctionsState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	boom := errors.New("boom: 3 rows rejected")

	t.Run("failed", func(t *testing.T) {
		t.Parallel()
		var id string
		err := b.c.RunTask(t.Context(), "fails", func(ctx context.Context) error {
			id, _ = allot.RunFrom(ctx)
			return boom
		}, allot.RunTags("x"))
		if !errors.Is(err, boom) {
			t.Fatalf("RunTask = %v, want %v", err, boom)
		}
		if r := b.run(t, id); r.State != "Failed" || r.message() != boom.Error() {
			t.Errorf("run = %s %q, want Failed %q", r.State, r.message(), boom)
		}
	})
	t.Run("cancelled by the caller", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		var id string
		err := b.c.RunFlow(ctx, "cancelled", func(ctx context.Context) error {
			id, _ = allot.RunFrom(ctx)
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RunFlow = %v, want context.Canceled", err)
		}
		if r := b.run(t, id); r.State != "Cancelled" || r.Kind != "flow" {
			t.Errorf("run = %s %s, want a Cancelled flow", r.Kind, r.State)
		}
	})
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		var id string
		got := func() (p any) {
			defer func() { p = recover() }()
			_ = b.c.RunTask(t.Context(), "panics", func(ctx context.Context) error {
				id, _ = allot.RunFrom(ctx)
				panic("kaboom")
			})
			return nil
		}()
		if got != "kaboom" {
			t.Errorf("recovered %v, want kaboom", got)
		}
		if r := b.run(t, id); r.State != "Crashed" || !strings.Contains(r.message(), "kaboom") {
			t.Errorf("run = %s %q, want Crashed with the panic", r.State, r.message())
		}
	})
}

func TestCancelNewOnAFullLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 1)
	ctx := allot.WithTags(deadline(t), "database")

	var second error
	err := b.c.RunTask(ctx, "holder", func(context.Context) error {
		// ctx, not the holder's: a separate run, not a child.
		second = b.c.RunTask(ctx, "second", func(context.Context) error {
			t.Error("second run ran while the limit was full")
			return nil
		}, allot.CancelNew())
		return nil
	})
	if err != nil {
		t.Fatalf("holder RunTask = %v, want nil", err)
	}
	if !errors.Is(second, allot.ErrRunNotStarted) {
		t.Fatalf("second RunTask = %v, want ErrRunNotStarted", second)
	}
	var re *allot.RunError
	if !errors.As(second, &re) {
		t.Fatalf("second RunTask = %T, want *allot.RunError", second)
	}
	if re.State != "Cancelled" || re.RunID == "" {
		t.Errorf("RunError = %+v, want a Cancelled run", re)
	}
	if r := b.run(t, re.RunID); r.State != "Cancelled" {
		t.Errorf("second run state = %s, want Cancelled", r.State)
	}
}

func TestRunTaskStopsWhenTheRunIsLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.tagLimit(t, "database", 1)
	ctx := allot.WithTags(deadline(t), "database")

	var cause error
	err := b.c.RunTask(ctx, "revoked", func(ctx context.Context) error {
		// A reset revokes the run's slot: its next heartbeat is refused.
		b.api(t, http.MethodPost, "/concurrency_limits/tag/database/reset", map[string]any{}, nil)
		<-ctx.Done()
		cause = context.Cause(ctx)
		return ctx.Err()
	}, allot.RunLeaseDuration(time.Second))
	if !errors.Is(err, allot.ErrLeaseLost) {
		t.Errorf("RunTask = %v, want ErrLeaseLost", err)
	}
	if !errors.Is(cause, allot.ErrLeaseLost) {
		t.Errorf("cause of fn's context = %v, want ErrLeaseLost", cause)
	}
}

func ExampleClient_RunTask() {
	client, err := allot.NewClient()
	if err != nil {
		panic(err)
	}
	// Every run started with ctx carries the tag "database"; the server runs
	// at most as many of them at once as the tag's limit allows.
	ctx := allot.WithTags(context.Background(), "database")
	err = client.RunTask(ctx, "load-orders", func(ctx context.Context) error {
		// A nested run is the child of load-orders and shares its slot.
		return client.RunTask(ctx, "load-lines", func(ctx context.Context) error {
			return nil
		})
	})
	if errors.Is(err, allot.ErrRunNotStarted) {
		fmt.Println("the run was cancelled before it ran")
	}
}

// TestRunTaskEndsFailedWithALongNonASCIIError is the regression test of a
// run that could never end: its 4,000-byte error (2,000 characters of two
// bytes each) was trimmed to 2,048 characters, the server refused more than
// 2,048 bytes, and the run stayed Running until it was Crashed.
func TestRunTaskEndsFailedWithALongNonASCIIError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	boom := errors.New(strings.Repeat("é", 2000))
	var id string
	err := b.c.RunTask(deadline(t), "fails long", func(ctx context.Context) error {
		id, _ = allot.RunFrom(ctx)
		return boom
	}, allot.RunTags("x"))
	if !errors.Is(err, boom) {
		t.Fatalf("RunTask = %v, want %v", err, boom)
	}
	// 2,045 bytes leave room for "…"; the cut falls inside an "é", so
	// 1,022 of them are kept.
	want := strings.Repeat("é", 1022) + "…"
	r := b.run(t, id)
	if msg := r.message(); r.State != "Failed" || msg != want || !utf8.ValidString(msg) {
		t.Errorf("run = %s with a message of %d bytes (%.20q…), want Failed with the error's first 2,044 bytes and \"…\" (%d bytes)",
			r.State, len(msg), msg, len(want))
	}
	if logs := b.logs.String(); strings.Contains(logs, "could not end the run") {
		t.Errorf("the SDK logged a failure to end the run:\n%s", logs)
	}
}

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
