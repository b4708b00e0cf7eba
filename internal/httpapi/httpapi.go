package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
)

// Options configures the handler New returns.
type Options struct {
	// Logger receives server faults; nil discards them.
	Logger *slog.Logger
	// Registry is served at /metrics and receives the HTTP metrics; nil
	// serves no /metrics.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// BodyReadTimeout bounds the reading of a request's body (default
	// 10 s): a client that trickles its body is cut off, as the server's
	// ReadHeaderTimeout cuts off one that trickles its headers. It covers
	// the body only, so a long poll that waits after reading is not cut.
	BodyReadTimeout time.Duration
	// Keys authenticates requests; nil serves without authentication
	// (loopback only: the server refuses anything else).
	Keys *auth.Keyring
	// Certs gives the principal of a request that carries no key but a
	// verified client certificate, by the certificate's common name.
	Certs map[string]*auth.Principal
	// Sessions are the web UI's logins (with Keys): a request to /ui
	// without an Authorization header is served with the principal of its
	// session cookie, or without one (the UI sends it to its login page).
	// Nil: the UI needs a key in every request, as the API does.
	Sessions *auth.Sessions
	// Rates throttles each key's requests (429 with Retry-After), but
	// never a renewal, a release or a decrement; nil: no throttle.
	Rates *auth.Rates
	// EventHeartbeat is how often /api/events writes a comment to keep the
	// stream open (default 15 s).
	EventHeartbeat time.Duration
	// Mount serves more handlers under these patterns through the same
	// middleware, so that their requests are counted by route and status
	// too (the web UI at /ui/; its own mux's patterns become the routes).
	Mount map[string]http.Handler
}

// Bounds of request fields that the coordinator does not check itself.
const (
	maxNames          = 1000
	maxTimeoutSeconds = 3600
	maxLeaseSeconds   = 1e9 // absurd durations stop here; coord applies the real bounds
	maxFilterLimit    = 200
	maxOccupancy      = 1e9
)

type handler struct {
	c              *coord.Coordinator
	log            *slog.Logger
	maxBody        int64
	bodyTimeout    time.Duration
	heartbeat      time.Duration
	openapiYAML    []byte
	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	// clientEventCount counts the events Prefect's clients send to
	// /api/events/in, by outcome (accepted, invalid).
	clientEventCount *prometheus.CounterVec
	metrics          sync.Map // routeCode → *routeMetrics
	keys             *auth.Keyring
	rates            *auth.Rates
	sessions         *auth.Sessions
	certs            map[string]*auth.Principal
	keyRequests      *prometheus.CounterVec // by key id; nil without keys
	keyCounters      sync.Map               // key id → prometheus.Counter
}

// New returns the HTTP handler of allot's API, served from c.
//
// Long requests (waiting in line, /api/events) end when the request's
// context does; a server that shuts down gracefully should cancel its
// BaseContext so that they do.
func New(c *coord.Coordinator, opts Options) http.Handler {
	h := newHandler(c, opts)
	mux := h.routes()
	for pattern, handler := range opts.Mount {
		mux.Handle(pattern, handler)
	}
	if opts.Registry != nil {
		h.register(opts.Registry)
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	}
	if h.keys == nil {
		return h.middleware(mux)
	}
	h.keyRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "allot_key_requests_total", Help: "Requests let through the gate, by API key id (never a secret)."},
		[]string{"key_id"})
	if opts.Registry != nil {
		_ = opts.Registry.Register(h.keyRequests)
	}
	return h.middleware(h.gate(mux))
}

