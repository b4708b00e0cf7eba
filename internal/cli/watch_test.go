package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// soon is the generous bound on "within about a second".
const soon = 3 * time.Second

// termScript is a command that records its lease (or task run) id, then the
// time it gets SIGTERM, in dir. (Its stderr is closed: sh would say
// "Terminated" of its sleep.)
func termScript(dir string) string {
	return fmt.Sprintf(`exec 2>/dev/null; trap 'date +%%s%%N > %[1]s/term; exit 0' TERM; echo "$ALLOT_LEASE_ID$ALLOT_TASK_RUN_ID" > %[1]s/lease.tmp; mv %[1]s/lease.tmp %[1]s/lease; while :; do sleep 0.05; done`, dir)
}

// readWhenThere polls until the file exists with content, and returns it.
func readWhenThere(t *testing.T, path string) string {
	t.Helper()
	var s string
	eventually(t, "the command writes "+filepath.Base(path), func() bool {
		b, err := os.ReadFile(path)
		s = strings.TrimSpace(string(b))
		return err == nil && s != ""
	})
	return s
}

// termDelay is how long after start the command recorded its SIGTERM.
func termDelay(t *testing.T, dir string, start time.Time) time.Duration {
	t.Helper()
	ns, err := strconv.ParseInt(readWhenThere(t, filepath.Join(dir, "term")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, ns).Sub(start)
}

// measureRuns is how many revocations TestRunStopsAtOnceWhenRevoked times
// (ALLOT_MEASURE_RUNS, default 3).
func measureRuns() int {
	if n, err := strconv.Atoi(os.Getenv("ALLOT_MEASURE_RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// TestRunStopsAtOnceWhenRevoked revokes the lease of an allot run whose
// lease lasts 10 minutes: the command gets SIGTERM within about a second,
// allot says so in one line and exits 4. It logs the delay from the revoke
// request to the command's SIGTERM.
func TestRunStopsAtOnceWhenRevoked(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	var delays []time.Duration
	for range measureRuns() {
		dir := t.TempDir()
		run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--lease-duration", "10m", "--", "sh", "-c", termScript(dir)))
		lease := readWhenThere(t, filepath.Join(dir, "lease"))
		sent := time.Now()
		if err := srv.c.RevokeLease(t.Context(), lease, "maintenance"); err != nil {
			t.Fatal(err)
		}
		r := run.wait(t)
		d := termDelay(t, dir, sent)
		delays = append(delays, d)
		if d > soon {
			t.Errorf("the command got SIGTERM %v after the revoke, want within about a second", d)
		}
		want := "allot: lease " + lease + " was revoked (maintenance); the command was stopped\n"
		if r.code != 4 || r.stderr != want {
			t.Errorf("allot run: exit %d, stderr %q; want exit 4 and %q", r.code, r.stderr, want)
		}
	}
	slices.Sort(delays)
	t.Logf("revoke request to the command's SIGTERM over %d runs: median %v, max %v", len(delays), delays[len(delays)/2], delays[len(delays)-1])
}

// TestRunTagStopsAtOnceWhenReset resets the tag limit of an allot run
// --tag whose run lease lasts 10 minutes: the command gets SIGTERM within
// about a second, allot says so in one line (not two 409s) and exits 4.
func TestRunTagStopsAtOnceWhenReset(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	if r := srv.run(t, "concurrency-limit", "create", "t", "1"); r.code != 0 {
		t.Fatalf("create tag limit: exit %d: %s", r.code, r.stderr)
	}
	var delays []time.Duration
	for range measureRuns() {
		dir := t.TempDir()
		run := start(t, srv.allotCmd(t, "run", "--tag", "t", "--lease-duration", "10m", "--", "sh", "-c", termScript(dir)))
		readWhenThere(t, filepath.Join(dir, "lease"))
		sent := time.Now()
		if _, err := srv.c.Tags().Reset(t.Context(), "t", nil); err != nil {
			t.Fatalf("reset: %v", err)
		}
		r := run.wait(t)
		d := termDelay(t, dir, sent)
		delays = append(delays, d)
		if d > soon {
			t.Errorf("the command got SIGTERM %v after the reset, want within about a second", d)
		}
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 4 || len(lines) != 1 || !strings.HasPrefix(lines[0], "allot: lease ") ||
			!strings.HasSuffix(lines[0], " was revoked (slot revoked by reset); the command was stopped") {
			t.Errorf("allot run --tag: exit %d, stderr %q; want exit 4 and one line saying the reset revoked the lease", r.code, r.stderr)
		}
	}
	slices.Sort(delays)
	t.Logf("reset request to the command's SIGTERM over %d runs: median %v, max %v", len(delays), delays[len(delays)/2], delays[len(delays)-1])
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// TestRunKilledStopsItsCommand kills allot run with SIGKILL: its command
// and what the command started in the background stop too, rather than run
// on without the slot.
func TestRunKilledStopsItsCommand(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.createLimit(t, "x", 1)
	dir := t.TempDir()
	script := fmt.Sprintf(`sleep 300 & echo $! > %[1]s/grandchild; echo $$ > %[1]s/pid.tmp; mv %[1]s/pid.tmp %[1]s/pid; wait`, dir)
	run := start(t, srv.allotCmd(t, "run", "--limit", "x", "--", "sh", "-c", script))
	pid, _ := strconv.Atoi(readWhenThere(t, filepath.Join(dir, "pid")))
	grandchild, _ := strconv.Atoi(readWhenThere(t, filepath.Join(dir, "grandchild")))
	if !alive(pid) || !alive(grandchild) {
		t.Fatalf("command %d alive %v, grandchild %d alive %v; want both running", pid, alive(pid), grandchild, alive(grandchild))
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = syscall.Kill(grandchild, syscall.SIGKILL)
	})
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-run.done
	eventually(t, "the command and its background child are gone", func() bool { return !alive(pid) && !alive(grandchild) })
}
