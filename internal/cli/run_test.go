package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/cli"
)

// TestRunNeverOverlaps starts five allot runs at once on a limit of one
// slot; each command writes when it starts and ends. No two may overlap.
func TestRunNeverOverlaps(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	log := filepath.Join(t.TempDir(), "log")
	const n = 5
	script := fmt.Sprintf(`echo "start $(date +%%s%%N)" >> %[1]s; sleep 0.2; echo "end $(date +%%s%%N)" >> %[1]s`, log)
	var cmds []*proc
	for range n {
		cmds = append(cmds, start(t, srv.allotCmd(t, "run", "--limit", "x", "--", "sh", "-c", script)))
	}
	for i, c := range cmds {
		if r := c.wait(t); r.code != 0 {
			t.Errorf("allot run %d: got exit %d, want 0; stderr: %s", i, r.code, r.stderr)
		}
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ start, end int64 }
	var spans []span
	for line := range strings.Lines(string(data)) {
		kind, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		ns, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			t.Fatalf("log line %q: want \"start|end NANOSECONDS\"", line)
		}
		switch kind {
		case "start":
			spans = append(spans, span{start: ns})
		case "end":
			if len(spans) == 0 || spans[len(spans)-1].end != 0 {
				t.Fatalf("log:\n%s\nan end without its start: two commands overlapped", data)
			}
			spans[len(spans)-1].end = ns
		}
	}
	if len(spans) != n {
		t.Fatalf("log:\n%s\ngot %d runs, want %d", data, len(spans), n)
	}
	slices.SortFunc(spans, func(a, b span) int { return int(a.start - b.start) })
	for i := 1; i < n; i++ {
		if spans[i].start < spans[i-1].end {
			t.Errorf("run %d started at %d, before run %d ended at %d: they overlapped", i, spans[i].start, i-1, spans[i-1].end)
		}
	}
}

// TestRunExitCode checks that the command's exit code passes through.
func TestRunExitCode(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	for i, tc := range []struct {
		name    string
		command []string
		want    int
	}{
		{"success", []string{"true"}, 0},
		{"exit 7", []string{"sh", "-c", "exit 7"}, 7},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"not found", []string{"./no-such-command"}, 127},
	} {
		// A limit per case: the cases run in parallel, and one's holder
		// must not count as another's.
		limit := fmt.Sprintf("x%d", i)
		srv.createLimit(t, limit, 10)
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := srv.run(t, append([]string{"run", "--limit", limit, "--"}, tc.command...)...)
			if r.code != tc.want {
				t.Errorf("got exit %d, want %d; stderr: %s", r.code, tc.want, r.stderr)
			}
			if h := srv.holders(t, limit); h != 0 {
				t.Errorf("after allot run: got %d holders, want 0", h)
			}
		})
	}
}

// TestRunKilledFreesSlot kills allot run with SIGKILL: it cannot release,
// so its slot comes back when its lease expires, within its lease duration.
func TestRunKilledFreesSlot(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--lease-duration", "2s", "--", "sleep", "60"))
	eventually(t, "allot run holds the slot", func() bool { return srv.holders(t, "x") == 1 })
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	r := srv.run(t, "acquire", "x", "--timeout", "10s")
	took := time.Since(killed)
	if r.code != 0 {
		t.Fatalf("allot acquire after the kill: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	if took > 4*time.Second {
		t.Errorf("the slot came back %s after the kill, want within the lease duration (2s) and a little", took)
	}
}

// TestRunSIGTERM sends SIGTERM to allot run: the command gets it, and the
// lease is released when it exits.
func TestRunSIGTERM(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	dir := t.TempDir()
	ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
	script := fmt.Sprintf(`trap 'echo TERM > %s; exit 0' TERM; touch %s; while :; do sleep 0.05; done`, got, ready)
	run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--", "sh", "-c", script))
	eventually(t, "the command runs", func() bool { _, err := os.Stat(ready); return err == nil })
	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := run.wait(t)
	if r.code != 0 {
		t.Errorf("allot run: got exit %d, want 0 (the command's); stderr: %s", r.code, r.stderr)
	}
	if h := srv.holders(t, "x"); h != 0 {
		t.Errorf("right after allot run exited: got %d holders, want 0", h)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != "TERM\n" {
		t.Errorf("the command's record of the signal: got %q (%v), want %q", b, err, "TERM\n")
	}
}

// TestRunInterruptedWhileWaiting sends SIGINT to allot run while it
// waits in line: it leaves the line and exits 130 without running the
// command.
func TestRunInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	held, err := srv.c.Acquire(t.Context(), []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())
	run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--", "echo", "ran"))
	waiting := func() int {
		l, err := srv.c.GetLimit(t.Context(), "x")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Waiters)
	}
	eventually(t, "allot run waits in line", func() bool { return waiting() == 1 })
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := run.wait(t)
	if r.code != 128+int(syscall.SIGINT) || r.stdout != "" {
		t.Errorf("got exit %d, stdout %q; want exit %d and no output", r.code, r.stdout, 128+int(syscall.SIGINT))
	}
	if want := "allot: interrupted by SIGINT before the command started\n"; r.stderr != want {
		t.Errorf("stderr: got %q, want %q", r.stderr, want)
	}
	eventually(t, "the line is empty", func() bool { return waiting() == 0 })
}

