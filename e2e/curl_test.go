package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/allot-dev/allot/internal/docblock"
)

// needCurl skips t when curl is not installed, except in CI.
func needCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed; CI needs it for this test")
		}
		t.Skip("curl is not installed")
	}
}

// TestDocumentedTagLimitCurlCalls runs the curl calls of docs/runs.md's
// section on Prefect's tag-limit API (the blocks marked as run by this
// test), as they are written there, with the real curl against the real
// server, in order, and checks each answer.
func TestDocumentedTagLimitCurlCalls(t *testing.T) {
	t.Parallel()
	needCurl(t)
	blocks := docblock.Claimed(t)
	want := []struct {
		status   string
		contains string
	}{
		{"201", `"tag":"database"`},
		{"200", `"active_slots":[]`},
		{"200", `"name":"database"`},
		{"200", `"name":"database"`},
		{"200", `"tag":"database"`},
		{"200", `"granted":["3c90c3cc-0d44-4b50-8888-8dd25736052a"]`},
		{"200", `null`},
	}
	if len(blocks) != len(want) {
		t.Fatalf("%d blocks are marked as run by this test, want %d", len(blocks), len(want))
	}
	srv := startServer(t, t.TempDir(), "")
	for i, b := range blocks {
		// The block as written; curl only learns to print the status.
		script := "curl() { command curl --silent --show-error --write-out '\\n%{http_code}' \"$@\"; }\n" + b.Body
		cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
		cmd.Env = append(os.Environ(), "API="+srv.url(""))
		out, err := cmd.CombinedOutput()
		b.Ran()
		if err != nil {
			t.Fatalf("%s:\n%s\nfailed: %v\n%s", b, b.Body, err, out)
		}
		answer := strings.TrimSpace(string(out))
		body, status := "", answer
		if i := strings.LastIndexByte(answer, '\n'); i >= 0 {
			body, status = answer[:i], answer[i+1:]
		}
		if status != want[i].status || !strings.Contains(body, want[i].contains) {
			t.Errorf("%s:\n%s\nanswered %s %s, want %s with %s", b, b.Body, status, body, want[i].status, want[i].contains)
		}
	}
	// The last call deleted the limit.
	code, _, err := call(t.Context(), &http.Client{}, "GET", srv.url("/concurrency_limits/tag/database"), nil, nil)
	if err != nil || code != 404 {
		t.Errorf("the tag limit after the documented delete: %d (%v), want 404", code, err)
	}
}

// TestDocShellBlocks runs the shell blocks marked as run by it (the
// README's tour over HTTP, docs/runs.md's runs API, …) verbatim: the blocks
// of one document in one `sh -eu` session, in their order in it (a
// variable one block sets is there for the next, as for a reader typing
// them), with the real curl, against a server of its own whose URL is in
// ALLOT_API_URL and API. Every curl call must answer 2xx, every variable a
// block uses must be set, and every block must end with exit 0.
func TestDocShellBlocks(t *testing.T) {
	t.Parallel()
	needCurl(t)
	byDoc := map[string][]*docblock.Run{}
	var docs []string
	for _, b := range docblock.Claimed(t) {
		if byDoc[b.File] == nil {
			docs = append(docs, b.File)
		}
		byDoc[b.File] = append(byDoc[b.File], b)
	}
	for _, doc := range docs {
		blocks := byDoc[doc]
		t.Run(doc, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, t.TempDir(), "")
			// curl as written, plus its status on stderr, one line per
			// call; a line between blocks says which block follows.
			script := "curl() { command curl --show-error --write-out '%{stderr}%{http_code}\\n' \"$@\"; }\n"
			for _, b := range blocks {
				script += "echo '" + blockMark + " " + b.String() + "' >&2\n" + b.Body
				b.Ran()
			}
			cmd := exec.CommandContext(t.Context(), "sh", "-eu", "-c", script)
			cmd.Env = append(os.Environ(), "ALLOT_API_URL="+srv.url(""), "API="+srv.url(""))
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("stdout:\n%s", stdout.String())
			if err != nil {
				t.Fatalf("the blocks failed: %v\nstderr:\n%s", err, stderr.String())
			}
			// stderr: for each block its mark, then the status of each call.
			parts := strings.Split(stderr.String(), blockMark+" ")[1:]
			if len(parts) != len(blocks) {
				t.Fatalf("stderr has %d block marks, want %d:\n%s", len(parts), len(blocks), stderr.String())
			}
			for i, b := range blocks {
				statuses := strings.Fields(parts[i])[1:]
				if calls := strings.Count(b.Body, "curl "); len(statuses) != calls {
					t.Errorf("%s: %d curl calls answered (%q), want %d", b, len(statuses), statuses, calls)
				}
				for j, s := range statuses {
					if len(s) != 3 || s[0] != '2' {
						t.Errorf("%s: curl call %d answered %s, want 2xx", b, j+1, s)
					}
				}
			}
		})
	}
}

const blockMark = "@@allot-doc-block"
