package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/store/postgres"
	"github.com/allot-dev/allot/internal/webui"
)

// forwardedHeader marks a request a follower forwarded: a replica that
// gets one and does not lead answers 503 rather than forward it again, so
// two replicas that disagree about who leads cannot bounce a request
// between them.
const forwardedHeader = "Allot-Forwarded"

// leaderCacheFor is how long a follower trusts the leader row it read
// last; a failed forward forgets it at once. The row is also read this
// often in the background, to notice a change of leader.
const leaderCacheFor = 250 * time.Millisecond

// errLeaderChanged ends the forwarded requests in progress when the lead
// changes hands: the old leader may be stalled, and would hold them until
// it wakes up, only to refuse them.
var errLeaderChanged = errors.New("the lead changed hands")

// replica is one replica over PostgreSQL: it campaigns for the lead; while
// it leads it serves the API from its own coordinator, and otherwise
// forwards every request to the replica that leads.
type replica struct {
	cfg       Config
	log       *slog.Logger
	cand      *postgres.Candidate
	advertise string
	leading   atomic.Pointer[http.Handler] // nil while following
	// certs is the replica's TLS certificate (nil without TLS): it serves
	// it, and forwards to the leader over TLS, trusting the system's roots
	// and its own certificate's chain.
	certs *certReloader

	mu      sync.Mutex
	leader  postgres.Leader
	readAt  time.Time
	proxies map[string]*httputil.ReverseProxy
	// transport carries the forwarded requests: its idle connections per
	// host are many, as a leader is one host that every forward goes to
	// (net/http's default keeps 2, and would dial again for most).
	transport *http.Transport
	// forwards is the context of the requests forwarded to the current
	// leader; endForwards cancels it (errLeaderChanged) when the leader row
	// names another epoch.
	forwards    context.Context
	endForwards context.CancelCauseFunc
	epoch       int64
}

// runReplica runs a replica over the PostgreSQL at cfg.DatabaseURL until
// ctx is done.
func runReplica(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	var certs *certReloader
	if cfg.TLSCert != "" {
		var tlsCfg *tls.Config
		if certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, log); err == nil {
			tlsCfg, err = tlsConfig(certs, "")
		}
		if err != nil {
			return err
		}
		ln = tls.NewListener(ln, tlsCfg)
		certCtx, stopCerts := context.WithCancel(ctx)
		var reloading sync.WaitGroup
		reloading.Add(1)
		go func() { defer reloading.Done(); certs.run(certCtx, cfg.TLSPoll, cfg.TLSReload) }()
		defer reloading.Wait()
		defer stopCerts()
	}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	id := cfg.ReplicaID
	if id == "" {
		id = advertise
	}
	// Bring the schema up to date before campaigning (once, even when
	// replicas start together).
	st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.Options{MaxConns: 1})
	if err != nil {
		return err
	}
	_ = st.Close() // nothing was written
	cand, err := postgres.NewCandidate(ctx, postgres.CandidateConfig{
		URL: cfg.DatabaseURL, ID: id, Address: advertise, TTL: cfg.LeaderLease, Logger: log,
	})
	if err != nil {
		return err
	}
	defer cand.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024
	defer tr.CloseIdleConnections()
	r := &replica{cfg: cfg, log: log, cand: cand, advertise: advertise, certs: certs, proxies: map[string]*httputil.ReverseProxy{}, transport: tr}
	if certs != nil {
		// Verified by verifyLeader, against the certificate in service now.
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, VerifyConnection: r.verifyLeader}
	}
	r.forwards, r.endForwards = context.WithCancelCause(context.Background())
	defer func() {
		r.mu.Lock()
		r.endForwards(context.Canceled)
		r.mu.Unlock()
	}()

	reqCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	srv := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("serve: %w", err)
		}
		close(serveErr)
	}()
	log.Info("allot replica listening", "addr", ln.Addr().String(), "advertise", advertise, "id", id)
	if cfg.Listening != nil {
		cfg.Listening(ln.Addr())
	}

	campaignCtx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	leadErr := make(chan error, 1)
	go func() { leadErr <- r.campaign(campaignCtx) }()
	var watching sync.WaitGroup
	watching.Add(1)
	go func() { defer watching.Done(); r.watchLeader(campaignCtx) }()
	defer watching.Wait()
	campaignDone := false
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case err = <-leadErr:
		campaignDone = true
		if ctx.Err() != nil {
			err = nil // stopped, not failed
		}
	}
	log.Info("allot replica stopping")
	stopCampaign()
	endRequests()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil && err == nil {
		err = fmt.Errorf("shut down http: %w", serr)
	}
	if !campaignDone {
		if lerr := <-leadErr; lerr != nil && err == nil && !errors.Is(lerr, context.Canceled) {
			err = lerr
		}
	}
	return err
}

