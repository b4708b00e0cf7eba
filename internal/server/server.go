// Package server assembles allot's server: the embedded store, the
// coordinator and the HTTP API on one listener, with one lifecycle. It owns
// the order of start-up (load, then listen) and shut-down (stop listening,
// end long polls, commit what is pending, close the store).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/httpapi"
	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/sqlite"
	"github.com/allot-dev/allot/internal/webui"
)

// Config says how to run a server.
type Config struct {
	// Addr is the listen address, host:port; port 0 picks a free one.
	Addr string
	// DataDir is where the embedded store lives.
	DataDir string
	// Synchronous is SQLite's synchronous pragma: "FULL" (default) makes
	// every acknowledged grant survive power loss; "NORMAL" survives a
	// process crash only.
	Synchronous string
	// Coord tunes the coordinator; zero values take the defaults.
	Coord coord.Config
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// DebugAddr, if set, serves net/http/pprof on a listener of its own.
	DebugAddr string
	// NoUI turns the web UI at /ui off.
	NoUI bool
	// MetricsLimits names the limits whose held slots and waiters
	// /metrics exports with a limit label (none by default: names are
	// unbounded).
	MetricsLimits []string
	// Auth is AuthOff (the default) or AuthKeys.
	Auth string
	// Insecure allows a non-loopback Addr with authentication off.
	Insecure bool
	// BootstrapKey, if set, is the admin key to create when it does not
	// exist (ALLOT_BOOTSTRAP_KEY).
	BootstrapKey string
	// BootstrapOut receives the first admin key made on a first start with
	// AuthKeys and no keys; the key is never logged.
	BootstrapOut io.Writer
	// KeyRate and KeyBurst are each key's requests per second and burst
	// (renewals, releases and decrements are never throttled); zero: no
	// limit. Quotas of held leases and waiting requests are in Coord.
	KeyRate  float64
	KeyBurst int
	// TLSCert and TLSKey, if set, serve HTTPS (TLS 1.2 at least) with
	// this certificate, loaded again when either file changes (checked
	// every TLSPoll, default a second) or a signal arrives on TLSReload.
	TLSCert, TLSKey string
	TLSPoll         time.Duration
	TLSReload       <-chan os.Signal
	// TLSClientCA, if set, requires client certificates signed by it.
	// CertScopes maps a client certificate's common name to the scopes
	// its requests have when they carry no key (with AuthKeys).
	TLSClientCA string
	CertScopes  map[string][]string
	// KeyFlushInterval is how often keys' last-used times are written
	// (default a minute).
	KeyFlushInterval time.Duration
	// Listening, if set, is called with the bound address once the server
	// accepts connections.
	Listening func(addr net.Addr)

	// DatabaseURL, if set, runs a replica over this PostgreSQL instead of
	// the embedded store (see replica.go); DataDir and Synchronous are then
	// unused.
	DatabaseURL string
	// AdvertiseAddr is the address other replicas forward to while this one
	// leads; empty means the bound listen address.
	AdvertiseAddr string
	// ReplicaID names the replica among the others; empty means the
	// advertised address.
	ReplicaID string
	// LeaderLease is the leader's lease (postgres.DefaultTTL if zero).
	LeaderLease time.Duration
}

