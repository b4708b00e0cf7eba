package e2e

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWaitersKeepTheirPlaceAcrossARestart puts two `allot run --timeout 2m`
// waiters in line behind a holder, kills the server with SIGKILL, keeps it
// down for a few seconds and starts it again on the same data directory and
// port. Both waiters ride out the outage, keep their places (they are
// durable, with their tickets) and run in their original order once the
// holder releases; both exit 0.
func TestWaitersKeepTheirPlaceAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, dir, "")
	client := &http.Client{}
	mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/"), map[string]any{"name": "x", "limit": 1}, nil, 201)
	var holder leaseAnswer
	mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
		map[string]any{"names": []string{"x"}, "slots": 1, "lease_duration": 600}, &holder, 200)

	out := filepath.Join(t.TempDir(), "order")
	type waiter struct {
		cmd    *exec.Cmd
		stderr *bytes.Buffer
		done   chan struct{} // closed when it exited, with err
		err    error
	}
	waiting := func(n int) func() bool {
		return func() bool {
			var v limitView
			_, _, err := call(t.Context(), client, "GET", srv.url("/v2/concurrency_limits/x"), nil, &v)
			return err == nil && v.Waiting == n
		}
	}
	var ws []*waiter
	for i, name := range []string{"A", "B"} {
		w := &waiter{stderr: new(bytes.Buffer), done: make(chan struct{})}
		w.cmd = exec.Command(binary, "run", "--limit", "x", "--timeout", "2m", "--", "sh", "-c", "echo "+name+" >> "+out)
		w.cmd.Env = append(os.Environ(), "ALLOT_API_URL="+srv.url(""))
		w.cmd.Stderr = w.stderr
		if err := w.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.cmd.Process.Kill(); <-w.done })
		go func() { w.err = w.cmd.Wait(); close(w.done) }()
		ws = append(ws, w)
		pollFor(t, "waiter "+name+" in line", waiting(i+1))
	}
	// Every change committed before this answer is durable, the waiters
	// included: batches are committed in order.
	mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/"), map[string]any{"name": "barrier", "limit": 1}, nil, 201)

	killed := time.Now()
	srv.kill()
	const down = 5 * time.Second // longer than one request's own retries
	time.Sleep(down)
	srv = startServer(t, dir, srv.addr)
	t.Logf("server down for %v (SIGKILL to listening again)", time.Since(killed).Round(time.Millisecond))

	for _, w := range ws {
		select {
		case <-w.done:
			t.Fatalf("a waiter exited while the server was down: %v\n%s", w.err, w.stderr)
		default:
		}
	}
	// Both are back in line, in their places, before the holder leaves;
	// their clients reconnect to them within the grace.
	pollFor(t, "both waiters restored in line", waiting(2))
	if b, _ := os.ReadFile(out); len(b) != 0 {
		t.Fatalf("commands ran while the holder held the slot: %q", b)
	}
	mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": holder.LeaseID}, nil, 204)
	for i, w := range ws {
		select {
		case <-w.done:
			if w.err != nil {
				t.Fatalf("waiter %d: %v\n%s", i, w.err, w.stderr)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("waiter %d did not finish within 60 s of the release\n%s", i, w.stderr)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "A\nB" {
		t.Errorf("ran in order %q, want A then B", got)
	}
}

// pollFor polls cond until it holds, failing the test after a minute: a
// race-built allot starting on a loaded machine can take seconds.
func pollFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
