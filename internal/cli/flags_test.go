package cli_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/allot-dev/allot/internal/cli"
)

// TestGlobalFlags checks where the API's URL and key come from: the flags
// win over ALLOT_API_URL and ALLOT_API_KEY, even an empty --api-key.
func TestGlobalFlags(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		auth []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantAuth string
	}{
		{"env", map[string]string{"ALLOT_API_URL": srv.URL + "/api", "ALLOT_API_KEY": "from-env"}, nil, "Bearer from-env"},
		{"flags win", map[string]string{"ALLOT_API_URL": "http://127.0.0.1:1/api", "ALLOT_API_KEY": "from-env"},
			[]string{"--api-url", srv.URL + "/api", "--api-key", "from-flag"}, "Bearer from-flag"},
		{"empty key flag", map[string]string{"ALLOT_API_URL": srv.URL + "/api", "ALLOT_API_KEY": "from-env"},
			[]string{"--api-key", ""}, ""},
		{"no key", map[string]string{"ALLOT_API_URL": srv.URL + "/api"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			auth = nil
			mu.Unlock()
			var stdout, stderr syncBuffer
			code := cli.Main(t.Context(), append(tc.args, "gcl", "ls"), cli.Env{
				Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return tc.env[k] }})
			if code != 0 || stdout.String() != "No global concurrency limits found.\n" {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want 0 and no limits", code, stdout.String(), stderr.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(auth) != 1 || auth[0] != tc.wantAuth {
				t.Errorf("Authorization headers: got %q, want [%q]", auth, tc.wantAuth)
			}
		})
	}

	var stdout, stderr syncBuffer
	code := cli.Main(t.Context(), []string{"--api-url", "ftp://x", "gcl", "ls"},
		cli.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
	if code != cli.ExitUsage || !strings.HasPrefix(stderr.String(), "Error: --api-url \"ftp://x\": ") {
		t.Errorf("--api-url ftp://x: got exit %d, stderr %q; want exit %d and an error about --api-url", code, stderr.String(), cli.ExitUsage)
	}
}

// TestServerFlagsRefuseBadValues checks that allot server refuses bad
// settings with a usage error before it opens anything.
func TestServerFlagsRefuseBadValues(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--run-retention", "-1s"},
		{"--waiter-grace", "-1s"},
		{"--v1-lease-duration", "-5m"},
		{"--run-lease-duration", "-1s"},
		{"--default-lease-duration", "-1s"},
		{"--sync", "sometimes"},
		{"--log-format", "xml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var stdout, stderr syncBuffer
			code := cli.Main(t.Context(), append([]string{"server", "--addr", "127.0.0.1:0", "--data-dir", dir + "/data"}, args...),
				cli.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code != cli.ExitUsage || !strings.Contains(stderr.String(), args[0]) {
				t.Errorf("got exit %d, stderr %q; want exit %d naming %s", code, stderr.String(), cli.ExitUsage, args[0])
			}
		})
	}
}
