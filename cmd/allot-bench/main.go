// Command allot-bench measures a running allot server over HTTP: how many
// acquire+release pairs per second it serves (throughput), how promptly
// and fairly it hands one slot from holder to waiter (handoff), how much
// memory a held lease and a waiting request cost it (memory), and how much
// slower it serves pairs while it holds many leases (scale). Each workload
// prints one line, or one JSON object with -json. -workload all runs
// baseline, throughput and handoff; memory and scale take minutes and run
// only when named.
//
// Machines differ too much in speed for pairs per second alone to mean
// anything, so the baseline workload measures this machine's yardstick: the
// requests per second of a bare Go net/http server that decodes and answers
// small JSON objects, sent by the same client, workers, warm-up and
// duration as throughput's. That server is allot-bench itself, started
// again with ALLOT_BENCH_BARE_SERVER set to the address to listen on (such
// as 127.0.0.1:0): then it serves, prints the address it listens on, and
// measures nothing. When both ran, the throughput line gives pairs per bare
// request beside the design's target for that ratio. Throughput and handoff
// also read the server's CPU time from its /metrics before and after the
// measured window and give it per pair, when /metrics can be read.
//
// The workloads live in the package bench under this command
// (cmd/allot-bench/internal/bench): a tool apart from the server, so that
// the module's top-level internal/ holds only the server's parts.
//
// It exits 0 when the run completed and the server's answers were safe, 1
// when the run failed or a safety check (overlaps, fencing, leaked slots)
// did not come out at zero, and 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/allot-dev/allot/cmd/allot-bench/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if addr, ok := os.LookupEnv(bench.BareServerEnv); ok {
		code := serveBare(ctx, addr, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintf(os.Stderr, "allot-bench: %v\n", err)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "allot-bench: %v\n", err)
	}
	code := run(ctx, os.Args[1:], os.Getenv("ALLOT_API_URL"), exe, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// serveBare is allot-bench started by the baseline workload as its bare
// server: it serves on addr until ctx is done and returns the exit code.
func serveBare(ctx context.Context, addr string, stdout, stderr io.Writer) int {
	if err := bench.ServeBare(ctx, addr, stdout); err != nil {
		fmt.Fprintf(stderr, "allot-bench: %v\n", err)
		return 1
	}
	return 0
}

// run parses args, runs the benchmark and returns the exit code. envURL is
// the value of ALLOT_API_URL; exe is this program's executable, which the
// baseline workload starts as its bare server.
func run(ctx context.Context, args []string, envURL, exe string, stdout, stderr io.Writer) int {
	cfg := bench.DefaultConfig()
	if envURL != "" {
		cfg.URL = envURL
	}
	cfg.Executable = exe
	fs := flag.NewFlagSet("allot-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: allot-bench [flags]\n\n"+
			"Benchmarks a running allot server, and measures this machine's yardstick for it: a bare\n"+
			"Go net/http JSON round trip, served by allot-bench itself in a process of its own\n"+
			"(%s=<addr> starts it as that server instead).\n\nFlags:\n", bench.BareServerEnv)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.URL, "url", cfg.URL, "API base URL (ALLOT_API_URL sets the default)")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("ALLOT_API_KEY"), "API key sent as a bearer token, for a server with --auth keys (ALLOT_API_KEY sets the default; an admin key, or one with read, acquire and manage on the bench's limits)")
	fs.StringVar(&cfg.Workload, "workload", cfg.Workload, "workload to run: baseline, throughput, handoff, memory, scale, or all (baseline, throughput and handoff)")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "the server's Prometheus metrics, read by memory, and by throughput and handoff for the server's CPU time (default: /metrics beside the API's /api)")
	workers := fs.Int("workers", 0, fmt.Sprintf("workers per workload (default %d for baseline and throughput, %d for handoff)",
		cfg.ThroughputWorkers, cfg.HandoffWorkers))
	fs.IntVar(&cfg.Limits, "limits", cfg.Limits, "limits of one slot the throughput workload spreads over")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long each workload is measured")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "how long each workload runs before it is measured")
	fs.DurationVar(&cfg.Hold, "hold", cfg.Hold, "how long a handoff worker holds the slot")
	fs.IntVar(&cfg.Leases, "leases", cfg.Leases, "leases the memory workload holds, over limits of 100 slots (0 skips that part)")
	fs.IntVar(&cfg.Waiters, "waiters", cfg.Waiters, "requests the memory workload keeps waiting, each on its own connection (0 skips that part)")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "how long memory lets the server settle before reading its memory, and the gap between its two readings")
	fs.Func("scale-sizes", fmt.Sprintf("comma-separated numbers of leases the scale workload holds while it measures (default %q)",
		formatSizes(cfg.ScaleSizes)), func(s string) error {
		sizes, err := parseSizes(s)
		if err != nil {
			return err
		}
		cfg.ScaleSizes = sizes
		return nil
	})
	fs.StringVar(&cfg.Prefix, "prefix", "", "limit name prefix (default bench-<random>)")
	fs.BoolVar(&cfg.Cleanup, "cleanup", cfg.Cleanup, "delete the limits afterwards")
	fs.BoolVar(&cfg.JSON, "json", cfg.JSON, "print one JSON object per workload")
	fs.BoolVar(&cfg.NetHTTP, "nethttp", cfg.NetHTTP, "send acquires and releases, and the baseline's requests, through Go's net/http client instead of the lean raw HTTP/1.1 client")
	fs.StringVar(&cfg.FsyncDir, "fsync-dir", "", "where baseline times the disk's fsyncs: the disk of the server's data directory (default: the system's temporary directory)")
	pages := fs.Int("ui-pages", 0, "web UI pages kept open while the workloads run: each listens on /ui/live and fetches the limits table on every change, as a browser does")
	compare := fs.Bool("compare", false, "run throughput and handoff against allot (-url, and each -also) and against the peers that answer (-peer-pg, -peer-redis), then print a table with allot's pairs/s over each peer's")
	var also []bench.Target
	fs.Func("also", "with -compare: another allot server to measure, as name=url (repeatable), such as follower=http://127.0.0.1:4201/api", func(s string) error {
		name, u, ok := strings.Cut(s, "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("%q: want name=url", s)
		}
		also = append(also, bench.Target{Name: name, URL: u})
		return nil
	})
	peerPG := fs.String("peer-pg", envOr("ALLOT_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "with -compare: the PostgreSQL for Prefect's conditional UPDATE (ALLOT_BENCH_PG_URL; empty: none)")
	peerRedis := fs.String("peer-redis", envOr("ALLOT_BENCH_REDIS_ADDR", "127.0.0.1:6379"), "with -compare: the Redis (host:port) for the Lua semaphore (ALLOT_BENCH_REDIS_ADDR; empty: none)")
	cpuProfile := fs.String("cpuprofile", "", "write allot-bench's own CPU profile to this file (to check that the load generator stays cheaper than what it loads)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "allot-bench: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if *workers < 0 {
		fmt.Fprintf(stderr, "allot-bench: -workers %d is negative\n", *workers)
		return 2
	}
	if *workers > 0 {
		cfg.ThroughputWorkers = *workers
		cfg.HandoffWorkers = *workers
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "allot-bench: %v\n", err)
		return 2
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "allot-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "allot-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *pages > 0 {
		stopPages := uiPages(ctx, cfg.URL, *pages)
		defer func() { f, e := stopPages(); reportUIPages(stderr, *pages, f, e) }()
	}
	var results []bench.Result
	var err error
	if *compare {
		var peers []func(context.Context) (bench.Peer, error)
		if *peerPG != "" {
			peers = append(peers, func(ctx context.Context) (bench.Peer, error) {
				p, err := bench.NewPostgresPeer(ctx, *peerPG)
				if err != nil {
					return nil, fmt.Errorf("pg-update: PostgreSQL does not answer at %s: %w", *peerPG, err)
				}
				return p, nil
			})
		}
		if *peerRedis != "" {
			peers = append(peers, func(ctx context.Context) (bench.Peer, error) {
				p, err := bench.NewRedisPeer(ctx, *peerRedis)
				if err != nil {
					return nil, fmt.Errorf("redis-lua: Redis does not answer at %s: %w", *peerRedis, err)
				}
				return p, nil
			})
		}
		targets := append([]bench.Target{{Name: "allot", URL: cfg.URL}}, also...)
		results, err = bench.Compare(ctx, cfg, targets, peers, stdout)
	} else {
		results, err = bench.Run(ctx, cfg, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "allot-bench: %v\n", err)
		return 1
	}
	code := 0
	for _, r := range results {
		if r.Overlaps > 0 || r.FencingRegressions > 0 || r.LeakedSlots > 0 {
			fmt.Fprintf(stderr, "allot-bench: %s: safety check failed: overlaps=%d fencing_regressions=%d leaked=%d\n",
				r.Workload, r.Overlaps, r.FencingRegressions, r.LeakedSlots)
			code = 1
		}
	}
	return code
}

// envOr returns the environment variable key, or def if it is unset.
func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// parseSizes parses a comma-separated list of counts, such as "10,100000".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", f)
		}
		if n < 0 {
			return nil, fmt.Errorf("%d is negative", n)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// formatSizes formats sizes as parseSizes reads them.
func formatSizes(sizes []int) string {
	fs := make([]string, len(sizes))
	for i, n := range sizes {
		fs[i] = strconv.Itoa(n)
	}
	return strings.Join(fs, ",")
}