// campaign wins the lead and leads, again and again, until ctx is done.
func (r *replica) campaign(ctx context.Context) error {
	for {
		term, err := r.cand.Campaign(ctx)
		if err != nil {
			return err
		}
		err = r.lead(ctx, term)
		term.Resign()
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("stepped down; campaigning again", "epoch", term.Epoch(), "why", errors.Join(err, term.Err()))
	}
}

// lead runs a coordinator over the store fenced by term's epoch, and
// serves the API from it, until the term ends, the coordinator fails (a
// commit failed: deposed, or PostgreSQL gone) or ctx is done.
func (r *replica) lead(ctx context.Context, term *postgres.Term) error {
	st, err := postgres.Open(ctx, r.cfg.DatabaseURL, postgres.Options{
		Epoch: term.Epoch(), ApplicationName: r.cand.ApplicationName(),
	})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	// A registry per term: the coordinator's and the API's metrics start
	// again with each term this replica leads.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ccfg := r.cfg.Coord
	ccfg.Logger = r.log
	ccfg.Metrics = coord.NewMetrics(reg, r.cfg.MetricsLimits...)
	ccfg.Now = term.Now
	c, err := coord.New(ctx, st, ccfg)
	if err != nil {
		return err
	}
	termCtx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(termCtx) }()
	// The keys are sema state, in the store: the leader loads them (and
	// makes the bootstrap key, once, when there is none); followers
	// forward requests with their credentials to its gate.
	var keys *auth.Keyring
	keysDone := make(chan struct{})
	keyCtx, stopKeys := context.WithCancel(termCtx)
	defer func() { stopKeys(); <-keysDone }()
	if r.cfg.Auth == AuthKeys {
		if keys, err = openKeyring(termCtx, r.cfg, c); err != nil {
			close(keysDone)
			endTerm()
			return errors.Join(err, <-runErr)
		}
		go func() {
			defer close(keysDone)
			if err := keys.Run(keyCtx, r.cfg.KeyFlushInterval); err != nil {
				r.log.Warn("keys' last uses not written", "err", err)
			}
		}()
	} else {
		close(keysDone)
	}
	apiOpts := httpapi.Options{Logger: r.log, Registry: reg, Keys: keys, Rates: auth.NewRates(r.cfg.KeyRate, r.cfg.KeyBurst)}
	if !r.cfg.NoUI {
		uiOpts := webui.Options{Logger: r.log}
		if keys != nil {
			// The UI's key login, as on the embedded server. Sessions live
			// in the leader's memory: after a change of leader, log in again.
			apiOpts.Sessions = auth.NewSessions(keys, 0, nil)
			uiOpts.Sessions = apiOpts.Sessions
		}
		ui := webui.New(c, uiOpts)
		apiOpts.Mount = map[string]http.Handler{"/ui": ui, "/ui/": ui}
	}
	api := httpapi.New(c, apiOpts)
	// Requests in progress when the term ends (long polls above all) end
	// with it.
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !term.Trusted() {
			// Stalled past its lease: another replica may lead by now,
			// and what this one holds in memory may be stale.
			httpapi.WriteNoLeader(w, "this replica's lead has lapsed")
			return
		}
		rctx, cancel := context.WithCancel(req.Context())
		defer cancel()
		stop := context.AfterFunc(termCtx, cancel)
		defer stop()
		api.ServeHTTP(w, req.WithContext(rctx))
	})
	r.leading.Store(&h)
	r.log.Info("leading: serving the API", "epoch", term.Epoch())
	select {
	case <-term.Done():
		err = term.Err()
	case err = <-runErr:
		runErr <- err
	case <-ctx.Done():
	}
	r.leading.Store(nil)
	stopKeys()
	<-keysDone // the last uses flushed while the coordinator runs
	endTerm()
	if rerr := <-runErr; rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// ServeHTTP serves a request from the coordinator while this replica
// leads, and forwards it to the leader otherwise.
func (r *replica) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if h := r.leading.Load(); h != nil {
		w.Header().Set(httpapi.LeaderHeader, r.advertise)
		(*h).ServeHTTP(w, req)
		return
	}
	if req.URL.Path == "/api/ready" && req.URL.Query().Get("role") == "leader" {
		httpapi.WriteNoLeader(w, "this replica does not lead")
		return
	}
	l, forwards, err := r.currentLeader(req.Context())
	switch {
	case err != nil:
		r.log.Warn("read the leader", "err", err)
		httpapi.WriteNoLeader(w, "no leader: the database does not answer")
		return
	case !l.Live || l.Address == "":
		httpapi.WriteNoLeader(w, "no leader: an election is under way")
		return
	case l.Address == r.advertise || req.Header.Get(forwardedHeader) != "":
		// This replica just won and is loading, or another replica
		// thinks this one leads.
		httpapi.WriteNoLeader(w, "no leader: the lead is changing hands")
		return
	}
	req.Header.Set(forwardedHeader, r.advertise)
	r.forward(w, req, l.Address, forwards, true)
}

