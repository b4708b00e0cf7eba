package server

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// TestWebUIBehindTheGate: with --auth keys the web UI needs a key too, and
// a browser's Basic credentials (any user, the key as password) are one.
func TestWebUIBehindTheGate(t *testing.T) {
	t.Parallel()
	key := "allot_0123456789ab_" + strings.Repeat("cd", 32)
	addr := runServer(t, Config{Auth: AuthKeys, BootstrapKey: key})
	get := func(auth string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/ui/limits", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get(""); r.StatusCode != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("the UI without a key: %d, WWW-Authenticate %q; want 401 with a Basic challenge", r.StatusCode, r.Header.Get("WWW-Authenticate"))
	}
	if r := get("Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+key))); r.StatusCode != 200 {
		t.Errorf("the UI with the key as a browser sends it: %d, want 200", r.StatusCode)
	}
}

// TestReplicasRefuseClientCA: a follower forwards to the leader, which
// would not see the client's certificate, so --tls-client-ca with
// --database refuses to start rather than serve without it.
func TestReplicasRefuseClientCA(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), Config{DatabaseURL: "postgres://127.0.0.1:1/none", TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "--tls-client-ca is not available with --database") {
		t.Errorf("Run with --database and --tls-client-ca: %v, want a refusal naming the flag", err)
	}
}
