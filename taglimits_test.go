package allot_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
)

// increment takes a slot of the limits of keys for the run id through the
// v1 route under base ("/concurrency_limits" or "/label_limits").
func increment(t *testing.T, b *testBundle, base, holderField, id string, keys ...string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"names": keys, holderField: id})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.srv.URL()+base+"/increment", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("increment %v: status %d, want 200", keys, resp.StatusCode)
	}
}

const (
	runA = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	runB = "5b1d7a1e-6f0e-4c55-9a3e-0c2a0f1e9d11"
)

func TestTagLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()

	created, err := b.c.Tags().Create(ctx, "database", 10)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == "" || created.Name != "database" || created.ConcurrencyLimit != 10 || !created.Active {
		t.Errorf("Tags().Create = %+v, want tag database, limit 10, active, an id", created)
	}
	// Creating again updates the limit: same id, new number of slots.
	updated, err := b.c.Tags().Create(ctx, "database", 1)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ID != created.ID || updated.ConcurrencyLimit != 1 {
		t.Errorf("Tags().Create again = id %s limit %d, want id %s limit 1", updated.ID, updated.ConcurrencyLimit, created.ID)
	}
	if _, err := b.c.Tags().Create(ctx, "analytics", 2); err != nil {
		t.Fatal(err)
	}
	// A limit that is not a tag's is not listed.
	b.limit(t, allot.LimitSpec{Name: "plain", Limit: 1})

	before := time.Now().Add(-time.Second)
	increment(t, b, "/concurrency_limits", "task_run_id", runA, "database")
	got, err := b.c.Tags().Get(ctx, "database")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{runA}, got.ActiveSlots); diff != "" {
		t.Errorf("ActiveSlots (-want +got):\n%s", diff)
	}
	if len(got.Holders) != 1 {
		t.Fatalf("got %d holders, want 1", len(got.Holders))
	}
	h := got.Holders[0]
	if h.Holder == nil || h.Holder.ID != runA || h.Since.Before(before) || h.Slots != 1 {
		t.Errorf("holder = %+v (holder %+v), want run %s holding 1 slot since the increment", h, h.Holder, runA)
	}

	ls, err := b.c.Tags().List(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, l := range ls {
		tags = append(tags, l.Name)
	}
	if diff := cmp.Diff([]string{"analytics", "database"}, tags); diff != "" {
		t.Errorf("Tags().List tags (-want +got):\n%s", diff)
	}
	ls, err = b.c.Tags().List(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Name != "database" {
		t.Errorf("Tags().List from offset 1 = %d limits, want database only", len(ls))
	}

	// Reset revokes the holder's lease, then grants the overrides that fit.
	res, err := b.c.Tags().Reset(ctx, "database", []string{runB, runA})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&allot.ResetResult{Revoked: 1, Granted: []string{runB}, Refused: []string{runA}}, res); diff != "" {
		t.Errorf("ResetTagLimit (-want +got):\n%s", diff)
	}
	got, err = b.c.Tags().Get(ctx, "database")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{runB}, got.ActiveSlots); diff != "" {
		t.Errorf("ActiveSlots after reset (-want +got):\n%s", diff)
	}
	res, err = b.c.Tags().Reset(ctx, "database", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&allot.ResetResult{Revoked: 1, Granted: []string{}, Refused: []string{}}, res); diff != "" {
		t.Errorf("ResetTagLimit without overrides (-want +got):\n%s", diff)
	}

	if err := b.c.Tags().Delete(ctx, "database"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Tags().Get(ctx, "database"); !errors.Is(err, allot.ErrLimitNotFound) {
		t.Errorf("Tags().Get after delete: got %v, want ErrLimitNotFound", err)
	}
}

func TestTagLimitErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"get missing", func() error { _, err := b.c.Tags().Get(ctx, "nope"); return err }, allot.ErrLimitNotFound},
		{"reset missing", func() error { _, err := b.c.Tags().Reset(ctx, "nope", nil); return err }, allot.ErrLimitNotFound},
		{"delete missing", func() error { return b.c.Tags().Delete(ctx, "nope") }, allot.ErrLimitNotFound},
		{"delete missing label", func() error { return b.c.Labels().Delete(ctx, "nope") }, allot.ErrNotFound},
		{"negative limit", func() error { _, err := b.c.Tags().Create(ctx, "x", -1); return err }, allot.ErrInvalid},
		{"override not a uuid", func() error {
			if _, err := b.c.Tags().Create(ctx, "y", 1); err != nil {
				return err
			}
			_, err := b.c.Tags().Reset(ctx, "y", []string{"not-a-uuid"})
			return err
		}, allot.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestLabelLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()

	created, err := b.c.Labels().Create(ctx, "gpu", 2)
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != "gpu" || created.ConcurrencyLimit != 2 {
		t.Errorf("Labels().Create = %+v, want label gpu, limit 2", created)
	}
	// A tag limit of the same name is another limit.
	if _, err := b.c.Tags().Create(ctx, "gpu", 5); err != nil {
		t.Fatal(err)
	}
	increment(t, b, "/label_limits", "flow_run_id", runA, "gpu")
	got, err := b.c.Labels().Get(ctx, "gpu")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{runA}, got.ActiveSlots); diff != "" {
		t.Errorf("ActiveSlots (-want +got):\n%s", diff)
	}
	ls, err := b.c.Labels().List(ctx, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Name != "gpu" || ls[0].ID != created.ID {
		t.Errorf("ListLabelLimits = %d limits, want gpu only", len(ls))
	}
	res, err := b.c.Labels().Reset(ctx, "gpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revoked != 1 {
		t.Errorf("Labels().Reset revoked %d, want 1", res.Revoked)
	}
	if err := b.c.Labels().Delete(ctx, "gpu"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Labels().Get(ctx, "gpu"); !errors.Is(err, allot.ErrNotFound) {
		t.Errorf("Labels().Get after delete: got %v, want ErrNotFound", err)
	}
	if tag, err := b.c.Tags().Get(ctx, "gpu"); err != nil || tag.ConcurrencyLimit != 5 {
		t.Errorf("Tags().Get(gpu) after deleting the label limit = %v, %v; want the tag limit of 5", tag, err)
	}
}

// TestTagLimitRefusesAStar is the regression test of Tags().Create(ctx,
// "db*", 1), which created the template tag:db*: a tag (or label) never
// contains '*', whether it names a run's tag or a tag limit, so the name is
// refused and nothing is created.
func TestTagLimitRefusesAStar(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name, field, limit string
		create             func() error
	}{
		{"tag", "tag", "tag:db*", func() error { _, err := b.c.Tags().Create(ctx, "db*", 1); return err }},
		{"label", "label", "label:gpu-*", func() error { _, err := b.c.Labels().Create(ctx, "gpu-*", 1); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.create()
			var ae *allot.APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != allot.CodeInvalidField || ae.Field != tc.field {
				t.Fatalf("create = %v, want 422 %s on field %s", err, allot.CodeInvalidField, tc.field)
			}
			if !errors.Is(err, allot.ErrInvalid) {
				t.Errorf("create = %v, want it to match ErrInvalid", err)
			}
			if l, err := b.c.GetLimit(ctx, tc.limit); !errors.Is(err, allot.ErrLimitNotFound) {
				t.Errorf("GetLimit(%q) = %+v, %v; want no limit", tc.limit, l, err)
			}
		})
	}
}

// TestTagLimitsAllReadsEveryPage: All of both handles reads past the
// server's page of 200, in order, and each limit knows its kind.
func TestTagLimitsAllReadsEveryPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 205
	for _, api := range []allot.TagLimits{b.c.Tags(), b.c.Labels()} {
		t.Run(string(api.Kind()), func(t *testing.T) {
			for i := range n {
				if _, err := api.Create(t.Context(), fmt.Sprintf("k%03d", i), 1); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for l, err := range api.All(t.Context()) {
				if err != nil {
					t.Fatal(err)
				}
				if l.Kind != api.Kind() {
					t.Fatalf("All gave %s limit %q, want kind %s", l.Kind, l.Name, api.Kind())
				}
				got = append(got, l.Name)
			}
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprintf("k%03d", i)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("All (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTagLimitJSONIsTheServers: a TagLimit encodes as the server answers
// it, its name under "tag" or "label", so that what the CLI prints with -o
// json is the server's document, and it decodes back to itself.
func TestTagLimitJSONIsTheServers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		api  allot.TagLimits
		path string
	}{
		{b.c.Tags(), "/concurrency_limits/tag/db"},
		{b.c.Labels(), "/label_limits/label/db"},
	} {
		t.Run(string(tc.api.Kind()), func(t *testing.T) {
			if _, err := tc.api.Create(t.Context(), "db", 3); err != nil {
				t.Fatal(err)
			}
			var server map[string]any
			b.api(t, http.MethodGet, tc.path, nil, &server)
			l, err := tc.api.Get(t.Context(), "db")
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			var ours map[string]any
			if err := json.Unmarshal(data, &ours); err != nil {
				t.Fatal(err)
			}
			// Times are compared as times: the server writes six digits
			// of fractions, Go as few as it needs.
			for _, m := range []map[string]any{server, ours} {
				for _, k := range []string{"created", "updated"} {
					s, _ := m[k].(string)
					at, err := time.Parse(time.RFC3339Nano, s)
					if err != nil {
						t.Fatalf("%s %q: %v", k, s, err)
					}
					m[k] = at
				}
			}
			if diff := cmp.Diff(server, ours); diff != "" {
				t.Errorf("TagLimit's JSON (-server +ours):\n%s", diff)
			}
			var back allot.TagLimit
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(l, &back); diff != "" {
				t.Errorf("decoded back (-want +got):\n%s", diff)
			}
		})
	}
}
