// Package e2e tests allot as users run it: the real binary, a real data
// directory, real HTTP on loopback, and real crashes (SIGKILL).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "allot-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "allot")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/allot")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build allot:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one allot server process.
type server struct {
	t       *testing.T
	dataDir string
	addr    string
	scheme  string // http, or https with --tls-cert
	cmd     *exec.Cmd
	log     *syncBuffer // the server's stderr, written while it runs
	// stdout is what the server printed before it said it listens (the
	// bootstrap key, with --auth keys).
	stdout []string
	done   chan struct{}
}

// startServer starts allot on a free port (or addr, if set) with dataDir.
func startServer(t *testing.T, dataDir, addr string, extra ...string) *server {
	t.Helper()
	return startServerEnv(t, dataDir, addr, nil, extra...)
}

// startServerEnv is startServer with env added to the environment.
func startServerEnv(t *testing.T, dataDir, addr string, env []string, extra ...string) *server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s := &server{t: t, dataDir: dataDir, log: new(syncBuffer), done: make(chan struct{})}
	args := append([]string{"server", "--addr", addr, "--data-dir", dataDir, "--log-level", "warn"}, extra...)
	s.cmd = exec.Command(binary, args...)
	if env != nil {
		s.cmd.Env = append(os.Environ(), env...)
	}
	s.cmd.Stderr = s.log
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.kill() })
	const prefix = "allot server listening on "
	for {
		select {
		case line := <-lines:
			scheme, rest, ok := strings.Cut(strings.TrimPrefix(line, prefix), "://")
			if !strings.HasPrefix(line, prefix) || !ok {
				s.stdout = append(s.stdout, line)
				continue
			}
			s.scheme, s.addr = scheme, strings.TrimSuffix(rest, "/api")
			return s
		case <-s.done:
			t.Fatalf("server exited at start: %s", s.log)
		case <-time.After(30 * time.Second):
			t.Fatalf("server did not start in 30s: %s", s.log)
		}
	}
}

// syncBuffer is a bytes.Buffer that a process may write while a test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (s *server) url(path string) string { return s.scheme + "://" + s.addr + "/api" + path }

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-s.done
}

// stop asks the server to shut down cleanly and waits.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("server did not stop in 30s after SIGTERM")
		s.kill()
	}
}

// call sends a JSON request and decodes a JSON answer into out (if not nil).
func call(ctx context.Context, client *http.Client, method, url string, body, out any) (int, http.Header, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, err
	}
	if out != nil && resp.StatusCode < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("decode %s: %w", data, err)
		}
	}
	if resp.StatusCode >= 500 {
		return resp.StatusCode, resp.Header, fmt.Errorf("server error %d: %s", resp.StatusCode, data)
	}
	return resp.StatusCode, resp.Header, nil
}

// mustCall is call that fails the test unless the status is want.
func mustCall(t *testing.T, client *http.Client, method, url string, body, out any, want int) {
	t.Helper()
	code, _, err := call(t.Context(), client, method, url, body, out)
	if err != nil || code != want {
		t.Fatalf("%s %s: got %d (%v), want %d", method, url, code, err, want)
	}
}

type limitRef struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Limit int    `json:"limit"`
}

type leaseAnswer struct {
	LeaseID      string     `json:"lease_id"`
	Limits       []limitRef `json:"limits"`
	FencingToken uint64     `json:"fencing_token"`
	Expires      time.Time  `json:"expires"`
}

type holderView struct {
	LeaseID      string    `json:"lease_id"`
	Slots        int       `json:"slots"`
	Expires      time.Time `json:"expires"`
	FencingToken uint64    `json:"fencing_token"`
}

type limitView struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Limit       int          `json:"limit"`
	Active      bool         `json:"active"`
	ActiveSlots int          `json:"active_slots"`
	Holders     []holderView `json:"holders"`
	Waiting     int          `json:"waiting"`
}
