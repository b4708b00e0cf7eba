package cli_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/allot-dev/allot"
)

// binary is the allot command built for these tests; TestMain sets it
// before any test runs and nothing changes it afterwards.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "allot-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "allot")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../../cmd/allot")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build allot:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// goRace keeps a binary built with -race from sleeping a second on its
// way out; a race it finds still fails it (exit 66).
const goRace = "GORACE=atexit_sleep_ms=0"

// serverProc is an `allot server` process on a free port.
type serverProc struct {
	url  string // http://127.0.0.1:PORT/api
	c    *allot.Client
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// startServer starts `allot server` with its store in dataDir and waits
// until it listens.
func startServer(dataDir string, env ...string) (*serverProc, error) {
	return startServerArgs(dataDir, env)
}

// startServerArgs is startServer with more server flags.
func startServerArgs(dataDir string, env []string, args ...string) (*serverProc, error) {
	s := &serverProc{log: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(binary, append([]string{"server", "--addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--sync", "normal", "--log-level", "warn"}, args...)...)
	s.cmd.Env = append(append(os.Environ(), goRace), env...)
	s.cmd.Stderr = s.log
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		for sc.Scan() {
		}
		_ = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case l, ok := <-line:
		const prefix = "allot server listening on "
		if !ok || !strings.HasPrefix(l, prefix) {
			s.stop()
			return nil, fmt.Errorf("server said %q, want %q…; log: %s", l, prefix, s.log)
		}
		s.url = strings.TrimPrefix(l, prefix)
		return s, nil
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("server did not start in 30s: %s", s.log)
	}
}

// stop kills the server and waits until it is gone.
func (s *serverProc) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// newServer starts a server for t, stopped when t ends.
func newServer(t *testing.T) *serverProc {
	t.Helper()
	s, err := startServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	if s.c, err = allot.NewClient(allot.WithURL(s.url), allot.WithAPIKey("")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.c.CloseIdleConnections)
	return s
}

// createLimit creates a limit of n slots.
func (s *serverProc) createLimit(t *testing.T, name string, n int) {
	t.Helper()
	if _, err := s.c.CreateLimit(t.Context(), allot.LimitSpec{Name: name, Limit: n}); err != nil {
		t.Fatalf("create limit %q: %v", name, err)
	}
}

// allotCmd is the allot binary with args, talking to the server, in a
// process group of its own that is killed when t ends (with any command
// it started).
func (s *serverProc) allotCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "ALLOT_API_URL="+s.url, "ALLOT_API_KEY=", goRace)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	return cmd
}

// result is how an allot process ended.
type result struct {
	code           int
	stdout, stderr string
}

// run runs allot with args to the end.
func (s *serverProc) run(t *testing.T, args ...string) result {
	t.Helper()
	cmd := s.allotCmd(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return result{code: exitCode(t, err), stdout: out.String(), stderr: errb.String()}
}

// exitCode is the exit code behind cmd.Run's or cmd.Wait's error.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("allot was killed by %v", ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatalf("run allot: %v", err)
	return -1
}

// eventually polls cond every 10 ms until it holds, or fails the test
// after 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holders is the number of leases holding the limit name.
func (s *serverProc) holders(t *testing.T, name string) int {
	t.Helper()
	l, err := s.c.GetLimit(t.Context(), name)
	if err != nil {
		t.Fatalf("get limit %q: %v", name, err)
	}
	return len(l.Holders)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
