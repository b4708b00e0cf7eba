// Package server assembles allot's server: the embedded store, the
// coordinator and the HTTP API on one listener, with one lifecycle. It owns
// the order of start-up (load, then listen) and shut-down (stop listening,
// end long polls, commit what is pending, close the store).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	if cfg.DatabaseURL != "" {
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
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	// Long polls run on reqCtx; cancelling it ends them at shut-down.
	reqCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	apiOpts := httpapi.Options{Logger: log, Registry: reg}
	if !cfg.NoUI {
		ui := webui.New(c, webui.Options{Logger: log})
		apiOpts.Mount = map[string]http.Handler{"/ui": ui, "/ui/": ui}
	}
	srv := &http.Server{
		Handler:           httpapi.New(c, apiOpts),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}

	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := c.Run(runCtx); err != nil {
			errc <- fmt.Errorf("coordinator: %w", err)
		}
	}()
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
	log.Info("allot server listening", "addr", ln.Addr().String(), "data_dir", cfg.DataDir)
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
	stopRun()
	wg.Wait()
	close(errc)
	for e := range errc {
		if err == nil {
			err = e
		}
	}
	return err
}
