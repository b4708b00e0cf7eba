package allot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Key is an API key as the server shows it (with --auth keys): never its
// secret, except Secret in the answer of CreateKey and RotateKey.
type Key struct {
	// ID is the public part of the key.
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// Created is when the key was made; Expires, Revoked and LastUsed are
	// nil for never (LastUsed is as of the server's last flush, about a
	// minute).
	Created  time.Time  `json:"created"`
	Expires  *time.Time `json:"expires"`
	Revoked  *time.Time `json:"revoked"`
	LastUsed *time.Time `json:"last_used"`
	// Secret is the whole key, allot_<id>_<secret>, shown once: by
	// CreateKey and RotateKey only.
	Secret string `json:"key,omitempty"`
}

// KeySpec describes a key to create.
type KeySpec struct {
	Name string
	// Scopes are read, acquire:GLOB, manage:GLOB or admin.
	Scopes []string
	// TTL is how long the key works; zero: until it is revoked.
	TTL time.Duration
}

const keysPrefix = "/admin/keys"

// CreateKey makes an API key; its Secret is shown this once. It needs the
// admin scope.
func (c *Client) CreateKey(ctx context.Context, spec KeySpec) (*Key, error) {
	body := map[string]any{"name": spec.Name, "scopes": spec.Scopes}
	if spec.TTL > 0 {
		body["expires_seconds"] = spec.TTL.Seconds()
	}
	var k Key
	err := c.do(ctx, request{method: http.MethodPost, path: keysPrefix, body: jsonBody(body), accept: []int{http.StatusCreated}}, &k)
	if err != nil {
		return nil, fmt.Errorf("create key %q: %w", spec.Name, err)
	}
	return &k, nil
}

// Keys lists every API key, revoked ones included, oldest first.
func (c *Client) Keys(ctx context.Context) ([]*Key, error) {
	var ks []*Key
	if err := c.do(ctx, request{method: http.MethodGet, path: keysPrefix, accept: []int{http.StatusOK}}, &ks); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return ks, nil
}

// RotateKey makes a successor of key id with its name and scopes, and
// returns it with its Secret; the old key stops working after grace (at
// once for zero).
func (c *Client) RotateKey(ctx context.Context, id string, grace time.Duration) (*Key, error) {
	var k Key
	err := c.do(ctx, request{method: http.MethodPost, path: keysPrefix + "/" + url.PathEscape(id) + "/rotate",
		body: jsonBody(map[string]any{"grace_seconds": grace.Seconds()}), accept: []int{http.StatusCreated}}, &k)
	if err != nil {
		return nil, fmt.Errorf("rotate key %s: %w", id, err)
	}
	return &k, nil
}

// RevokeKey revokes key id: its next request is refused, and its open
// event streams and waiting requests end.
func (c *Client) RevokeKey(ctx context.Context, id string) (*Key, error) {
	var k Key
	err := c.do(ctx, request{method: http.MethodPost, path: keysPrefix + "/" + url.PathEscape(id) + "/revoke",
		accept: []int{http.StatusOK}}, &k)
	if err != nil {
		return nil, fmt.Errorf("revoke key %s: %w", id, err)
	}
	return &k, nil
}

// AuditRecord is one record of the server's audit log: a change of keys or
// limits, a reset or revocation, or a refused key.
type AuditRecord struct {
	Seq       uint64          `json:"seq"`
	Time      time.Time       `json:"time"`
	KeyID     string          `json:"key_id"`
	KeyName   string          `json:"key_name"`
	Remote    string          `json:"remote"`
	RequestID string          `json:"request_id"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	Status    int             `json:"status"`
	Before    json.RawMessage `json:"before"`
	After     json.RawMessage `json:"after"`
}

// Audit returns up to n audit records (at most 1000), newest first, of
// keyID ("" for every key). It needs the admin scope.
func (c *Client) Audit(ctx context.Context, keyID string, n int) ([]*AuditRecord, error) {
	q := url.Values{}
	q.Set("limit", strconv.Itoa(n))
	if keyID != "" {
		q.Set("key_id", keyID)
	}
	var out []*AuditRecord
	if err := c.do(ctx, request{method: http.MethodGet, path: "/admin/audit?" + q.Encode(), accept: []int{http.StatusOK}}, &out); err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	return out, nil
}
