package cli_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestScripts runs testdata/script/*.txtar, each against a server of its
// own whose URL is in ALLOT_API_URL (ALLOT_ROOT_URL is the server's root,
// without /api). Two commands beside testscript's own:
//
//	allot ARGS...   runs the allot binary ('! allot' expects a failure)
//	status N        checks the exit code of the last allot
//	capture VAR     sets VAR to the last command's stdout, trimmed
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			srv, err := startServer(filepath.Join(e.WorkDir, ".allot-data"))
			if err != nil {
				return err
			}
			e.Defer(srv.stop)
			e.Setenv("ALLOT_API_URL", srv.url)
			e.Setenv("ALLOT_ROOT_URL", strings.TrimSuffix(srv.url, "/api"))
			e.Setenv("ALLOT_API_KEY", "")
			// Commands that allot run starts may call allot too.
			e.Setenv("PATH", filepath.Dir(binary)+string(filepath.ListSeparator)+e.Getenv("PATH"))
			e.Setenv("GORACE", strings.TrimPrefix(goRace, "GORACE="))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"allot":   cmdAllot,
			"status":  cmdStatus,
			"capture": cmdCapture,
		},
	})
}

func cmdAllot(ts *testscript.TestScript, neg bool, args []string) {
	err := ts.Exec(binary, args...)
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("allot %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	ts.Setenv("ALLOT_EXIT", strconv.Itoa(code))
	switch {
	case neg && code == 0:
		ts.Fatalf("allot %s: got exit 0, want a failure", strings.Join(args, " "))
	case !neg && code != 0:
		ts.Fatalf("allot %s: got exit %d, want 0", strings.Join(args, " "), code)
	}
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: status N")
	}
	if got := ts.Getenv("ALLOT_EXIT"); got != args[0] {
		ts.Fatalf("allot exit code: got %s, want %s", got, args[0])
	}
}

func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: capture VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}