// Run serves until ctx is done, then shuts down cleanly. It returns the
// first error that stopped it.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:4200"
	}
	switch cfg.Auth {
	case "", AuthOff:
		cfg.Auth = AuthOff
	case AuthKeys:
	default:
		return fmt.Errorf("auth mode %q: want %s or %s", cfg.Auth, AuthOff, AuthKeys)
	}
	if err := checkProtected(cfg); err != nil {
		return err
	}
	if cfg.KeyFlushInterval <= 0 {
		cfg.KeyFlushInterval = time.Minute
	}
	if cfg.TLSPoll <= 0 {
		cfg.TLSPoll = time.Second
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
	}
	if cfg.TLSClientCA != "" && cfg.TLSCert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	if len(cfg.CertScopes) > 0 && (cfg.TLSClientCA == "" || cfg.Auth != AuthKeys) {
		return errors.New("client certificate scopes need --tls-client-ca and --auth keys")
	}
	if cfg.DatabaseURL != "" {
		if cfg.TLSClientCA != "" {
			// A follower forwards to the leader, which would not see the
			// client's certificate: refuse rather than serve without the
			// authentication that was asked for.
			return errors.New("--tls-client-ca is not available with --database yet: use API keys (--auth keys) with the replicas")
		}
		return runReplica(ctx, cfg, log)
	}
	st, err := sqlite.Open(ctx, cfg.DataDir, sqlite.Options{Synchronous: cfg.Synchronous})
	if err != nil {
		return fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	return serve(ctx, cfg, log, st)
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, st store.Store) (err error) {
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ccfg := cfg.Coord
	ccfg.Logger = log
	ccfg.Metrics = coord.NewMetrics(reg, cfg.MetricsLimits...)
	c, err := coord.New(ctx, st, ccfg)
	if err != nil {
		return err
	}
	// The coordinator runs from here on (the bootstrap key is committed
	// through it); runCtx stops it, after everything else.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	coordDone := make(chan struct{})
	go func() {
		defer close(coordDone)
		if err := c.Run(runCtx); err != nil {
			errc <- fmt.Errorf("coordinator: %w", err)
		}
	}()
	stopCoord := func() { stopRun(); <-coordDone }
	var keys *auth.Keyring
	if cfg.Auth == AuthKeys {
		if keys, err = openKeyring(ctx, cfg, c); err != nil {
			stopCoord()
			return err
		}
	}
	var certs *certReloader
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		if certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, log); err == nil {
			tlsCfg, err = tlsConfig(certs, cfg.TLSClientCA)
		}
		if err != nil {
			stopCoord()
			return err
		}
	}
	certPrincipals, err := auth.CertPrincipals(cfg.CertScopes)
	if err != nil {
		stopCoord()
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		stopCoord()
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	// Long polls run on reqCtx; cancelling it ends them at shut-down.
	reqCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	apiOpts := httpapi.Options{Logger: log, Registry: reg, Keys: keys,
		Rates: auth.NewRates(cfg.KeyRate, cfg.KeyBurst), Certs: certPrincipals}
	if !cfg.NoUI {
		uiOpts := webui.Options{Logger: log}
		if keys != nil {
			// The UI's key login; its sessions live in memory.
			apiOpts.Sessions = auth.NewSessions(keys, 0, nil)
			uiOpts.Sessions = apiOpts.Sessions
		}
		ui := webui.New(c, uiOpts)
		apiOpts.Mount = map[string]http.Handler{"/ui": ui, "/ui/": ui}
	}
	srv := &http.Server{
		Handler:           httpapi.New(c, apiOpts),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}

	// The keys' last uses are flushed before the coordinator stops.
	keyCtx, stopKeys := context.WithCancel(context.WithoutCancel(ctx))
	defer stopKeys()
	wg.Add(1)
	if certs != nil {
		wg.Add(1)
		go func() { defer wg.Done(); certs.run(keyCtx, cfg.TLSPoll, cfg.TLSReload) }()
	}
	keysDone := make(chan struct{})
	if keys != nil {
		go func() {
			defer close(keysDone)
			if err := keys.Run(keyCtx, cfg.KeyFlushInterval); err != nil {
				errc <- fmt.Errorf("keys: %w", err)
			}
		}()
	} else {
		close(keysDone)
	}
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	closeDebug := func() {}
	if cfg.DebugAddr != "" {
		dln, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			_ = srv.Close()
			stopKeys()
			<-keysDone
			stopCoord()
			wg.Wait()
			return fmt.Errorf("listen on %s: %w", cfg.DebugAddr, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); _ = dsrv.Serve(dln) }()
		closeDebug = func() { _ = dsrv.Close() }
	}
	log.Info("allot server listening", "addr", ln.Addr().String(), "data_dir", cfg.DataDir, "auth", cfg.Auth)
	if cfg.Listening != nil {
		cfg.Listening(ln.Addr())
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("allot server stopping")
	endRequests()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil && err == nil {
		err = fmt.Errorf("shut down http: %w", serr)
	}
	closeDebug()
	stopKeys()
	<-keysDone
	stopCoord()
	wg.Wait()
	close(errc)
	for e := range errc {
		if err == nil {
			err = e
		}
	}
	return err
}
