package allot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultURL is the API's address when neither WithURL nor ALLOT_API_URL
// says otherwise.
const DefaultURL = "http://127.0.0.1:4200/api"

// Environment variables NewClient reads. EnvURL may name several
// replicas' URLs, separated by commas (see WithURLs).
const (
	EnvURL    = "ALLOT_API_URL"
	EnvAPIKey = "ALLOT_API_KEY"
	// EnvCAFile names a PEM file of the certificate authorities that sign
	// the server's certificate (a server with --tls-cert), trusted in
	// addition to the system's.
	EnvCAFile = "ALLOT_CA_FILE"
)

const (
	defaultRetries = 4
	defaultBackoff = 200 * time.Millisecond
	maxBackoff     = 10 * time.Second
	// requestTimeout bounds one attempt of a request, beyond the time the
	// server may keep it waiting in line.
	requestTimeout = 30 * time.Second
	// maxLongPoll is the longest the server keeps a request in line
	// (its timeout_seconds maximum).
	maxLongPoll = time.Hour
	// maxResponse bounds the answers read.
	maxResponse = 64 << 20
)

// Client talks to an allot server. It is safe for concurrent use; create one
// and share it.
type Client struct {
	base     string // the API's URL (the first, when there are several), without a trailing slash
	replicas replicas
	apiKey   string
	hc       *http.Client
	log      *slog.Logger
	retries  int
	backoff  time.Duration
	longPoll time.Duration
	holder   Identity // the default holder of leases
	caFile   string
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithURL sets the API's URL, for example "http://127.0.0.1:4200/api". It
// takes precedence over ALLOT_API_URL. Several URLs separated by commas
// are as WithURLs.
func WithURL(u string) ClientOption { return func(c *Client) { c.base = u } }

// WithURLs sets the URLs of several replicas of one allot service (allot
// server --database). Any of them serves every request (a follower
// forwards to the leader); the Client sends to the one that leads when an
// answer names it (the Allot-Leader header names a replica among urls),
// and moves on to the next URL, with the usual backoff, when one does not
// answer or answers 502, 503 or 504. It takes precedence over
// ALLOT_API_URL, which may also list several URLs separated by commas.
func WithURLs(urls ...string) ClientOption {
	return func(c *Client) { c.base = strings.Join(urls, ",") }
}

// WithAPIKey sets the key sent as "Authorization: Bearer KEY". It takes
// precedence over ALLOT_API_KEY.
func WithAPIKey(key string) ClientOption { return func(c *Client) { c.apiKey = key } }

// WithCAFile trusts the certificate authorities in the PEM file path for
// the server's certificate, besides the system's. It takes precedence over
// ALLOT_CA_FILE, and is ignored with WithHTTPClient.
func WithCAFile(path string) ClientOption { return func(c *Client) { c.caFile = path } }

// WithHTTPClient sets the HTTP client requests go through. Its Timeout
// should be zero: a request waiting in line lasts as long as it waits.
func WithHTTPClient(hc *http.Client) ClientOption { return func(c *Client) { c.hc = hc } }

// WithLogger sets where the Client logs what it carries on after: a missing
// limit, a failed renewal, a lost lease, a retried request. The default is
// slog.Default() at the time NewClient is called.
func WithLogger(l *slog.Logger) ClientOption { return func(c *Client) { c.log = l } }

// WithRetry sets how often a request is retried after a connection error or
// a 5xx answer (default 4 times), and the first pause between tries (default
// 200 ms), which doubles with each try up to 10 s and is jittered. Answers
// below 500 are never retried. max 0 disables retries.
func WithRetry(max int, backoff time.Duration) ClientOption {
	return func(c *Client) { c.retries, c.backoff = max, backoff }
}

// WithLongPoll sets the longest one request stays in line on the server
// (default and maximum: one hour, the server's limit). An acquisition
// that waits longer sends another request, which joins the back of the
// line, so keep it long; lower it only behind a proxy that cuts idle
// connections sooner.
func WithLongPoll(d time.Duration) ClientOption { return func(c *Client) { c.longPoll = d } }

// NewClient returns a Client. Unless options say otherwise it talks to
// ALLOT_API_URL (default DefaultURL) with the key in ALLOT_API_KEY, if
// any.
func NewClient(opts ...ClientOption) (*Client, error) {
	c := &Client{
		base:     os.Getenv(EnvURL),
		apiKey:   os.Getenv(EnvAPIKey),
		caFile:   os.Getenv(EnvCAFile),
		retries:  defaultRetries,
		backoff:  defaultBackoff,
		longPoll: maxLongPoll,
	}
	if c.base == "" {
		c.base = DefaultURL
	}
	for _, o := range opts {
		o(c)
	}
	for raw := range strings.SplitSeq(c.base, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("new client: %w: url %q: %w", ErrInvalid, raw, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("new client: %w: url %q must be http:// or https:// with a host", ErrInvalid, raw)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("new client: %w: url %q must have no query or fragment", ErrInvalid, raw)
		}
		c.replicas.bases = append(c.replicas.bases, strings.TrimRight(u.String(), "/"))
		c.replicas.hosts = append(c.replicas.hosts, u.Host)
	}
	c.base = c.replicas.bases[0]
	if c.retries < 0 || c.backoff < 0 {
		return nil, fmt.Errorf("new client: %w: retries and backoff must not be negative", ErrInvalid)
	}
	if c.longPoll <= 0 || c.longPoll > maxLongPoll {
		c.longPoll = maxLongPoll
	}
	if c.hc == nil {
		t, err := newTransport(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("new client: %w: %w", ErrInvalid, err)
		}
		c.hc = &http.Client{Transport: t}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.holder = defaultHolder()
	return c, nil
}

// newTransport is http.DefaultTransport's settings with more idle
// connections per host (many goroutines of one process talk to one
// server), trusting the authorities in caFile too, if given.
func newTransport(caFile string) (http.RoundTripper, error) {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport, nil
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = 64
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvCAFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", EnvCAFile, caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// holderProcess is the holder kind of a process (a test checks it is one
// of the server's).
const holderProcess = "process"

// defaultHolder names this process: kind "process", id "hostname:pid".
func defaultHolder() Identity {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return Identity{Kind: holderProcess, ID: host + ":" + strconv.Itoa(os.Getpid())}
}

// URL returns the API's URL the Client talks to: of several, the one it
// sends to now.
func (c *Client) URL() string {
	_, base := c.replicas.pick()
	return base
}

// leaderHeader names, on every answer of a replica, the replica that leads
// (host:port).
const leaderHeader = "Allot-Leader"

// replicas picks which of the Client's URLs a request goes to. It is safe
// for concurrent use.
type replicas struct {
	bases []string // every URL, without a trailing slash
	hosts []string // the host:port of each
	cur   atomic.Int32
}

// pick returns the URL to send to, and its index.
func (r *replicas) pick() (int, string) {
	i := int(r.cur.Load())
	return i, r.bases[i]
}

// failed moves on from URL i, which did not answer or answered that it
// cannot serve, unless another request moved on already.
func (r *replicas) failed(i int) {
	if len(r.bases) > 1 {
		r.cur.CompareAndSwap(int32(i), int32((i+1)%len(r.bases)))
	}
}

// led records the leader an answer named: requests go to its URL, if it is
// one of the Client's.
func (r *replicas) led(addr string) {
	if addr == "" || len(r.bases) < 2 {
		return
	}
	for i, h := range r.hosts {
		if h == addr {
			r.cur.Store(int32(i))
			return
		}
	}
}

// CloseIdleConnections closes the connections the Client keeps open
// between requests. The Client remains usable.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// request is one API call.
type request struct {
	method string
	path   string // under the API's URL
	// body returns the JSON body (nil: none) and how long the server may
	// keep the request in line. It is called for every attempt, so that
	// a retried long poll asks only for the time that is left.
	body func() (v any, hold time.Duration)
	// accept lists the success statuses; others are errors.
	accept []int
}

func jsonBody(v any) func() (any, time.Duration) {
	return func() (any, time.Duration) { return v, 0 }
}

// do sends r, retrying connection errors and 5xx answers with jittered
// exponential backoff, and decodes a successful answer's body into out
// (if not nil). An error answer is an *APIError or a *LockedError.
func (c *Client) do(ctx context.Context, r request, out any) error {
	id := rand.Text()
	for attempt := 0; ; attempt++ {
		data, err := c.attempt(ctx, r, id)
		if err == nil {
			if out == nil || len(bytes.TrimSpace(data)) == 0 {
				return nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("decode answer to %s %s (request %s): %w", r.method, r.path, id, err)
			}
			return nil
		}
		var (
			ae *APIError
			ra *retryAfterError
		)
		isAnswer := errors.As(err, &ae)
		if isAnswer && ae.Status < 500 {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		pause := c.pause(attempt)
		if errors.As(err, &ra) {
			err, pause = ra.APIError, max(pause, ra.after)
		}
		if attempt >= c.retries {
			if !isAnswer {
				err = fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			return err
		}
		c.log.Debug("allot: retrying request", "method", r.method, "path", r.path, "request_id", id,
			"attempt", attempt+1, "pause", pause, "err", err)
		if !sleep(ctx, pause) {
			return context.Cause(ctx)
		}
	}
}

// pause is the jittered backoff before retry number attempt+1.
func (c *Client) pause(attempt int) time.Duration {
	d := c.backoff
	for range attempt {
		if d >= maxBackoff {
			break
		}
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	return d/2 + mrand.N(d/2+1)
}

// retryAfterError is a 5xx answer that said when to try again.
type retryAfterError struct {
	*APIError
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return e.APIError }

// attempt sends r once and returns the body of a successful answer.
func (c *Client) attempt(ctx context.Context, r request, id string) ([]byte, error) {
	var (
		payload []byte
		hold    time.Duration
		v       any
	)
	if r.body != nil {
		v, hold = r.body()
	}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		payload = b
	}
	actx, cancel := context.WithTimeout(ctx, requestTimeout+hold)
	defer cancel()
	// A replica that refuses the connection never saw the request: the
	// next URL gets it at once, each URL at most once per attempt.
	var (
		replica int
		resp    *http.Response
		err     error
	)
	for range len(c.replicas.bases) {
		var base string
		replica, base = c.replicas.pick()
		resp, err = c.send(actx, r.method, base+r.path, payload, id)
		if err == nil || ctx.Err() != nil {
			break // an answer, or the caller gave up
		}
		c.replicas.failed(replica) // it did not answer, or not in time
		if !refused(err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		c.replicas.failed(replica) // unless the answer names the leader
	}
	c.replicas.led(resp.Header.Get(leaderHeader))
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	for _, s := range r.accept {
		if resp.StatusCode == s {
			return data, nil
		}
	}
	return nil, answerError(resp, data, id)
}

// send sends one request with the Client's headers.
func (c *Client) send(ctx context.Context, method, url string, payload []byte, id string) (*http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "allot-go")
	req.Header.Set("X-Request-Id", id)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	return c.hc.Do(req)
}

// refused reports whether err is a failure to connect: the request was
// never sent.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// answerError turns an unexpected answer into an error.
func answerError(resp *http.Response, data []byte, id string) error {
	e := &APIError{Status: resp.StatusCode, RequestID: id}
	var p problemDoc
	if json.Unmarshal(data, &p) == nil {
		e.Code, e.Field, e.Limits = p.Code, p.Field, p.Limits
		switch d := p.Detail.(type) {
		case string:
			e.Detail = d
		case nil:
			e.Detail = p.ExceptionMessage
		default:
			b, _ := json.Marshal(d)
			e.Detail = string(b)
		}
	} else if resp.StatusCode >= 400 {
		e.Detail = strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	if e.Detail == "" {
		e.Detail = http.StatusText(resp.StatusCode)
	}
	after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if !ok && p.RetryAfter != nil && *p.RetryAfter >= 0 && *p.RetryAfter < 1e9 {
		after, ok = time.Duration(*p.RetryAfter*float64(time.Second)), true
	}
	switch {
	case resp.StatusCode == http.StatusLocked:
		return &LockedError{RetryAfter: after, API: e}
	case resp.StatusCode >= 500 && ok:
		return &retryAfterError{APIError: e, after: min(after, maxBackoff)}
	}
	return e
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// transient reports whether err is a failure to reach the server rather
// than its answer: a connection refused, reset or cut, or a 502, 503 or 504
// (a restart, a proxy in front of one). A call that waits in line rides
// these out: it reconnects with the same ticket, which keeps its place.
func transient(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if errors.As(err, new(*LockedError)) || errors.Is(err, context.Canceled) {
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// reconnectPause is the jittered pause before the n-th reconnection of a
// waiting call (n from 1), at most maxBackoff, and not past deadline (if
// not zero).
func (c *Client) reconnectPause(n int, deadline time.Time) time.Duration {
	p := c.pause(min(n, 16))
	if !deadline.IsZero() {
		p = min(p, time.Until(deadline))
	}
	return max(p, 0)
}

// newTicket returns a fresh ticket: the idempotency key of one logical
// acquisition, sent with every request and retry of it.
func newTicket() string { return rand.Text() }

// newRunID returns a random (version 4) UUID for a run this client
// creates, so that a retried creation names the same run.
func newRunID() string {
	var b [16]byte
	_, _ = io.ReadFull(rand.Reader, b[:]) // crypto/rand.Reader never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// path joins the v2 limits prefix and an escaped id or name.
func limitPath(nameOrID string) string {
	return limitsPrefix + "/" + url.PathEscape(nameOrID)
}

const limitsPrefix = "/v2/concurrency_limits"
