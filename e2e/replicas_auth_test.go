package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
)

// TestReplicasAuth runs two replicas over one PostgreSQL with --auth keys
// and ALLOT_BOOTSTRAP_KEY (and, in its TLS case, --tls-cert): a follower
// forwards a request with its credentials to the leader's gate, so a
// request without a key gets 401 through the follower and one with the key
// succeeds; a key created through the follower works on the leader; after
// a SIGKILL of the leader, that key still works through the new leader.
func TestReplicasAuth(t *testing.T) {
	t.Parallel()
	for _, tlsOn := range []bool{false, true} {
		name := "http"
		if tlsOn {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testReplicasAuth(t, tlsOn)
		})
	}
}

func testReplicasAuth(t *testing.T, tlsOn bool) {
	_, schema := pgtest.Schema(t)
	u := replicaURL(t, schema)
	admin := "allot_0123456789ab_" + strings.Repeat("5", 64)
	args := []string{"--database", u, "--leader-lease", "2s", "--auth", "keys"}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if tlsOn {
		certFile, keyFile, pool := selfSigned(t)
		args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
		base.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	t.Cleanup(base.CloseIdleConnections)
	var replicas []*server
	for range 2 {
		replicas = append(replicas, startServerEnv(t, t.TempDir(), "", []string{"ALLOT_BOOTSTRAP_KEY=" + admin}, args...))
	}
	anonymous := &http.Client{Timeout: 10 * time.Second, Transport: base}
	as := func(key string) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: bearer{key: key, base: base}}
	}

	var leader, follower *server
	waitFor(t, func() bool {
		leader, follower = nil, nil
		for _, r := range replicas {
			if code, _, _ := call(t.Context(), anonymous, "GET", r.url("/ready?role=leader"), nil, nil); code == 200 {
				leader = r
			} else {
				follower = r
			}
		}
		return leader != nil && follower != nil
	})

	// Through the follower: no key, a bad key, then the admin key.
	code, h, err := call(t.Context(), anonymous, "GET", follower.url("/v2/concurrency_limits/db"), nil, nil)
	if code != 401 || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key through the follower: %d (%v), WWW-Authenticate %q; want 401 with a challenge", code, err, h.Get("WWW-Authenticate"))
	}
	mustCall(t, as("allot_000000000000_"+strings.Repeat("0", 64)), "GET", follower.url("/v2/concurrency_limits/db"), nil, nil, 401)
	mustCall(t, as(admin), "POST", follower.url("/v2/concurrency_limits/"), map[string]any{"name": "db", "limit": 2}, nil, 201)

	// A key made through the follower works on the leader.
	var made struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	mustCall(t, as(admin), "POST", follower.url("/admin/keys"), map[string]any{"name": "etl", "scopes": []string{"read", "acquire:db"}}, &made, 201)
	var lease leaseAnswer
	mustCall(t, as(made.Key), "POST", leader.url("/v2/concurrency_limits/increment-with-lease"),
		map[string]any{"names": []string{"db"}, "slots": 1, "lease_duration": 600}, &lease, 200)
	// Its scopes hold through the follower too.
	mustCall(t, as(made.Key), "DELETE", follower.url("/v2/concurrency_limits/db"), nil, nil, 403)

	// The new leader has the key.
	leader.kill()
	callRetrying(t, as(made.Key), "GET", follower.url("/v2/concurrency_limits/db"), nil, nil, 200)
	callRetrying(t, anonymous, "GET", follower.url("/v2/concurrency_limits/db"), nil, nil, 401)
	callRetrying(t, as(made.Key), "POST", follower.url("/v2/concurrency_limits/leases/"+lease.LeaseID+"/renew"), map[string]any{}, nil, 204)

	for _, r := range replicas {
		for _, secret := range []string{strings.Repeat("5", 64), made.Key[len("allot_0123456789ab_"):]} {
			if strings.Contains(r.log.String(), secret) {
				t.Errorf("replica %s's log carries a secret", r.addr)
			}
		}
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into a temporary directory, and returns their files and a pool that
// trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "allot replicas"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
