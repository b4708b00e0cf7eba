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
		{name: "bad scale sizes", args: []string{"-scale-sizes", "10,lots"}, wantCode: 2, wantStderr: `invalid value "10,lots" for flag -scale-sizes: "lots" is not a whole number`},
		{name: "nothing to measure", args: []string{"-workload", "memory", "-leases", "0", "-waiters", "0"}, wantCode: 2, wantStderr: "leases 0 and waiters 0"},
		{name: "memory against a server down", args: []string{"-url", down, "-prefix", "p", "-workload", "memory"}, wantCode: 1, wantStderr: "memory: per lease: set up: create limit p-lease:*"},
		{name: "scale against a server down", args: []string{"-url", down, "-prefix", "p", "-workload", "scale"}, wantCode: 1, wantStderr: "scale: 10 held: set up: create limit p-s10:*"},
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