// TestRunLeaseLost stops the server under a running command: the lease
// cannot be renewed, so it is lost; allot terminates the command and
// exits 4.
func TestRunLeaseLost(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	dir := t.TempDir()
	ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
	script := fmt.Sprintf(`trap 'echo TERM > %s; exit 0' TERM; touch %s; while :; do sleep 0.05; done`, got, ready)
	run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--lease-duration", "2s", "--", "sh", "-c", script))
	eventually(t, "the command runs", func() bool { _, err := os.Stat(ready); return err == nil })
	srv.stop()
	r := run.wait(t)
	if r.code != 4 {
		t.Errorf("allot run: got exit %d, want 4", r.code)
	}
	if !strings.Contains(r.stderr, "\nallot: lease lost: ") || !strings.HasSuffix(r.stderr, "; the command was stopped\n") {
		t.Errorf("stderr: got %q, want a last line \"allot: lease lost: …; the command was stopped\"", r.stderr)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != "TERM\n" {
		t.Errorf("the command's record of SIGTERM: got %q (%v), want %q", b, err, "TERM\n")
	}
}

// TestJSONOutput checks that every -o json parses, with the fields
// scripts rely on.
func TestJSONOutput(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	ok := func(args ...string) string {
		t.Helper()
		r := srv.run(t, args...)
		if r.code != 0 {
			t.Fatalf("allot %s: got exit %d, want 0; stderr: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	decode := func(s string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(s), v); err != nil {
			t.Fatalf("decode %q: %v", s, err)
		}
	}

	var empty []allot.Limit
	decode(ok("gcl", "ls", "-o", "json"), &empty)
	if empty == nil || len(empty) != 0 {
		t.Errorf("gcl ls -o json of no limits: got %v, want []", empty)
	}
	ok("gcl", "create", "a", "--limit", "2")
	ok("concurrency-limit", "create", "db", "3")

	var lease struct {
		LeaseID      string           `json:"lease_id"`
		FencingToken uint64           `json:"fencing_token"`
		Expires      time.Time        `json:"expires"`
		Limits       []allot.LimitRef `json:"limits"`
	}
	decode(ok("acquire", "a", "-o", "json", "--lease-duration", "1m"), &lease)
	if lease.LeaseID == "" || lease.FencingToken == 0 || time.Until(lease.Expires) < 30*time.Second ||
		len(lease.Limits) != 1 || lease.Limits[0].Name != "a" {
		t.Errorf("acquire -o json: got %+v, want a lease of limit a expiring in about 1m", lease)
	}

	var ls []allot.Limit
	decode(ok("gcl", "ls", "-o", "json"), &ls)
	var names []string
	for _, l := range ls {
		names = append(names, l.Name)
	}
	if diff := cmp.Diff([]string{"a", "tag:db"}, names); diff != "" {
		t.Errorf("gcl ls -o json names (-want +got):\n%s", diff)
	}

	var l allot.Limit
	decode(ok("gcl", "inspect", "a", "-o", "json"), &l)
	if l.Name != "a" || l.Limit != 2 || l.ActiveSlots != 1 || len(l.Holders) != 1 || l.Holders[0].LeaseID != lease.LeaseID {
		t.Errorf("gcl inspect -o json: got %+v, want limit a of 2 held by lease %s", l, lease.LeaseID)
	}

	var tl allot.TagLimit
	decode(ok("concurrency-limit", "inspect", "db", "-o", "json"), &tl)
	if tl.Name != "db" || tl.ConcurrencyLimit != 3 || tl.ActiveSlots == nil || tl.ID == "" {
		t.Errorf("concurrency-limit inspect -o json: got %+v, want tag db of 3 with active_slots []", tl)
	}
	var tls []allot.TagLimit
	decode(ok("concurrency-limit", "ls", "-o", "json"), &tls)
	if len(tls) != 1 || tls[0].Name != "db" {
		t.Errorf("concurrency-limit ls -o json: got %+v, want the tag db only", tls)
	}
	var empty2 []allot.TagLimit
	decode(ok("label-limit", "ls", "-o", "json"), &empty2)
	if empty2 == nil || len(empty2) != 0 {
		t.Errorf("label-limit ls -o json of no limits: got %v, want []", empty2)
	}
	ok("label-limit", "create", "gpu", "2")
	var ll allot.TagLimit
	decode(ok("label-limit", "inspect", "gpu", "-o", "json"), &ll)
	if ll.Name != "gpu" || ll.ConcurrencyLimit != 2 || ll.ID == "" {
		t.Errorf("label-limit inspect -o json: got %+v, want label gpu of 2", ll)
	}
}

// TestRunReportsWaitOnTerminal runs allot run in this process with a
// terminal for stderr: while it waits, it says where it stands and who
// holds the slot.
func TestRunReportsWaitOnTerminal(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	held, err := srv.c.Acquire(t.Context(), []string{"x"}, allot.Holder("process", "blocker", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())
	var stdout, stderr syncBuffer
	env := cli.Env{
		Stdin: bytes.NewReader(nil), Stdout: &stdout, Stderr: &stderr,
		Getenv:           func(string) string { return "" },
		StderrIsTerminal: func() bool { return true },
		StatusInterval:   20 * time.Millisecond,
	}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(t.Context(), []string{"--api-url", srv.url, "run", "--limit", "x", "--holder-id", "me",
			"--", "echo", "done"}, env)
	}()
	want := "allot: waiting for 'x': position 1 of 1 in line; 1/1 slots in use, held by process:blocker (1 slot(s) for "
	eventually(t, "allot run reports its wait", func() bool { return strings.Contains(stderr.String(), want) })
	if err := held.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("allot run: got exit %d, want 0; stderr: %s", c, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("allot run did not finish in 15s after the slot was released")
	}
	if got := stdout.String(); got != "done\n" {
		t.Errorf("stdout: got %q, want %q", got, "done\n")
	}
}

// TestRunLimitFlags checks the usage errors of allot run's flags.
func TestRunLimitFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"zero slots", []string{"--limit", "a", "--slots", "0", "--", "true"}, "--slots 0: must be at least 1"},
		{"empty name", []string{"--limit", "", "--", "true"}, "the name is empty"},
		{"no limit", []string{"--", "true"}, "at least one --limit"},
		{"negative timeout", []string{"--limit", "a", "--timeout", "-1s", "--", "true"}, "--timeout -1s: must not be negative"},
		{"zero lease", []string{"--limit", "a", "--lease-duration", "0s", "--", "true"}, "must be positive"},
		{"tag and label", []string{"--tag", "a", "--label", "b", "--", "true"}, "cannot be used together"},
		{"name without run", []string{"--limit", "a", "--name", "n", "--", "true"}, "--name names a task or flow run"},
		{"strict and allow-missing", []string{"--limit", "a", "--strict", "--allow-missing", "--", "true"}, "contradict"},
		{"no command", []string{"--limit", "a"}, "requires at least 1 arg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr syncBuffer
			code := cli.Main(t.Context(), append([]string{"--api-url", "http://127.0.0.1:1/api", "run"}, tc.args...),
				cli.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code != cli.ExitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("got exit %d, stderr %q; want exit %d and %q", code, stderr.String(), cli.ExitUsage, tc.want)
			}
		})
	}
}

