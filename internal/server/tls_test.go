package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/allot-dev/allot"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for 127.0.0.1 (a server) or a client, and
// returns its PEM and its key's.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func write(t *testing.T, path string, data []byte) string {
	t.Helper()
	// Write then rename, as a certificate manager does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// runServer runs a server with cfg until the test ends and returns its
// address.
func runServer(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.Listening = func(a net.Addr) { addr <- a.String() }
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start in 30 s")
	}
	return ""
}

// TestTLS: the SDK trusts the server's CA through ALLOT_CA_FILE, refuses
// a server whose CA it does not know, and a renewed certificate is served
// without a restart. (Not parallel: it sets ALLOT_CA_FILE.)
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "allot test CA"), newCA(t, "another CA")
	certPEM, keyPEM := ca.issue(t, "allot", 100, false)
	certFile, keyFile := write(t, filepath.Join(dir, "cert.pem"), certPEM), write(t, filepath.Join(dir, "key.pem"), keyPEM)
	caFile, otherFile := write(t, filepath.Join(dir, "ca.pem"), ca.pem), write(t, filepath.Join(dir, "other.pem"), other.pem)
	addr := runServer(t, Config{TLSCert: certFile, TLSKey: keyFile, TLSPoll: 20 * time.Millisecond})
	url := "https://" + addr + "/api"

	t.Setenv(allot.EnvCAFile, caFile)
	c, err := allot.NewClient(allot.WithURL(url), allot.WithAPIKey(""), allot.WithRetry(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(t.Context(), allot.LimitSpec{Name: "db", Limit: 1}); err != nil {
		t.Fatalf("over TLS with ALLOT_CA_FILE: %v", err)
	}
	wrong, err := allot.NewClient(allot.WithURL(url), allot.WithAPIKey(""), allot.WithCAFile(otherFile), allot.WithRetry(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var uae x509.UnknownAuthorityError
	if _, err := wrong.GetLimit(t.Context(), "db"); !errors.As(err, &uae) {
		t.Errorf("with another CA: %v, want an unknown authority error", err)
	}

	// TLS 1.1 is refused.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Errorf("a TLS 1.1 handshake succeeded")
	}

	// A renewed certificate is picked up without a restart.
	certPEM, keyPEM = ca.issue(t, "allot", 200, false)
	write(t, keyFile, keyPEM)
	write(t, certFile, certPEM)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
		if err == nil {
			serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
			conn.Close()
			if serial == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10 s (last error %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.GetLimit(t.Context(), "db"); err != nil {
		t.Errorf("after the renewal: %v", err)
	}
}

// TestTLSClientCertificates: with --tls-client-ca a client without a
// certificate is refused; one with a certificate whose name has scopes
// acts with them, without a key.
func TestTLSClientCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, clients := newCA(t, "server CA"), newCA(t, "client CA")
	certPEM, keyPEM := ca.issue(t, "allot", 1, false)
	clientPEM, clientKey := clients.issue(t, "etl-workers", 2, true)
	addr := runServer(t, Config{
		TLSCert: write(t, filepath.Join(dir, "cert.pem"), certPEM), TLSKey: write(t, filepath.Join(dir, "key.pem"), keyPEM),
		TLSClientCA: write(t, filepath.Join(dir, "clients.pem"), clients.pem),
		Auth:        AuthKeys, BootstrapKey: "allot_0123456789ab_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		CertScopes: map[string][]string{"etl-workers": {"read"}},
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	get := func(certs []tls.Certificate, method string) (int, error) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), method, "https://"+addr+"/api/v2/concurrency_limits/db", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(nil, "GET"); err == nil {
		t.Errorf("without a client certificate: %d, want a refused handshake", code)
	}
	pair, err := tls.X509KeyPair(clientPEM, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get([]tls.Certificate{pair}, "GET"); err != nil || code != 404 {
		t.Errorf("read with the client certificate: %d, %v; want 404 (no such limit)", code, err)
	}
	if code, err := get([]tls.Certificate{pair}, "DELETE"); err != nil || code != 403 {
		t.Errorf("delete with a read-only certificate: %d, %v; want 403", code, err)
	}
}
