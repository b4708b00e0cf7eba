package python

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/allottest"
)

// inCI reports whether missing tools must fail the tests instead of
// skipping them (.ci/run sets CI=true).
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test, or fails it in CI.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// python is one CPython interpreter found on the machine.
type python struct {
	version string // "3.12"
	path    string
}

// findPythons returns the CPython 3.10 to 3.13 interpreters on PATH, or,
// where PATH has only a pyenv shim that is not active, under pyenv's
// versions directory.
func findPythons(t *testing.T) []python {
	t.Helper()
	var found []python
	pyenv := os.Getenv("PYENV_ROOT")
	if pyenv == "" {
		if home, err := os.UserHomeDir(); err == nil {
			pyenv = filepath.Join(home, ".pyenv")
		}
	}
	for minor := 10; minor <= 13; minor++ {
		v := fmt.Sprintf("3.%d", minor)
		var candidates []string
		if p, err := exec.LookPath("python" + v); err == nil {
			candidates = append(candidates, p)
		}
		if pyenv != "" {
			m, _ := filepath.Glob(filepath.Join(pyenv, "versions", v+".*", "bin", "python"+v))
			candidates = append(candidates, m...)
		}
		for _, c := range candidates {
			out, err := exec.Command(c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
			if err == nil && strings.TrimSpace(string(out)) == v {
				found = append(found, python{version: v, path: c})
				break
			}
		}
	}
	return found
}

// TestVersion checks that the package's version is the server's: the one
// in the API document (internal/httpapi/openapi.json info.version).
func TestVersion(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../internal/httpapi/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var api struct {
		Info struct {
			Version string `json:"version"`
		} `json:"info"`
	}
	if err := json.Unmarshal(doc, &api); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ path, pattern string }{
		{"pyproject.toml", `(?m)^version = "([^"]+)"$`},
		{"src/allot/_version.py", `(?m)^__version__ = "([^"]+)"$`},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(f.pattern).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no version", f.path)
		}
		if got := string(m[1]); got != api.Info.Version {
			t.Errorf("%s: version %q, the server's (openapi.json info.version) is %q", f.path, got, api.Info.Version)
		}
	}
}

// TestPython runs the Python client's unittest suite (tests/) under every
// CPython 3.10 to 3.13 on the machine, one subtest per version, against a
// real server: allottest's, a TLS proxy in front of it with a test CA, and
// the built binary for the tests that stop their server.
func TestPython(t *testing.T) {
	pythons := findPythons(t)
	if len(pythons) == 0 {
		skipOrFail(t, "no CPython 3.10 to 3.13 found on PATH (python3.10 … python3.13)")
	}
	srv := allottest.NewServer(t)
	bin := buildServer(t)
	tlsURL, caFile := tlsProxy(t, srv.URL())

	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ALLOT_") || strings.HasPrefix(k, "PREFECT_") || k == "PYTHONPATH" || k == "SSL_CERT_FILE" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PYTHONPATH=src", "PYTHONDONTWRITEBYTECODE=1",
		"ALLOT_TEST_URL="+srv.URL(), "ALLOT_TEST_BIN="+bin,
		"ALLOT_TEST_TLS_URL="+tlsURL, "ALLOT_TEST_CA_FILE="+caFile)

	// The suites mostly wait on timers; two at a time keep a small
	// machine responsive enough for the hand-off bound.
	sem := make(chan struct{}, max(2, runtime.NumCPU()/2))
	for _, py := range pythons {
		t.Run(py.version, func(t *testing.T) {
			t.Parallel()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, py.path, "-X", "dev", "-W", "error", "-m", "unittest", "discover",
				"-s", "tests", "-t", ".", "-v")
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\n%s", py.path, err, out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			t.Logf("%s: %s in %s", py.path, lines[len(lines)-1], time.Since(start).Round(time.Millisecond))
		})
	}
}

// buildServer builds cmd/allot into the test's temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "allot")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/allot")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/allot: %v\n%s", err, out)
	}
	return bin
}

// tlsProxy serves HTTPS on 127.0.0.1 with a certificate of a test CA and
// passes every request on to the server at apiURL. It returns the proxy's
// API URL and the CA's PEM file.
func tlsProxy(t *testing.T, apiURL string) (string, string) {
	t.Helper()
	target, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	target.Path = ""
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "allot python test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	ts := httptest.NewUnstartedServer(proxy)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts.URL + "/api", caFile
}

// TestPackaging builds the wheel offline with Debian's python3 (and its
// python3-setuptools, python3-wheel, python3-pip, python3-venv), installs
// it into a fresh venv without an index, imports it and checks that
// py.typed is installed.
func TestPackaging(t *testing.T) {
	t.Parallel()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			skipOrFail(t, "no python3 to build the wheel with")
		}
	}
	if out, err := exec.Command(py, "-c", "import setuptools, wheel, pip, venv, ensurepip").CombinedOutput(); err != nil {
		skipOrFail(t, "%s lacks what building the wheel needs (apt-get install python3-setuptools python3-wheel python3-pip python3-venv): %s", py, out)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"pyproject.toml", "README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(filepath.Join(src, "src"), os.DirFS("src")); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PIP_NO_INDEX=1", "PIP_DISABLE_PIP_VERSION_CHECK=1", "PYTHONPATH=",
			"PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dist := filepath.Join(dir, "dist")
	run(py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src)
	wheels, _ := filepath.Glob(filepath.Join(dist, "allot_client-*.whl"))
	if len(wheels) != 1 {
		t.Fatalf("wheels built: %q, want one allot_client-*.whl", wheels)
	}
	venv := filepath.Join(dir, "venv")
	run(py, "-m", "venv", venv)
	vpy := filepath.Join(venv, "bin", "python")
	run(vpy, "-m", "pip", "install", "--no-index", "--no-deps", wheels[0])
	out := run(vpy, "-c", `import importlib.resources as r, importlib.metadata as m
import allot, allot.concurrency.sync, allot.concurrency.asyncio
assert r.files("allot").joinpath("py.typed").is_file(), "py.typed missing"
assert allot.__file__.startswith(__import__("sys").prefix), allot.__file__
print(m.version("allot-client"), allot.__version__)`)
	if f := strings.Fields(out); len(f) != 2 || f[0] != f[1] {
		t.Errorf("installed version and allot.__version__: %q", out)
	}
}