func newHandler(c *coord.Coordinator, opts Options) *handler {
	h := &handler{
		c:           c,
		log:         opts.Logger,
		maxBody:     opts.MaxBodyBytes,
		bodyTimeout: opts.BodyReadTimeout,
		keys:        opts.Keys,
		rates:       opts.Rates,
		sessions:    opts.Sessions,
		certs:       opts.Certs,
		heartbeat:   opts.EventHeartbeat,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_http_requests_total", Help: "HTTP requests answered, by route pattern and status code."},
			[]string{"route", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "allot_http_request_seconds", Help: "Time to answer HTTP requests, waiting in line included, by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, []string{"route"}),
		clientEventCount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_client_events_total", Help: "Prefect client events received on /api/events/in and dropped, by outcome (accepted, invalid)."},
			[]string{"outcome"}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxBody <= 0 {
		h.maxBody = 1 << 20
	}
	if h.bodyTimeout <= 0 {
		h.bodyTimeout = 10 * time.Second
	}
	if h.heartbeat <= 0 {
		h.heartbeat = 15 * time.Second
	}
	h.openapiYAML = openapiYAML()
	return h
}

// routes returns the API's routes, registered from table.
func (h *handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, r := range h.table() {
		if action, ok := auditActions[r.pattern]; ok {
			mux.Handle(r.pattern, h.readBefore(action, r.serve))
			continue
		}
		mux.Handle(r.pattern, r.serve)
	}
	return mux
}

// table is the API's one list of routes. Most are ops served by the one
// adapter (see route.go); the streams (/api/events, the client events
// websocket) and the OpenAPI documents are written by hand, and answer
// their errors through the same error table.
func (h *handler) table() []route {
	t := []route{
		{"GET /api/health", jsonOp(h, op[none, map[string]string]{status: http.StatusOK, decode: noRequest, call: h.health})},
		{"GET /api/ready", jsonOp(h, op[none, map[string]string]{status: http.StatusOK, decode: noRequest, call: h.ready})},
		{"GET /api/events", http.HandlerFunc(h.events)},
		{"GET /api/events/in", http.HandlerFunc(h.clientEvents)},
		{"GET /api/admin/version", jsonOp(h, op[none, string]{status: http.StatusOK, decode: noRequest, call: adminVersion})},
		{"GET /api/openapi.json", http.HandlerFunc(h.openapiJSON)},
		{"GET /api/openapi.yaml", http.HandlerFunc(h.openapiYAMLDoc)},
	}
	t = append(t, h.limitRoutes()...)
	t = append(t, h.leaseRoutes()...)
	t = append(t, newTagLimitAPI(h, sema.KindTask).routes()...)
	t = append(t, newTagLimitAPI(h, sema.KindFlow).routes()...)
	t = append(t, h.keyRoutes()...)
	return append(t, h.runRoutes()...)
}

// register adds the HTTP metrics to reg, sharing them with an earlier
// handler on the same registry.
func (h *handler) register(reg *prometheus.Registry) {
	if err := reg.Register(h.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if cv, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				h.requests = cv
			}
		}
	}
	if err := reg.Register(h.clientEventCount); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if cv, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				h.clientEventCount = cv
			}
		}
	}
	if err := reg.Register(h.requestSeconds); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if hv, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				h.requestSeconds = hv
			}
		}
	}
}

// middleware answers unknown routes and wrong methods with problems,
// recovers from panics, counts requests and bounds the reading of bodies:
// a request with a body must deliver it within bodyTimeout (readBody lifts
// the bound once the body is read; a handler that never reads it leaves the
// bound on the server's draining of it).
func (h *handler) middleware(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, r: r}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(start.Add(h.bodyTimeout))
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				if !sw.wrote {
					writeProblemDoc(sw, newProblem(codeInternal, "Internal Server Error", ""))
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			m := h.metricsFor(route, sw.status())
			m.requests.Inc()
			m.seconds.Observe(time.Since(start).Seconds())
		}()
		mux.ServeHTTP(sw, r)
	})
}

// routeMetrics are the metrics of one route and status code, resolved once:
// resolving them by label values costs a hash and a lock per request.
type routeMetrics struct {
	requests prometheus.Counter
	seconds  prometheus.Observer
}

type routeCode struct {
	route string
	code  int
}

func (h *handler) metricsFor(route string, code int) *routeMetrics {
	k := routeCode{route, code}
	if m, ok := h.metrics.Load(k); ok {
		return m.(*routeMetrics)
	}
	m, _ := h.metrics.LoadOrStore(k, &routeMetrics{
		requests: h.requests.WithLabelValues(route, strconv.Itoa(code)),
		seconds:  h.requestSeconds.WithLabelValues(route),
	})
	return m.(*routeMetrics)
}

// statusWriter remembers the status written, and turns the mux's own
// plain-text answers to a request no route takes (404, and 405 with Allow)
// into problems. The mux leaves such a request's Pattern empty (as it has
// since Go 1.22's patterns, which every route here needs); its redirects
// pass through.
type statusWriter struct {
	http.ResponseWriter
	r       *http.Request
	code    int
	wrote   bool
	swallow bool // the mux's text after a problem replaced it
}

func (w *statusWriter) WriteHeader(code int) {
	if w.wrote {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.code, w.wrote = code, true
	if w.r.Pattern == "" && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		w.swallow = true
		writeProblemDoc(w.ResponseWriter, w.unmatched(code))
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// unmatched is the problem for a request that no route takes.
func (w *statusWriter) unmatched(code int) problem {
	r := w.r
	if code == http.StatusMethodNotAllowed {
		return newProblem(codeMethodNotAllowed,
			r.Method+" is not allowed here; allowed: "+w.Header().Get("Allow"), "")
	}
	return newProblem(codeNotFound, "no route "+r.Method+" "+r.URL.Path, "")
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.swallow {
		return len(p), nil
	}
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (to flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.code
}

func (h *handler) health(context.Context, none) (map[string]string, error) {
	return map[string]string{"status": "ok"}, nil
}

func (h *handler) ready(context.Context, none) (map[string]string, error) {
	if err := h.c.Ready(); err != nil {
		return nil, err
	}
	return map[string]string{"status": "ok"}, nil
}
