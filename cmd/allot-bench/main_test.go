package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRun(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1, so a run that gets as far as the server
	// fails at once.
	const down = "http://127.0.0.1:1/api"
	tests := []struct {
		name       string
		args       []string
		envURL     string
		wantCode   int
		wantStderr string
	}{
		{name: "help", args: []string{"-h"}, wantCode: 0, wantStderr: "usage: allot-bench"},
		{name: "unknown flag", args: []string{"-nope"}, wantCode: 2, wantStderr: "flag provided but not defined: -nope"},
		{name: "extra argument", args: []string{"throughput"}, wantCode: 2, wantStderr: `unexpected arguments ["throughput"]`},
		{name: "unknown workload", args: []string{"-workload", "latency"}, wantCode: 2, wantStderr: `unknown workload "latency"`},
		{name: "negative workers", args: []string{"-workers", "-1"}, wantCode: 2, wantStderr: "-workers -1 is negative"},
		{name: "zero duration", args: []string{"-duration", "0s"}, wantCode: 2, wantStderr: "duration 0s is not positive"},
		{name: "server down", args: []string{"-url", down, "-prefix", "p"}, wantCode: 1, wantStderr: "throughput: set up: create limit p-t0"},
		{name: "URL from the environment", args: []string{"-workload", "handoff", "-prefix", "p"}, envURL: down, wantCode: 1, wantStderr: "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, tt.envURL, &stdout, &stderr)
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
