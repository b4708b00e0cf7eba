package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The lease every acquire asks for: long enough never to expire during a
// run, and a wait in line bounded well above any hand-off the workloads
// expect.
const (
	leaseDurationSeconds = 60
	waitTimeoutSeconds   = 30
	// requestSlack is added to the wait timeout for the client-side
	// deadline of a request, so the server answers 423 before the client
	// gives up.
	requestSlack = 10 * time.Second
	// shortTimeout bounds the set-up, check and clean-up requests.
	shortTimeout = 10 * time.Second
)

// errLocked is returned by acquire when the server answered 423: the slot
// was not granted within the wait timeout.
var errLocked = errors.New("not granted in time (423)")

// statusError is an unexpected HTTP status.
type statusError struct {
	op   string
	code int
	body string
}

func (e *statusError) Error() string {
	if e.body == "" {
		return fmt.Sprintf("%s: unexpected status %d", e.op, e.code)
	}
	return fmt.Sprintf("%s: unexpected status %d: %s", e.op, e.code, e.body)
}

// client speaks the part of allot's HTTP API that the workloads use.
type client struct {
	hc         *http.Client
	limitsURL  string // …/v2/concurrency_limits/
	acquireURL string
	releaseURL string
	// raw makes the workers' hot path use rawConn instead of hc.
	raw bool
	// apiKey is sent by the raw connections (hc sends it itself).
	apiKey string
}

// withBearer returns a client like hc that sends key as a bearer token
// ("" returns hc).
func withBearer(hc *http.Client, key string) *http.Client {
	if key == "" {
		return hc
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = bearerTransport{next: next, header: "Bearer " + key}
	return &c
}

type bearerTransport struct {
	next   http.RoundTripper
	header string
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", t.header)
	return t.next.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the transport.
func (t bearerTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// pairer is a worker's own way to acquire and release.
type pairer interface {
	acquire(ctx context.Context, body []byte) (grant, error)
	release(ctx context.Context, leaseID string) error
	close()
}

// worker returns the hot-path client of one worker: a raw connection of its
// own, or the shared http.Client.
func (c *client) worker() pairer {
	if c.raw {
		if rc, err := newRawConn(c.acquireURL); err == nil {
			rc.auth = c.apiKey
			return &rawPairer{c: rc, acquirePath: pathOf(c.acquireURL), releasePath: pathOf(c.releaseURL)}
		}
	}
	return httpPairer{c}
}

type httpPairer struct{ *client }

func (httpPairer) close() {}

// rawPairer speaks the hot path over one rawConn.
type rawPairer struct {
	c                        *rawConn
	acquirePath, releasePath string
	body                     []byte
}

func (p *rawPairer) close() { p.c.close() }

func (p *rawPairer) acquire(ctx context.Context, body []byte) (grant, error) {
	code, resp, err := p.c.post(ctx, waitTimeoutSeconds*time.Second+requestSlack, p.acquirePath, body)
	if err != nil {
		return grant{}, fmt.Errorf("acquire: %w", err)
	}
	switch code {
	case http.StatusOK:
	case http.StatusLocked:
		return grant{}, errLocked
	default:
		return grant{}, &statusError{op: "acquire", code: code, body: strings.TrimSpace(string(resp))}
	}
	g, err := parseGrant(resp)
	if err != nil {
		return grant{}, fmt.Errorf("acquire: %w", err)
	}
	if g.LeaseID == "" {
		return grant{}, errors.New("acquire: answer without lease_id")
	}
	return g, nil
}

func (p *rawPairer) release(ctx context.Context, leaseID string) error {
	p.body = append(append(append(p.body[:0], `{"lease_id":`...), quote(leaseID)...), '}')
	code, resp, err := p.c.post(ctx, shortTimeout, p.releasePath, p.body)
	if err != nil {
		return fmt.Errorf("release %s: %w", leaseID, err)
	}
	if code/100 != 2 {
		return &statusError{op: "release " + leaseID, code: code, body: strings.TrimSpace(string(resp))}
	}
	return nil
}

// pathOf returns the path of an absolute URL.
func pathOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.EscapedPath()
}

// newTransport returns a transport tuned for conns concurrent requests to
// one host over HTTP/1.1 with keep-alive: every worker keeps its own
// connection, so no request pays for a new one.
func newTransport(conns int) *http.Transport {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Protocols:           &p,
	}
}

func newClient(hc *http.Client, base string) *client {
	base = strings.TrimRight(base, "/")
	limits := base + "/v2/concurrency_limits/"
	return &client{
		hc:         hc,
		limitsURL:  limits,
		acquireURL: limits + "increment-with-lease",
		releaseURL: limits + "decrement-with-lease",
	}
}

func (c *client) do(ctx context.Context, method, u string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.hc.Do(req)
}

// finish drains and closes a response body so its connection is reused.
func finish(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

// unexpected reads the start of a response body into a statusError and
// closes the response.
func unexpected(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	finish(resp)
	return &statusError{op: op, code: resp.StatusCode, body: strings.TrimSpace(string(b))}
}

func (c *client) limitURL(name string) string {
	return c.limitsURL + url.PathEscape(name)
}

// ensureLimit creates an active limit of limit slots, or updates the one of
// that name that already exists.
func (c *client) ensureLimit(ctx context.Context, name string, limit int) error {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	body, err := json.Marshal(struct {
		Name  string `json:"name"`
		Limit int    `json:"limit"`
	}{name, limit})
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, c.limitsURL, body)
	if err != nil {
		return fmt.Errorf("create limit %s: %w", name, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK:
		finish(resp)
		return nil
	case http.StatusConflict:
		finish(resp)
	default:
		return unexpected("create limit "+name, resp)
	}
	body = fmt.Appendf(nil, `{"limit":%d,"active":true}`, limit)
	resp, err = c.do(ctx, http.MethodPatch, c.limitURL(name), body)
	if err != nil {
		return fmt.Errorf("update limit %s: %w", name, err)
	}
	if resp.StatusCode/100 != 2 {
		return unexpected("update limit "+name, resp)
	}
	finish(resp)
	return nil
}

// deleteLimit deletes a limit; a limit that is already gone is not an
// error.
func (c *client) deleteLimit(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	resp, err := c.do(ctx, http.MethodDelete, c.limitURL(name), nil)
	if err != nil {
		return fmt.Errorf("delete limit %s: %w", name, err)
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return unexpected("delete limit "+name, resp)
	}
	finish(resp)
	return nil
}

// reach checks that the server answers HTTP at all, by reading the limit
// called name: whether it exists does not matter.
func (c *client) reach(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, c.limitURL(name), nil)
	if err != nil {
		return fmt.Errorf("reach server: %w", err)
	}
	finish(resp)
	return nil
}

// limitState is the part of a limit's state the workloads check.
type limitState struct {
	ActiveSlots int `json:"active_slots"`
	Waiting     int `json:"waiting"`
}

// activeSlots reads how many slots of a limit are held.
func (c *client) activeSlots(ctx context.Context, name string) (int, error) {
	s, err := c.readLimit(ctx, name)
	return s.ActiveSlots, err
}

// readLimit reads how many slots of a limit are held and how many requests
// wait in line for it.
func (c *client) readLimit(ctx context.Context, name string) (limitState, error) {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, c.limitURL(name), nil)
	if err != nil {
		return limitState{}, fmt.Errorf("read limit %s: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return limitState{}, unexpected("read limit "+name, resp)
	}
	defer finish(resp)
	var s limitState
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return limitState{}, fmt.Errorf("read limit %s: %w", name, err)
	}
	return s, nil
}