// proc is an allot process started in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error // cmd.Wait's, once done is closed
}

// start starts cmd (from allotCmd); when t ends its process group is
// killed and waited for.
func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

// wait waits for the process to exit, at most 30 s.
func (p *proc) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("allot did not exit in 30s; stderr: %s", p.stderr)
	}
	return result{code: exitCode(t, p.err), stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// TestRunNameAndLabel checks that --name names the task run (not the
// command) and that --label runs the command as a flow run holding the
// label's limit.
func TestRunNameAndLabel(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	if _, err := srv.c.Tags().Create(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.c.Labels().Create(t.Context(), "gpu", 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     string
		want    allot.Run
		holding string // the limit the run holds while the command runs
	}{
		{"task named", []string{"--tag", "db", "--name", "nightly-load"}, "ALLOT_TASK_RUN_ID",
			allot.Run{Kind: "task", Name: "nightly-load", Tags: []string{"db"}, State: allot.StateCompleted}, "tag:db"},
		{"task named after its command", []string{"--tag", "db"}, "ALLOT_TASK_RUN_ID",
			allot.Run{Kind: "task", Name: "sh", Tags: []string{"db"}, State: allot.StateCompleted}, "tag:db"},
		{"flow run", []string{"--label", "gpu", "--name", "train"}, "ALLOT_FLOW_RUN_ID",
			allot.Run{Kind: "flow", Name: "train", Tags: []string{"gpu"}, State: allot.StateCompleted}, "label:gpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the limits of one slot are shared.
			script := fmt.Sprintf(`echo "$%s"; allot gcl inspect %s -o json`, tc.env, tc.holding)
			cmd := srv.allotCmd(t, append(append([]string{"run"}, tc.args...), "--", "sh", "-c", script)...)
			cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if code := exitCode(t, cmd.Run()); code != 0 {
				t.Fatalf("got exit %d, want 0; stderr: %s", code, errb.String())
			}
			id, inspect, _ := strings.Cut(out.String(), "\n")
			run, err := srv.c.GetRun(t.Context(), id)
			if err != nil {
				t.Fatalf("get run %q: %v", id, err)
			}
			got := allot.Run{Kind: run.Kind, Name: run.Name, Tags: run.Tags, State: run.State}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("run (-want +got):\n%s", diff)
			}
			var l allot.Limit
			if err := json.Unmarshal([]byte(inspect), &l); err != nil {
				t.Fatalf("inspect -o json: %v: %s", err, inspect)
			}
			if len(l.Holders) != 1 || l.Holders[0].Holder == nil || l.Holders[0].Holder.ID != id {
				t.Errorf("holders of %s while the command ran: got %+v, want the run %s", tc.holding, l.Holders, id)
			}
		})
	}
}

