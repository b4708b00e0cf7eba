package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestDocumentedTagLimitCurlCalls runs the curl calls of docs/runs.md's
// section on Prefect's tag-limit API, as they are written there, with the
// real curl against the real server, in order, and checks each answer.
func TestDocumentedTagLimitCurlCalls(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed; CI needs it for this test")
		}
		t.Skip("curl is not installed")
	}
	doc, err := os.ReadFile("../docs/runs.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "## Prefect's tag-limit API with curl")
	if start < 0 {
		t.Fatal("docs/runs.md has no section on Prefect's tag-limit API")
	}
	section = section[start:]
	if end := strings.Index(section, "\n### "); end > 0 {
		section = section[:end]
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1)
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
		t.Fatalf("the section has %d curl blocks, want %d", len(blocks), len(want))
	}
	srv := startServer(t, t.TempDir(), "")
	for i, b := range blocks {
		// The block as written; curl only learns to print the status.
		script := "curl() { command curl --silent --show-error --write-out '\\n%{http_code}' \"$@\"; }\n" + b[1]
		cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
		cmd.Env = append(os.Environ(), "API="+srv.url(""))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("block %d:\n%s\nfailed: %v\n%s", i, b[1], err, out)
		}
		answer := strings.TrimSpace(string(out))
		body, status := "", answer
		if i := strings.LastIndexByte(answer, '\n'); i >= 0 {
			body, status = answer[:i], answer[i+1:]
		}
		if status != want[i].status || !strings.Contains(body, want[i].contains) {
			t.Errorf("block %d:\n%s\nanswered %s %s, want %s with %s", i, b[1], status, body, want[i].status, want[i].contains)
		}
	}
	// The last call deleted the limit.
	code, _, err := call(t.Context(), &http.Client{}, "GET", srv.url("/concurrency_limits/tag/database"), nil, nil)
	if err != nil || code != 404 {
		t.Errorf("the tag limit after the documented delete: %d (%v), want 404", code, err)
	}
}
