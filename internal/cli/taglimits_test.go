package cli_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// taskRun is a run as the runs API returns it.
type taskRun struct {
	ID    string   `json:"id"`
	Kind  string   `json:"kind"`
	Name  string   `json:"name"`
	Tags  []string `json:"tags"`
	State string   `json:"state"`
}

// runs lists the runs with a tag in a state, oldest first.
func (s *serverProc) runs(t *testing.T, tag, state string) []taskRun {
	t.Helper()
	body, err := json.Marshal(map[string]string{"tag": tag, "state": state})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/runs/filter", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []taskRun
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("filter runs: status %d, %v", resp.StatusCode, err)
	}
	return out
}

// TestTagInspectAndReset checks that inspect shows the task runs holding
// a tag's limit and the line waiting for it, and that reset revokes the
// holders so that the line goes in.
func TestTagInspectAndReset(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	const run = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	if _, err := srv.c.Tags().Create(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.c.Tags().Reset(t.Context(), "db", []string{run}); err != nil {
		t.Fatal(err)
	}
	waiter := start(t, srv.allotCmd(t, "run", "--tag", "db", "--", "true"))
	eventually(t, "allot run waits in line", func() bool {
		l, err := srv.c.Tags().Get(t.Context(), "db")
		return err == nil && l.Waiting == 1
	})

	r := srv.run(t, "concurrency-limit", "inspect", "db")
	if r.code != 0 {
		t.Fatalf("inspect: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		`(?m)^Active slots: +1/1$`,
		`(?m)^Waiting: +1$`,
		// The override holder has no run record, so no name; the waiter
		// is allot run's task run, named after its command.
		`(?m)^Active Task Run IDs:\nNAME +TASK RUN ID +SINCE +EXPIRES\n- +` + run + ` +\d+s ago +in `,
		// The same sentence as the web UI's, from the server.
		"(?m)^Why the first in line waits: needs 1 slot of `tag:db`, 0 free; `tag:db` frees next when lease …[0-9a-f]{8} held by task_run " + run + ` is released or expires in (\d+[hms])+\.$`,
		`(?m)^Waiters:\nPOSITION +NAME +TASK RUN ID / HOLDER +WAITING SINCE\n1 +true +[0-9a-f-]{36} +\d+s ago$`,
	} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("inspect stdout:\n%s\ngot no match for %s", r.stdout, want)
		}
	}

	r = srv.run(t, "concurrency-limit", "reset", "db")
	if r.code != 0 || r.stdout != "Reset concurrency limit set on the tag: db\n" || r.stderr != "Revoked 1 lease(s) holding it.\n" {
		t.Errorf("reset: got exit %d, stdout %q, stderr %q; want 0, Prefect's message and one lease revoked", r.code, r.stdout, r.stderr)
	}
	if r := waiter.wait(t); r.code != 0 {
		t.Errorf("allot run after the reset: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
}

// TestRunTagRecordsTaskRun checks that allot run --tag runs the command as
// a task run with the tags: Completed or Failed by the exit code, and
// stopped when a reset revokes its slot.
func TestRunTagRecordsTaskRun(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	if _, err := srv.c.Tags().Create(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	r := srv.run(t, "run", "--tag", "db", "--tag", "etl", "--", "sh", "-c", `echo "$ALLOT_TASK_RUN_ID"`)
	if r.code != 0 {
		t.Fatalf("allot run: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	done := srv.runs(t, "db", "Completed")
	if len(done) != 1 {
		t.Fatalf("got %d Completed runs tagged db, want 1", len(done))
	}
	want := taskRun{ID: strings.TrimSpace(r.stdout), Kind: "task", Name: "sh", Tags: []string{"db", "etl"}, State: "Completed"}
	if diff := cmp.Diff(want, done[0]); diff != "" {
		t.Errorf("the run (-want +got):\n%s", diff)
	}

	if r := srv.run(t, "run", "--tag", "db", "--", "sh", "-c", "exit 3"); r.code != 3 {
		t.Errorf("allot run of exit 3: got exit %d, want 3; stderr: %s", r.code, r.stderr)
	}
	if failed := srv.runs(t, "db", "Failed"); len(failed) != 1 {
		t.Errorf("got %d Failed runs tagged db, want 1", len(failed))
	}

	// A reset revokes the running run's slot: its command is stopped.
	p := start(t, srv.allotCmd(t, "run", "--tag", "db", "--lease-duration", "3s", "--", "sleep", "30"))
	eventually(t, "the run holds the slot", func() bool {
		l, err := srv.c.Tags().Get(t.Context(), "db")
		return err == nil && len(l.ActiveSlots) == 1
	})
	res, err := srv.c.Tags().Reset(t.Context(), "db", nil)
	if err != nil || res.Revoked != 1 {
		t.Fatalf("reset: got %+v, %v; want 1 lease revoked", res, err)
	}
	r = p.wait(t)
	if r.code != 4 || !strings.HasSuffix(r.stderr, " was revoked (slot revoked by reset); the command was stopped\n") {
		t.Errorf("allot run after the reset: got exit %d, stderr %q; want 4 and the run's lease revoked", r.code, r.stderr)
	}
	if crashed := srv.runs(t, "db", "Crashed"); len(crashed) != 1 {
		t.Errorf("got %d Crashed runs tagged db, want 1", len(crashed))
	}
}