// grant is what an acquire returns.
type grant struct {
	LeaseID      string `json:"lease_id"`
	FencingToken int64  `json:"fencing_token"`
}

// parseGrant reads the two fields of a grant the workers use. It picks them
// out of the form allot writes (a plain lease_id string, an integer
// fencing_token) without reflection, and leaves anything else to
// encoding/json.
func parseGrant(resp []byte) (grant, error) {
	var g grant
	id, idOK := fieldText(resp, `"lease_id":"`, '"')
	token, tokenOK := fieldText(resp, `"fencing_token":`, ',', '}')
	if idOK && tokenOK && json.Valid(resp) {
		if n, err := strconv.ParseInt(string(token), 10, 64); err == nil && bytes.IndexByte(id, '\\') < 0 {
			return grant{LeaseID: string(id), FencingToken: n}, nil
		}
	}
	err := json.Unmarshal(resp, &g)
	return g, err
}

// fieldText returns the text that follows the first key in resp, up to the
// first of the ends.
func fieldText(resp []byte, key string, ends ...byte) ([]byte, bool) {
	_, rest, ok := bytes.Cut(resp, []byte(key))
	if !ok {
		return nil, false
	}
	i := bytes.IndexAny(rest, string(ends))
	if i < 0 {
		return nil, false
	}
	return rest[:i], true
}

// appendAcquireBody appends the body of an increment-with-lease request for
// one slot of the limit whose JSON-quoted name is nameJSON, held by the
// holder whose JSON-quoted id is holderJSON.
func appendAcquireBody(b, nameJSON, holderJSON []byte) []byte {
	return appendLeaseBody(b, nameJSON, holderJSON, leaseDurationSeconds, waitTimeoutSeconds)
}

// appendLeaseBody is appendAcquireBody with the lease's duration and the
// wait in line, both in seconds, chosen by the caller; a wait of 0 asks the
// server to refuse at once rather than queue the request.
func appendLeaseBody(b, nameJSON, holderJSON []byte, leaseSeconds, waitSeconds int) []byte {
	b = append(b, `{"names":[`...)
	b = append(b, nameJSON...)
	b = fmt.Appendf(b, `],"slots":1,"lease_duration":%d,"timeout_seconds":%d,"holder":{"type":"process","id":`,
		leaseSeconds, waitSeconds)
	b = append(b, holderJSON...)
	return append(b, "}}"...)
}

// acquire sends the request body built by appendAcquireBody and waits in
// line for the grant.
func (c *client) acquire(ctx context.Context, body []byte) (grant, error) {
	var g grant
	if err := c.acquireWithin(ctx, body, waitTimeoutSeconds*time.Second, &g); err != nil {
		return grant{}, err
	}
	if g.LeaseID == "" {
		return grant{}, errors.New("acquire: answer without lease_id")
	}
	return g, nil
}

// acquireWithin sends an increment-with-lease request whose body asks to
// wait in line up to wait, and decodes the grant into v. It gives up on
// the server requestSlack after wait.
func (c *client) acquireWithin(ctx context.Context, body []byte, wait time.Duration, v any) error {
	ctx, cancel := context.WithTimeout(ctx, wait+requestSlack)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, c.acquireURL, body)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusLocked:
		finish(resp)
		return errLocked
	default:
		return unexpected("acquire", resp)
	}
	defer finish(resp)
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	return nil
}

// release releases a lease.
func (c *client) release(ctx context.Context, leaseID string) error {
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	body := append([]byte(`{"lease_id":`), quote(leaseID)...)
	body = append(body, '}')
	resp, err := c.do(ctx, http.MethodPost, c.releaseURL, body)
	if err != nil {
		return fmt.Errorf("release %s: %w", leaseID, err)
	}
	if resp.StatusCode/100 != 2 {
		return unexpected("release "+leaseID, resp)
	}
	finish(resp)
	return nil
}

// quote returns s as a JSON string.
func quote(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}
