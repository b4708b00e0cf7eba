// Package pgtest gives each test its own schema in the test PostgreSQL.
//
// The database is ALLOT_TEST_DATABASE_URL, or DefaultURL when it is unset.
// When it does not answer, a test skips with a message saying so, or fails
// when CI=true: CI must run the tests that need PostgreSQL.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the test database when ALLOT_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL returns the test database's URL.
func URL() string {
	if u := os.Getenv("ALLOT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Schema creates a schema with a random name in the test database, drops
// it (and everything in it) when the test ends, and returns the database
// URL and the schema's name. It skips the test (fails it when CI=true) if
// the database does not answer.
func Schema(t testing.TB) (url, schema string) {
	t.Helper()
	url = URL()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		msg := "PostgreSQL does not answer at " + url + " (set ALLOT_TEST_DATABASE_URL, or run .ci/run which starts it): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to keep
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails
	schema = "allot_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }() // nothing to keep
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}
