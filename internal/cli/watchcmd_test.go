package cli_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/allot-dev/allot"
)

// TestWatch runs `allot watch db` and `allot watch -o json` against a
// server while a scripted sequence changes a limit, grants, releases and
// revokes leases, and runs a task that takes the limit; each line is
// checked, and the events of another limit are filtered out.
func TestWatch(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	ctx := t.Context()
	srv.createLimit(t, "db", 2)
	srv.createLimit(t, "other", 1)
	human := start(t, srv.allotCmd(t, "watch", "db"))
	js := start(t, srv.allotCmd(t, "watch", "-o", "json"))
	for _, p := range []*proc{human, js} {
		eventually(t, "watch is streaming", func() bool { return strings.Contains(p.stderr.String(), "Watching") })
	}

	if err := srv.c.UpdateLimit(ctx, "db", allot.LimitUpdate{Limit: ptr(3)}); err != nil {
		t.Fatal(err)
	}
	l, err := srv.c.Acquire(ctx, []string{"db"}, allot.Holder("process", "etl-7", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	o, err := srv.c.Acquire(ctx, []string{"other"}, allot.Holder("process", "elsewhere", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Release(context.WithoutCancel(ctx))
	l, err = srv.c.Acquire(ctx, []string{"db"}, allot.Holder("process", "etl-8", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.c.RevokeLease(ctx, l.ID(), "maintenance"); err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if err := srv.c.RunTask(ctx, "nightly", func(context.Context) error { return nil }, allot.RunLimits(1, "db")); err != nil {
		t.Fatal(err)
	}

	wantHuman := []string{
		`limit +db changed`,
		`granted +db  lease [0-9a-f-]{36}  process:etl-7  1 slot\(s\)  fence 1`,
		`released +db  lease [0-9a-f-]{36}  process:etl-7  1 slot\(s\)  fence 1  \(.+\)`,
		// Fencing tokens are global: the grant on other took 2.
		`granted +db  lease [0-9a-f-]{36}  process:etl-8  1 slot\(s\)  fence 3`,
		`revoked +db  lease [0-9a-f-]{36}  process:etl-8  1 slot\(s\)  fence 3  \(maintenance\)`,
		`run +task run nightly [0-9a-f-]{36} → Pending  \[db\]`,
		`granted +db  lease [0-9a-f-]{36}  task_run:[0-9a-f-]{36}  1 slot\(s\)  fence 4`,
		`run +task run nightly [0-9a-f-]{36} → Running  \[db\]`,
		`released +db  lease [0-9a-f-]{36}  task_run:[0-9a-f-]{36}  1 slot\(s\)  fence 4  \(its run ended Completed\)`,
		`run +task run nightly [0-9a-f-]{36} → Completed  \[db\]`,
	}
	var lines []string
	eventually(t, "watch prints the sequence", func() bool {
		lines = strings.Split(strings.TrimSpace(human.stdout.String()), "\n")
		return len(lines) >= len(wantHuman) && strings.Contains(human.stdout.String(), "→ Completed")
	})
	for i, w := range wantHuman {
		if i >= len(lines) || !regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  `+w+`$`).MatchString(lines[i]) {
			t.Errorf("line %d: got %q, want %s\nall:\n%s", i+1, at(lines, i), w, human.stdout)
		}
	}
	if strings.Contains(human.stdout.String(), "elsewhere") {
		t.Errorf("the events of another limit were printed:\n%s", human.stdout)
	}

	// JSON lines: every event, each an object with its kind.
	eventually(t, "watch -o json prints the sequence", func() bool { return strings.Contains(js.stdout.String(), `"Completed"`) })
	kinds := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(js.stdout.String()), "\n") {
		var e struct {
			Event  string   `json:"event"`
			Limits []string `json:"limits"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		kinds[e.Event]++
	}
	if kinds["limit"] != 1 || kinds["granted"] != 4 || kinds["released"] != 2 || kinds["revoked"] != 1 || kinds["run"] != 3 {
		t.Errorf("JSON events by kind: %v", kinds)
	}

	for _, p := range []*proc{human, js} {
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGINT)
		if r := p.wait(t); r.code != 0 {
			t.Errorf("watch after Ctrl-C: exit %d, want 0; stderr %s", r.code, r.stderr)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func at(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return ""
}

// TestWatchFailsWhenServerGoes checks that a watch whose server goes away
// says so and exits 1, rather than looking like a quiet stream.
func TestWatchFailsWhenServerGoes(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	w := start(t, srv.allotCmd(t, "watch"))
	eventually(t, "watch is streaming", func() bool { return strings.Contains(w.stderr.String(), "Watching") })
	srv.stop()
	r := w.wait(t)
	if r.code != 1 || !strings.Contains(r.stderr, "watch:") {
		t.Errorf("watch after the server stopped: exit %d, stderr %q; want 1 and the reason", r.code, r.stderr)
	}
}
