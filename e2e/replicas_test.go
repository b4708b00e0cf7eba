package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
)

// replicaURL is the test database's URL with the tables in schema.
func replicaURL(t *testing.T, schema string) string {
	t.Helper()
	u, err := url.Parse(pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// callRetrying is mustCall for a client that retries 503s, as the SDK
// does: a follower answers 503 while the lead changes hands. It fails the
// test if no other answer comes within 10 s.
func callRetrying(t *testing.T, client *http.Client, method, url string, body, out any, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, err := call(t.Context(), client, method, url, body, out)
		if code != 503 {
			if err != nil || code != want {
				t.Fatalf("%s %s: got %d (%v), want %d", method, url, code, err, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: still 503 after 10s: %v", method, url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasFailOver runs three replicas over one PostgreSQL, takes
// leases through the followers, SIGKILLs or SIGSTOPs the leader, and checks
// that a request through a surviving follower succeeds within a few seconds
// and that every lease acknowledged before is still held. A stopped leader
// that resumes follows: it forwards to the new leader.
func TestReplicasFailOver(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"SIGKILL", "SIGSTOP"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			testReplicasFailOver(t, fault)
		})
	}
}

func testReplicasFailOver(t *testing.T, fault string) {
	_, schema := pgtest.Schema(t)
	u := replicaURL(t, schema)
	var replicas []*server
	for range 3 {
		replicas = append(replicas, startServer(t, t.TempDir(), "", "--database", u, "--leader-lease", "2s"))
	}
	client := &http.Client{Timeout: 10 * time.Second}

	// Exactly one leads; every replica names it.
	var leader *server
	waitFor(t, func() bool {
		leader = nil
		for _, r := range replicas {
			code, _, _ := call(t.Context(), client, "GET", r.url("/ready?role=leader"), nil, nil)
			if code == 200 {
				leader = r
			}
		}
		return leader != nil
	})
	var followers []*server
	for _, r := range replicas {
		_, h, err := call(t.Context(), client, "GET", r.url("/ready"), nil, nil)
		if err != nil {
			t.Fatalf("ready on %s: %v", r.addr, err)
		}
		if got := h.Get("Allot-Leader"); got != leader.addr {
			t.Errorf("%s: Allot-Leader %q, want %q", r.addr, got, leader.addr)
		}
		if r != leader {
			followers = append(followers, r)
			if code, _, _ := call(t.Context(), client, "GET", r.url("/ready?role=leader"), nil, nil); code != 503 {
				t.Errorf("%s follows, but answers %d to ready?role=leader, want 503", r.addr, code)
			}
		}
	}

	// Limits and leases through the followers.
	mustCall(t, client, "POST", followers[0].url("/v2/concurrency_limits/"), map[string]any{"name": "db", "limit": 3}, nil, 201)
	var held []leaseAnswer
	for i := range 2 {
		var a leaseAnswer
		mustCall(t, client, "POST", followers[i%2].url("/v2/concurrency_limits/increment-with-lease"),
			map[string]any{"names": []string{"db"}, "slots": 1, "lease_duration": 600}, &a, 200)
		held = append(held, a)
	}

	killed := time.Now()
	if fault == "SIGKILL" {
		leader.kill()
	} else {
		if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}

	// Through a follower, the service is back within a few seconds, and
	// the acknowledged leases are held.
	var v limitView
	callRetrying(t, client, "GET", followers[0].url("/v2/concurrency_limits/db"), nil, &v, 200)
	t.Logf("service back through a follower %v after the leader's %s", time.Since(killed), fault)
	var ids []string
	for _, h := range v.Holders {
		ids = append(ids, h.LeaseID)
	}
	for _, a := range held {
		if !slices.Contains(ids, a.LeaseID) {
			t.Errorf("lease %s acknowledged before the failover is gone; holders now %v", a.LeaseID, ids)
		}
	}

	// The new leader grants above every token handed out before, and the
	// survivors agree on who it is.
	var next leaseAnswer
	callRetrying(t, client, "POST", followers[1].url("/v2/concurrency_limits/increment-with-lease"),
		map[string]any{"names": []string{"db"}, "slots": 1, "lease_duration": 600}, &next, 200)
	for _, a := range held {
		if next.FencingToken <= a.FencingToken {
			t.Errorf("fencing token after the failover %d, want above %d", next.FencingToken, a.FencingToken)
		}
	}
	_, h0, _ := call(t.Context(), client, "GET", followers[0].url("/ready"), nil, nil)
	_, h1, _ := call(t.Context(), client, "GET", followers[1].url("/ready"), nil, nil)
	if a, b := h0.Get("Allot-Leader"), h1.Get("Allot-Leader"); a != b || a == leader.addr || a == "" {
		t.Errorf("after the failover the survivors name leaders %q and %q, want the same one, not the killed %q", a, b, leader.addr)
	}

	if fault != "SIGSTOP" {
		return
	}
	// The stopped leader resumes: it no longer leads, and forwards.
	if err := leader.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		code, h, _ := call(t.Context(), client, "GET", leader.url("/v2/concurrency_limits/db"), nil, nil)
		return code == 200 && h.Get("Allot-Leader") == h0.Get("Allot-Leader")
	})
	if code, _, _ := call(t.Context(), client, "GET", leader.url("/ready?role=leader"), nil, nil); code != 503 {
		t.Errorf("the resumed old leader answers %d to ready?role=leader, want 503", code)
	}
}

// TestReplicaWaitersKeepTheirPlace puts two `allot run` waiters in line
// through a follower, SIGKILLs the leader, and checks that both ride out
// the change of leader (their requests carry tickets, and waiters with
// tickets are durable) and run in their original order once the holder
// releases.
func TestReplicaWaitersKeepTheirPlace(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	u := replicaURL(t, schema)
	var replicas []*server
	for range 3 {
		replicas = append(replicas, startServer(t, t.TempDir(), "", "--database", u, "--leader-lease", "2s"))
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var leader *server
	waitFor(t, func() bool {
		for _, r := range replicas {
			if code, _, _ := call(t.Context(), client, "GET", r.url("/ready?role=leader"), nil, nil); code == 200 {
				leader = r
				return true
			}
		}
		return false
	})
	var follower *server
	for _, r := range replicas {
		if r != leader {
			follower = r
			break
		}
	}
	mustCall(t, client, "POST", follower.url("/v2/concurrency_limits/"), map[string]any{"name": "x", "limit": 1}, nil, 201)
	var holder leaseAnswer
	mustCall(t, client, "POST", follower.url("/v2/concurrency_limits/increment-with-lease"),
		map[string]any{"names": []string{"x"}, "slots": 1, "lease_duration": 600}, &holder, 200)

	out := filepath.Join(t.TempDir(), "order")
	waiting := func(n int) func() bool {
		return func() bool {
			var v limitView
			code, _, err := call(t.Context(), client, "GET", follower.url("/v2/concurrency_limits/x"), nil, &v)
			return err == nil && code == 200 && v.Waiting == n
		}
	}
	type waiter struct {
		cmd    *exec.Cmd
		stderr *bytes.Buffer
		done   chan struct{}
		err    error
	}
	var ws []*waiter
	for i, name := range []string{"A", "B"} {
		w := &waiter{stderr: new(bytes.Buffer), done: make(chan struct{})}
		w.cmd = exec.Command(binary, "run", "--limit", "x", "--timeout", "2m", "--", "sh", "-c", "echo "+name+" >> "+out)
		w.cmd.Env = append(os.Environ(), "ALLOT_API_URL="+follower.url(""))
		w.cmd.Stderr = w.stderr
		if err := w.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.cmd.Process.Kill(); <-w.done })
		go func() { w.err = w.cmd.Wait(); close(w.done) }()
		ws = append(ws, w)
		pollFor(t, "waiter "+name+" in line", waiting(i+1))
	}
	// Everything committed before this answer is durable, the waiters
	// included: batches are committed in order.
	mustCall(t, client, "POST", follower.url("/v2/concurrency_limits/"), map[string]any{"name": "barrier", "limit": 1}, nil, 201)

	leader.kill()
	pollFor(t, "both waiters back in line under the new leader", waiting(2))
	for _, w := range ws {
		select {
		case <-w.done:
			t.Fatalf("a waiter exited at the change of leader: %v\n%s", w.err, w.stderr)
		default:
		}
	}
	if b, _ := os.ReadFile(out); len(b) != 0 {
		t.Fatalf("commands ran while the holder held the slot: %q", b)
	}
	callRetrying(t, client, "POST", follower.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": holder.LeaseID}, nil, 204)
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

// TestCLIMovesOnToALiveReplica gives the CLI several replicas' URLs in
// ALLOT_API_URL, a dead one and the leader first, SIGKILLs the leader, and
// checks that commands still succeed through the follower listed last.
func TestCLIMovesOnToALiveReplica(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	u := replicaURL(t, schema)
	var replicas []*server
	for range 2 {
		replicas = append(replicas, startServer(t, t.TempDir(), "", "--database", u, "--leader-lease", "2s"))
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var leader, follower *server
	waitFor(t, func() bool {
		for i, r := range replicas {
			if code, _, _ := call(t.Context(), client, "GET", r.url("/ready?role=leader"), nil, nil); code == 200 {
				leader, follower = r, replicas[1-i]
				return true
			}
		}
		return false
	})
	urls := strings.Join([]string{"http://127.0.0.1:1/api", leader.url(""), follower.url("")}, ",")
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "ALLOT_API_URL="+urls)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli("gcl", "create", "db", "--limit", "2"); err != nil {
		t.Fatalf("gcl create through %s: %v\n%s", urls, err, out)
	}
	leader.kill()
	out, err := cli("gcl", "inspect", "db")
	if err != nil {
		t.Fatalf("gcl inspect after the leader's SIGKILL: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Limit:") || !strings.Contains(out, "2") {
		t.Errorf("gcl inspect said %q, want the limit of 2", out)
	}
}