// TestRunTagReportsWaitOnTerminal checks that allot run --tag says, on a
// terminal, where its run stands while the tag's limit is full.
func TestRunTagReportsWaitOnTerminal(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	if _, err := srv.c.Tags().Create(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	blocked := make(chan error, 1)
	var blockerID string
	holding := make(chan struct{})
	go func() {
		blocked <- srv.c.RunTask(context.Background(), "blocker", func(ctx context.Context) error {
			blockerID, _ = allot.RunFrom(ctx)
			close(holding)
			<-release
			return nil
		}, allot.RunTags("db"))
	}()
	<-holding
	var stdout, stderr syncBuffer
	env := cli.Env{
		Stdin: bytes.NewReader(nil), Stdout: &stdout, Stderr: &stderr,
		Getenv:           func(string) string { return "" },
		StderrIsTerminal: func() bool { return true },
		StatusInterval:   20 * time.Millisecond,
	}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(t.Context(), []string{"--api-url", srv.url, "run", "--tag", "db", "--", "echo", "done"}, env)
	}()
	want := "allot: waiting for tag 'db': position 1 of 1 in line; 1/1 slots in use, held by task_run:" + blockerID
	eventually(t, "allot run --tag reports its wait", func() bool { return strings.Contains(stderr.String(), want) })
	close(release)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("allot run: got exit %d, want 0; stderr: %s", c, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("allot run did not finish in 15s after the tag's slot was freed")
	}
	if got := stdout.String(); got != "done\n" {
		t.Errorf("stdout: got %q, want %q", got, "done\n")
	}
}

// TestRunTagAndLimitOneWait checks that allot run --tag T --limit L is one
// all-or-nothing wait: while L is full the run holds no slot of T, and once
// L is free the command runs holding both, under the run's lease.
func TestRunTagAndLimitOneWait(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	if _, err := srv.c.Tags().Create(t.Context(), "db", 1); err != nil {
		t.Fatal(err)
	}
	srv.createLimit(t, "warehouse", 1)
	blocker, err := srv.c.Acquire(t.Context(), []string{"warehouse"}, allot.Holder("process", "blocker", nil))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	script := fmt.Sprintf(`echo "$ALLOT_LEASE_ID $ALLOT_TASK_RUN_ID" > %s`, out)
	run := start(t, srv.allotCmd(t, "run", "--tag", "db", "--limit", "warehouse", "--", "sh", "-c", script))
	eventually(t, "the run waits for warehouse", func() bool {
		l, err := srv.c.GetLimit(t.Context(), "warehouse")
		return err == nil && len(l.Waiters) == 1 && l.Waiters[0].Holder != nil && l.Waiters[0].Holder.Kind == "task_run"
	})
	if h := srv.holders(t, "tag:db"); h != 0 {
		t.Errorf("tag:db has %d holders while the run waits for warehouse, want 0: one wait for both", h)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the command ran while warehouse was full")
	}
	if err := blocker.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := run.wait(t); r.code != 0 {
		t.Fatalf("allot run: got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	leaseID, runID, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	got, err := srv.c.GetRun(t.Context(), runID)
	if err != nil {
		t.Fatalf("get run %q: %v", runID, err)
	}
	if got.State != allot.StateCompleted || got.LeaseID != leaseID || !slices.Equal(got.Limits, []string{"warehouse"}) {
		t.Errorf("run: state %s, lease %s, limits %v; want Completed, the command's lease %s, [warehouse]",
			got.State, got.LeaseID, got.Limits, leaseID)
	}
}
