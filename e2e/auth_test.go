package e2e

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// keyPattern matches a whole API key.
var keyPattern = regexp.MustCompile(`allot_[0-9a-f]{12}_[0-9a-f]{64}`)

func TestProtectedModeRefusesToStart(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		cmd := exec.Command(binary, "server", "--addr", addr, "--data-dir", t.TempDir())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil {
			t.Fatalf("server on %s with auth off started; want a refusal", addr)
		}
		for _, want := range []string{"--auth keys", "--insecure", "authentication off"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("refusal for %s does not name %q: %s", addr, want, out.String())
			}
		}
	}
	// --insecure is the explicit escape.
	s := startServer(t, t.TempDir(), "0.0.0.0:0", "--insecure")
	s.addr = strings.Replace(s.addr, "0.0.0.0", "127.0.0.1", 1)
	mustCall(t, http.DefaultClient, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 404)
}

func TestAuthBootstrapAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, dir, "", "--auth", "keys", "--log-level", "debug")
	printed := keyPattern.FindString(strings.Join(s.stdout, "\n"))
	if printed == "" {
		t.Fatalf("no bootstrap key printed: %q", s.stdout)
	}
	file, err := os.ReadFile(filepath.Join(dir, "bootstrap.key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(file)); got != printed {
		t.Errorf("bootstrap.key holds %q, printed %q", got, printed)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "bootstrap.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap.key mode %v, want 0600", fi.Mode().Perm())
	}
	admin := authClient(printed)
	mustCall(t, http.DefaultClient, "GET", s.url("/health"), nil, nil, 200)
	mustCall(t, http.DefaultClient, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 401)
	mustCall(t, authClient("allot_000000000000_"+strings.Repeat("0", 64)), "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 401)
	mustCall(t, admin, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 404)
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	mustCall(t, admin, "POST", s.url("/admin/keys"), map[string]any{"name": "etl", "scopes": []string{"read"}}, &created, 201)
	reader := authClient(created.Key)
	mustCall(t, reader, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 404)
	mustCall(t, reader, "POST", s.url("/v2/concurrency_limits/"), map[string]any{"name": "x", "limit": 1}, nil, 403)
	s.stop()

	// Keys are durable; no second bootstrap key.
	s = startServer(t, dir, "", "--auth", "keys", "--log-level", "debug")
	if k := keyPattern.FindString(strings.Join(s.stdout, "\n")); k != "" {
		t.Errorf("a second start printed a key: %q", s.stdout)
	}
	mustCall(t, reader, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 404)
	mustCall(t, admin, "POST", s.url("/admin/keys/"+created.ID+"/revoke"), nil, nil, 200)
	mustCall(t, reader, "GET", s.url("/v2/concurrency_limits/x"), nil, nil, 401)
	s.stop()

	// No secret in any log line.
	for _, secret := range []string{printed[len(printed)-64:], created.Key[len(created.Key)-64:]} {
		if strings.Contains(s.log.String(), secret) {
			t.Errorf("the server's log carries a secret:\n%s", s.log)
		}
	}
}

func TestAuthBootstrapKeyFromEnvironment(t *testing.T) {
	t.Parallel()
	key := "allot_abcdef012345_" + strings.Repeat("7", 64)
	s := startServerEnv(t, t.TempDir(), "", []string{"ALLOT_BOOTSTRAP_KEY=" + key}, "--auth", "keys")
	if k := keyPattern.FindString(strings.Join(s.stdout, "\n")); k != "" {
		t.Errorf("printed a key although ALLOT_BOOTSTRAP_KEY gave one: %q", s.stdout)
	}
	mustCall(t, authClient(key), "GET", s.url("/admin/keys"), nil, nil, 200)
}

// authClient is an HTTP client that sends key as a bearer token.
func authClient(key string) *http.Client {
	return &http.Client{Transport: bearer{key: key}}
}

// bearer sends key as a bearer token, through base (nil: the default
// transport).
type bearer struct {
	key  string
	base http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	if b.base == nil {
		return http.DefaultTransport.RoundTrip(r)
	}
	return b.base.RoundTrip(r)
}
