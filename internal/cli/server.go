package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/server"
)

func newServerCmd(env Env) *cobra.Command {
	cfg := server.Config{}
	var logLevel, logFormat string
	var leaseDefault, v1Lease, runLease, runRetention, waiterGrace time.Duration
	var keyMaxLeases, keyMaxWaiting int
	var auditRetention time.Duration
	var certScopes []string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Start the allot server",
		Long: `Start the allot server on the embedded store.

With --database postgres://…, start one replica of several over that
PostgreSQL instead: the replicas elect a leader, which serves the API; the
others forward every request to it. Give each replica its own --addr and,
when the others cannot reach it at that address, --advertise-addr.

Every flag can also be set in the environment: --addr as ALLOT_ADDR,
--data-dir as ALLOT_DATA_DIR, --sync as ALLOT_SYNC, --log-level as
ALLOT_LOG_LEVEL, --log-format as ALLOT_LOG_FORMAT, --database as
ALLOT_DATABASE_URL, --advertise-addr as ALLOT_ADVERTISE_ADDR, --replica-id
as ALLOT_REPLICA_ID, --auth as ALLOT_AUTH. Flags win.

Authentication is off by default, and then the server listens on loopback
only: asked for any other address it refuses to start (protected mode).
--auth keys requires an API key on every request but the health probes;
the first start without keys makes an admin key, prints it once and writes
it to bootstrap.key (mode 0600) in the data directory, unless
ALLOT_BOOTSTRAP_KEY gives that key. --insecure serves any address without
authentication.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level: %w", err)}
			}
			opts := &slog.HandlerOptions{Level: level}
			var h slog.Handler
			switch strings.ToLower(logFormat) {
			case "text":
				h = slog.NewTextHandler(env.Stderr, opts)
			case "json":
				h = slog.NewJSONHandler(env.Stderr, opts)
			default:
				return usageError{fmt.Errorf("--log-format must be text or json, not %q", logFormat)}
			}
			switch cfg.Auth {
			case "off", "keys":
			default:
				return usageError{fmt.Errorf("--auth must be off or keys, not %q", cfg.Auth)}
			}
			switch strings.ToUpper(cfg.Synchronous) {
			case "FULL", "NORMAL":
				cfg.Synchronous = strings.ToUpper(cfg.Synchronous)
			default:
				return usageError{fmt.Errorf("--sync must be full or normal, not %q", cfg.Synchronous)}
			}
			if cfg.LeaderLease < 0 {
				return usageError{fmt.Errorf("--leader-lease must not be negative")}
			}
			cfg.Logger = slog.New(h)
			cfg.Coord = coord.DefaultConfig()
			for _, d := range []struct {
				flag string
				v    time.Duration
				dst  *time.Duration
			}{
				{"--default-lease-duration", leaseDefault, &cfg.Coord.DefaultLeaseDuration},
				{"--v1-lease-duration", v1Lease, &cfg.Coord.V1LeaseDuration},
				{"--run-lease-duration", runLease, &cfg.Coord.RunLeaseDuration},
				{"--run-retention", runRetention, &cfg.Coord.RunRetention},
				{"--audit-retention", auditRetention, &cfg.Coord.AuditRetention},
			} {
				if d.v < 0 {
					return usageError{fmt.Errorf("%s must not be negative", d.flag)}
				}
				if d.v > 0 {
					*d.dst = d.v
				}
			}
			switch {
			case waiterGrace < 0:
				return usageError{fmt.Errorf("--waiter-grace must not be negative")}
			case waiterGrace == 0:
				cfg.Coord.WaiterGrace = -1 // none
			default:
				cfg.Coord.WaiterGrace = waiterGrace
			}
			if cfg.KeyRate < 0 || cfg.KeyBurst < 0 || keyMaxLeases < 0 || keyMaxWaiting < 0 {
				return usagef("--key-rate, --key-burst, --key-max-leases and --key-max-waiting must not be negative")
			}
			if cfg.KeyBurst == 0 {
				cfg.KeyBurst = int(max(1, cfg.KeyRate))
			}
			cfg.Coord.KeyMaxLeases, cfg.Coord.KeyMaxWaiting = keyMaxLeases, keyMaxWaiting
			cfg.BootstrapKey = env.Getenv("ALLOT_BOOTSTRAP_KEY")
			cfg.BootstrapOut = env.Stdout
			scheme := "http"
			if cfg.TLSCert != "" {
				scheme = "https"
			}
			for _, cs := range certScopes {
				name, scopes, ok := strings.Cut(cs, "=")
				if !ok || name == "" || scopes == "" {
					return usagef("--tls-client-scope %q: want NAME=SCOPE[,SCOPE...]", cs)
				}
				if cfg.CertScopes == nil {
					cfg.CertScopes = map[string][]string{}
				}
				cfg.CertScopes[name] = append(cfg.CertScopes[name], strings.Split(scopes, ",")...)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			cfg.TLSReload = hup
			cfg.Listening = func(a net.Addr) { fmt.Fprintf(env.Stdout, "allot server listening on %s://%s/api\n", scheme, a) }
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", envOr(env, "ALLOT_ADDR", "127.0.0.1:4200"), "listen address (host:port)")
	f.StringVar(&cfg.DataDir, "data-dir", envOr(env, "ALLOT_DATA_DIR", defaultDataDir(env)), "directory of the embedded store")
	f.StringVar(&cfg.Synchronous, "sync", envOr(env, "ALLOT_SYNC", "full"), "durability: full (fsync every commit) or normal (survives a process crash, not power loss)")
	f.StringVar(&logLevel, "log-level", envOr(env, "ALLOT_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", envOr(env, "ALLOT_LOG_FORMAT", "text"), "log format: text or json")
	f.StringVar(&cfg.DebugAddr, "debug-addr", envOr(env, "ALLOT_DEBUG_ADDR", ""), "if set, serve Go's pprof profiles on this address (keep it on loopback)")
	f.StringVar(&cfg.DatabaseURL, "database", envOr(env, "ALLOT_DATABASE_URL", ""), "run as one of several replicas over this PostgreSQL (postgres://user@host/db) instead of the embedded store")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", envOr(env, "ALLOT_ADVERTISE_ADDR", ""), "with --database: the host:port other replicas forward to while this one leads (default: the listen address)")
	f.StringVar(&cfg.ReplicaID, "replica-id", envOr(env, "ALLOT_REPLICA_ID", ""), "with --database: this replica's name among the others, at most 40 bytes (default: the advertised address)")
	f.DurationVar(&cfg.LeaderLease, "leader-lease", 0, "with --database: the leader's lease; a leader that cannot renew it for this long is replaced (default 5s)")
	f.StringVar(&cfg.Auth, "auth", envOr(env, "ALLOT_AUTH", "off"), "authentication: off (loopback only) or keys (API keys)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "with --auth off, listen on a non-loopback address anyway (anyone who reaches it may change everything)")
	f.StringVar(&cfg.TLSCert, "tls-cert", envOr(env, "ALLOT_TLS_CERT", ""), "serve HTTPS with this PEM certificate (reloaded when it changes or on SIGHUP)")
	f.StringVar(&cfg.TLSKey, "tls-key", envOr(env, "ALLOT_TLS_KEY", ""), "the PEM private key of --tls-cert")
	f.StringVar(&cfg.TLSClientCA, "tls-client-ca", "", "require client certificates signed by the CA in this PEM file")
	f.StringArrayVar(&certScopes, "tls-client-scope", nil, "NAME=SCOPE[,SCOPE...]: a client certificate with common name NAME has these scopes when its requests carry no key (repeatable; needs --auth keys)")
	f.DurationVar(&auditRetention, "audit-retention", 0, "how long audit records are kept (default 720h0m0s, 30 days)")
	f.Float64Var(&cfg.KeyRate, "key-rate", 0, "with --auth keys: each key's requests per second (renewals, releases and decrements are never throttled); 0: no limit")
	f.IntVar(&cfg.KeyBurst, "key-burst", 0, "with --key-rate: the burst a key may send at once (default: the rate, at least 1)")
	f.IntVar(&keyMaxLeases, "key-max-leases", 0, "with --auth keys: the leases one key may hold; 0: no limit")
	f.IntVar(&keyMaxWaiting, "key-max-waiting", 0, "with --auth keys: the requests of one key that may wait in line at once; 0: no limit")
	f.DurationVar(&leaseDefault, "default-lease-duration", 0, "lease duration when a request names none (default 5m0s)")
	f.DurationVar(&v1Lease, "v1-lease-duration", 0, "time to live of leases taken through Prefect's v1 tag routes, whose clients cannot renew (default 1h0m0s)")
	f.DurationVar(&runLease, "run-lease-duration", 0, "a run's lease duration when it names none; a run that stops heartbeating is Crashed after it (default 1m0s)")
	f.DurationVar(&runRetention, "run-retention", 0, "how long finished runs are kept (default 1h0m0s)")
	f.DurationVar(&waiterGrace, "waiter-grace", coord.DefaultConfig().WaiterGrace, "how long a waiting request with a ticket keeps its place after its connection drops or the server restarts, and a lease granted meanwhile is kept for it; 0: none")
	f.BoolVar(&cfg.NoUI, "no-ui", false, "do not serve the web UI at /ui")
	f.StringSliceVar(&cfg.MetricsLimits, "metrics-limit", nil, "export this limit's held slots and waiters on /metrics with a limit label (repeatable; none by default, names are unbounded)")
	return cmd
}

func envOr(env Env, key, def string) string {
	if v := env.Getenv(key); v != "" {
		return v
	}
	return def
}

// defaultDataDir is ./.allot unless XDG_DATA_HOME or HOME say otherwise.
func defaultDataDir(env Env) string {
	if d := env.Getenv("XDG_DATA_HOME"); d != "" {
		return d + "/allot"
	}
	if h := env.Getenv("HOME"); h != "" {
		return h + "/.local/share/allot"
	}
	return ".allot"
}
