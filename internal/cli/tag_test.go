package cli_test

import (
	"regexp"
	"testing"
)

// TestTagInspectAndReset checks that inspect shows the task runs holding
// a tag's limit and the line waiting for it, and that reset revokes the
// holders so that the line goes in.
func TestTagInspectAndReset(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	const run = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	if _, err := srv.c.CreateTagLimit(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.c.ResetTagLimit(t.Context(), "db", []string{run}); err != nil {
		t.Fatal(err)
	}
	waiter := start(t, srv.allotCmd(t, "run", "--tag", "db", "--holder-id", "waiter", "--", "true"))
	eventually(t, "allot run waits in line", func() bool {
		l, err := srv.c.GetTagLimit(t.Context(), "db")
		return err == nil && l.Waiting == 1
	})

	r := srv.run(t, "concurrency-limit", "inspect", "db")
	if r.code != 0 {
		t.Fatalf("inspect: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		`(?m)^Active slots: +1/1$`,
		`(?m)^Waiting: +1$`,
		`(?m)^Active Task Run IDs:\nTASK RUN ID +SINCE +EXPIRES\n` + run + ` +\d+s ago +in `,
		`(?m)^Waiters:\nPOSITION +SLOTS +MODE +HOLDER +WAITING SINCE\n1 +1 +concurrency +process:waiter +\d+s ago$`,
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
