package main

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/cmd/allot-bench/internal/bench"
)

// TestMain makes the test binary the bare server when the baseline
// workload starts it as one, as main does.
func TestMain(m *testing.M) {
	if addr, ok := os.LookupEnv(bench.BareServerEnv); ok {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := serveBare(ctx, addr, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testExecutable returns the test binary, which serves as the bare server
// (see TestMain).
func testExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	return exe
}

func TestRun(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1, so a run that gets as far as the server
	// fails at once.
	const down = "http://127.0.0.1:1/api"
	tests := []struct {
		name       string
		args       []string
		envURL     string
		exe        string // "none" for none; empty for the test binary
		wantCode   int
		wantStderr string
	}{
		{name: "help", args: []string{"-h"}, wantCode: 0, wantStderr: "usage: allot-bench"},
		{name: "unknown flag", args: []string{"-nope"}, wantCode: 2, wantStderr: "flag provided but not defined: -nope"},
		{name: "extra argument", args: []string{"throughput"}, wantCode: 2, wantStderr: `unexpected arguments ["throughput"]`},
		{name: "unknown workload", args: []string{"-workload", "latency"}, wantCode: 2, wantStderr: `unknown workload "latency"`},
		{name: "negative workers", args: []string{"-workers", "-1"}, wantCode: 2, wantStderr: "-workers -1 is negative"},
		{name: "zero duration", args: []string{"-duration", "0s"}, wantCode: 2, wantStderr: "duration 0s is not positive"},
		{name: "server down", args: []string{"-url", down, "-prefix", "p"}, wantCode: 1, wantStderr: "reach server: "},
		{name: "throughput against a server down", args: []string{"-url", down, "-prefix", "p", "-workload", "throughput"}, wantCode: 1, wantStderr: "throughput: set up: create limit p-t0"},
		{name: "no executable for the baseline", args: []string{"-workload", "baseline"}, exe: "none", wantCode: 2, wantStderr: "no executable to start the baseline's bare server from"},
		{name: "bad scale sizes", args: []string{"-scale-sizes", "10,lots"}, wantCode: 2, wantStderr: `invalid value "10,lots" for flag -scale-sizes: "lots" is not a whole number`},
		{name: "nothing to measure", args: []string{"-workload", "memory", "-leases", "0", "-waiters", "0"}, wantCode: 2, wantStderr: "leases 0 and waiters 0"},
		{name: "memory against a server down", args: []string{"-url", down, "-prefix", "p", "-workload", "memory"}, wantCode: 1, wantStderr: "memory: per lease: set up: create limit p-lease:*"},
		{name: "scale against a server down", args: []string{"-url", down, "-prefix", "p", "-workload", "scale"}, wantCode: 1, wantStderr: "scale: 10 held: set up: create limit p-s10:*"},
		{name: "URL from the environment", args: []string{"-workload", "handoff", "-prefix", "p"}, envURL: down, wantCode: 1, wantStderr: "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			exe := tt.exe
			switch exe {
			case "":
				exe = testExecutable(t)
			case "none":
				exe = ""
			}
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, tt.envURL, exe, &stdout, &stderr)
			if diff := cmp.Diff(tt.wantCode, code); diff != "" {
				t.Errorf("exit code mismatch (-want +got):\n%s\nstderr:\n%s", diff, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("got stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("got stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestRunBaseline(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	// No allot server is needed: the baseline starts its own.
	args := []string{"-url", "http://127.0.0.1:1/api", "-workload", "baseline", "-workers", "2", "-duration", "200ms", "-warmup", "0s"}
	code := run(t.Context(), args, "", testExecutable(t), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("got exit code %d, want 0; stderr:\n%s", code, stderr.String())
	}
	want := regexp.MustCompile(`^baseline: [1-9]\d* requests/s  p50=\S+ p99=\S+  workers=2 \(bare net/http JSON round trip on this machine\)  idle round trip p50=\S+ p99=\S+  fsync p50=\S+ p99=\S+ \(this disk, 8 KiB\)  errors=0\n$`)
	if !want.MatchString(stdout.String()) {
		t.Errorf("got stdout %q, want it to match %s", stdout.String(), want)
	}
}

func TestServeBare(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := serveBare(t.Context(), "not an address", &stdout, &stderr); code != 1 {
		t.Errorf("got exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "allot-bench: bare server: ") || stdout.Len() != 0 {
		t.Errorf("got stdout %q and stderr %q, want only an error on stderr", stdout.String(), stderr.String())
	}
}

func TestParseSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []int
		wantErr string
	}{
		{name: "two", in: "10,100000", want: []int{10, 100000}},
		{name: "one", in: "5", want: []int{5}},
		{name: "spaces", in: " 1 , 2 ", want: []int{1, 2}},
		{name: "zero", in: "0,10", want: []int{0, 10}},
		{name: "empty", in: "", wantErr: `"" is not a whole number`},
		{name: "trailing comma", in: "10,", wantErr: `"" is not a whole number`},
		{name: "negative", in: "-1", wantErr: "-1 is negative"},
		{name: "not a number", in: "1e5", wantErr: `"1e5" is not a whole number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSizes(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseSizes(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSizes(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseSizes(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if got := formatSizes(got); got != strings.ReplaceAll(tt.in, " ", "") {
				t.Errorf("formatSizes = %q, want %q", got, strings.ReplaceAll(tt.in, " ", ""))
			}
		})
	}
}
