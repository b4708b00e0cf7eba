package cli_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestVersion checks that allot --version and allot version print the
// build information the binary carries: the same text, and the Go version
// it was built with (also in -o json).
func TestVersion(t *testing.T) {
	t.Parallel()
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		cmd := exec.Command(binary, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("allot %s: %v; stderr: %s", strings.Join(args, " "), err, errb.String())
		}
		return out.String()
	}
	flag, cmd := run("--version"), run("version")
	if flag != cmd {
		t.Errorf("allot --version printed %q, allot version %q: want the same", flag, cmd)
	}
	if !strings.HasPrefix(cmd, "allot ") || !strings.Contains(cmd, "\ngo: "+runtime.Version()+"\n") {
		t.Errorf("allot version: got %q, want \"allot VERSION\" and \"go: %s\"", cmd, runtime.Version())
	}
	var bi struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	}
	if err := json.Unmarshal([]byte(run("version", "-o", "json")), &bi); err != nil {
		t.Fatal(err)
	}
	if bi.Version == "" || bi.GoVersion != runtime.Version() {
		t.Errorf("allot version -o json: got %+v, want a version and go_version %s", bi, runtime.Version())
	}
}