// forwardKey is the context key of a forwarded request's forwarding.
type forwardKey struct{}

// forwarding is what the proxy's error handler needs to know of a request
// it forwarded.
type forwarding struct {
	in    context.Context // the incoming request's own context
	retry bool            // whether a request that never left may go to a newer leader
}

// forward sends req to the leader at addr. The forwarded request ends when
// forwards does (the lead changed hands) or the caller leaves.
func (r *replica) forward(w http.ResponseWriter, req *http.Request, addr string, forwards context.Context, retry bool) {
	in := req.Context()
	ctx, cancel := context.WithCancelCause(context.WithValue(in, forwardKey{}, forwarding{in: in, retry: retry}))
	defer cancel(nil)
	stop := context.AfterFunc(forwards, func() { cancel(errLeaderChanged) })
	defer stop()
	r.proxy(addr).ServeHTTP(w, req.WithContext(ctx))
}

// watchLeader reads the leader row every leaderCacheFor until ctx is done.
func (r *replica) watchLeader(ctx context.Context) {
	t := time.NewTicker(leaderCacheFor)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l, err := r.cand.Leader(ctx); err == nil {
			r.observe(l)
		} // else requests find out for themselves
	}
}

// observe records l as the leader row just read. When it names a later
// epoch than any seen before, the requests forwarded to the leaders of the
// earlier epochs end (errLeaderChanged). It returns the context of the
// requests forwarded to l's epoch.
func (r *replica) observe(l postgres.Leader) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.Epoch < r.epoch {
		return r.forwards // a read that raced a later one
	}
	r.leader, r.readAt = l, time.Now()
	if l.Epoch > r.epoch {
		r.epoch = l.Epoch
		r.endForwards(errLeaderChanged)
		r.forwards, r.endForwards = context.WithCancelCause(context.Background())
	}
	return r.forwards
}

// currentLeader returns the leader row, read at most leaderCacheFor ago,
// and the context of the requests forwarded to it.
func (r *replica) currentLeader(ctx context.Context) (postgres.Leader, context.Context, error) {
	r.mu.Lock()
	if time.Since(r.readAt) < leaderCacheFor && r.leader.Epoch == r.epoch {
		l, forwards := r.leader, r.forwards
		r.mu.Unlock()
		return l, forwards, nil
	}
	r.mu.Unlock()
	l, err := r.cand.Leader(ctx)
	if err != nil {
		return postgres.Leader{}, nil, err
	}
	forwards := r.observe(l)
	r.mu.Lock()
	l = r.leader // the latest, if another read overtook this one
	r.mu.Unlock()
	return l, forwards, nil
}

func (r *replica) forgetLeader() {
	r.mu.Lock()
	r.readAt = time.Time{}
	r.mu.Unlock()
}

// proxy returns the reverse proxy to the replica at addr.
func (r *replica) proxy(addr string) *httputil.ReverseProxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.proxies[addr]; ok {
		return p
	}
	target := &url.URL{Scheme: "http", Host: addr}
	if r.certs != nil {
		target.Scheme = "https"
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: r.transport,
		// Long polls stream nothing, but answers must not wait in a buffer.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			r.forgetLeader()
			if errors.Is(context.Cause(req.Context()), errLeaderChanged) {
				r.log.Warn("forward to the leader: the lead changed hands", "leader", addr, "path", req.URL.Path)
				httpapi.WriteNoLeader(w, "the lead changed hands while the request was forwarded; its outcome is unknown, retry it")
				return
			}
			if req.Context().Err() != nil {
				return // the caller left
			}
			var op *net.OpError
			f, _ := req.Context().Value(forwardKey{}).(forwarding)
			if errors.As(err, &op) && op.Op == "dial" && f.retry {
				// The leader is gone (its process died): the request never
				// left, so it may go to the new leader, if there is one.
				if l, lerr := r.cand.Leader(f.in); lerr == nil && l.Live && l.Address != addr && l.Address != r.advertise {
					forwards := r.observe(l)
					r.forward(w, req.WithContext(f.in), l.Address, forwards, false)
					return
				}
			}
			r.log.Warn("forward to the leader", "leader", addr, "path", req.URL.Path, "err", err)
			httpapi.WriteNoLeader(w, "the leader did not answer")
		},
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	r.proxies[addr] = p
	return p
}

// verifyLeader verifies the certificate of the leader a follower forwards
// to: for the address it dialled, signed by a root of the system's or by
// one in this replica's own certificate's chain (replicas that share a
// certificate, or a private CA, trust each other).
func (r *replica) verifyLeader(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the leader sent no certificate")
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	own, _ := r.certs.getCertificate(nil)
	for _, der := range own.Certificate {
		if c, err := x509.ParseCertificate(der); err == nil {
			roots.AddCert(c)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: cs.ServerName, Roots: roots, Intermediates: inter})
	return err
}
