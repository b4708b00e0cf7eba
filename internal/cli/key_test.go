package cli_test

import (
	"regexp"
	"strings"
	"testing"
)

// TestKeyCommands runs allot key create, ls, rotate and revoke against a
// server with --auth keys, and checks that each key does what its scopes
// say and that no listing shows a secret.
func TestKeyCommands(t *testing.T) {
	t.Parallel()
	admin := "allot_0123456789ab_" + strings.Repeat("ab", 32)
	s, err := startServerArgs(t.TempDir(), []string{"ALLOT_BOOTSTRAP_KEY=" + admin}, "--auth", "keys")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	keyRE := regexp.MustCompile(`allot_[0-9a-f]{12}_[0-9a-f]{64}`)

	// Without a key: refused, with the exit code of an error.
	if r := s.run(t, "gcl", "ls"); r.code != 1 || !strings.Contains(r.stderr, "set ALLOT_API_KEY") {
		t.Fatalf("gcl ls without a key: exit %d, stderr %q; want 1 and a hint to set ALLOT_API_KEY", r.code, r.stderr)
	}
	r := s.run(t, "--api-key", admin, "key", "create", "--name", "etl", "--scope", "read", "--scope", "acquire:warehouse*", "--expires", "90d")
	if r.code != 0 {
		t.Fatalf("key create: exit %d: %s", r.code, r.stderr)
	}
	etl := keyRE.FindString(r.stdout)
	if etl == "" {
		t.Fatalf("key create printed no key: %q", r.stdout)
	}
	id := etl[len("allot_") : len("allot_")+12]
	if r := s.run(t, "--api-key", admin, "gcl", "create", "warehouse", "--limit", "1"); r.code != 0 {
		t.Fatalf("gcl create: %s", r.stderr)
	}
	if r := s.run(t, "--api-key", etl, "gcl", "ls"); r.code != 0 || !strings.Contains(r.stdout, "warehouse") {
		t.Fatalf("gcl ls with the read key: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := s.run(t, "--api-key", etl, "gcl", "delete", "warehouse", "--yes"); r.code == 0 || !strings.Contains(r.stderr, "lacks manage") {
		t.Fatalf("gcl delete with the read key: exit %d, stderr %q; want a refusal naming the scope", r.code, r.stderr)
	}
	if r := s.run(t, "--api-key", etl, "run", "--limit", "warehouse", "--", "true"); r.code != 0 {
		t.Fatalf("run with acquire:warehouse*: exit %d: %s", r.code, r.stderr)
	}

	ls := s.run(t, "--api-key", admin, "key", "ls")
	if ls.code != 0 || !strings.Contains(ls.stdout, id) || !strings.Contains(ls.stdout, "acquire:warehouse*") || keyRE.MatchString(ls.stdout) {
		t.Fatalf("key ls: exit %d: %q; want the id and scopes, never a key", ls.code, ls.stdout)
	}
	rot := s.run(t, "--api-key", admin, "key", "rotate", id)
	succ := keyRE.FindString(rot.stdout)
	if rot.code != 0 || succ == "" || succ == etl {
		t.Fatalf("key rotate: exit %d: %q", rot.code, rot.stdout)
	}
	if r := s.run(t, "--api-key", etl, "gcl", "ls"); r.code == 0 {
		t.Errorf("the rotated key (no grace) still works")
	}
	if r := s.run(t, "--api-key", succ, "gcl", "ls"); r.code != 0 {
		t.Errorf("the successor does not work: %s", r.stderr)
	}
	if r := s.run(t, "--api-key", admin, "key", "revoke", succ[len("allot_"):len("allot_")+12]); r.code != 0 {
		t.Fatalf("key revoke: %s", r.stderr)
	}
	if r := s.run(t, "--api-key", succ, "gcl", "ls"); r.code == 0 {
		t.Errorf("the revoked key still works")
	}
	if r := s.run(t, "--api-key", admin, "audit", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"action": "key.revoke"`) ||
		!strings.Contains(r.stdout, `"action": "key.create"`) || keyRE.MatchString(r.stdout) {
		t.Errorf("audit: exit %d: %s%s; want the key changes, never a key", r.code, r.stdout, r.stderr)
	}
	if r := s.run(t, "key", "generate"); r.code != 0 || !keyRE.MatchString(r.stdout) {
		t.Errorf("key generate: exit %d: %q", r.code, r.stdout)
	}
	if r := s.run(t, "--api-key", admin, "key", "create", "--name", "x"); r.code != 2 {
		t.Errorf("key create without a scope: exit %d, want 2 (usage)", r.code)
	}
}
