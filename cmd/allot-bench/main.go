// Command allot-bench measures a running allot server over HTTP: how many
// acquire+release pairs per second it serves (throughput) and how promptly
// and fairly it hands one slot from holder to waiter (handoff). Each
// workload prints one line, or one JSON object with -json.
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
	"syscall"

	"github.com/allot-dev/allot/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv("ALLOT_API_URL"), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, runs the benchmark and returns the exit code. envURL is
// the value of ALLOT_API_URL.
func run(ctx context.Context, args []string, envURL string, stdout, stderr io.Writer) int {
	cfg := bench.DefaultConfig()
	if envURL != "" {
		cfg.URL = envURL
	}
	fs := flag.NewFlagSet("allot-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: allot-bench [flags]\n\nBenchmarks a running allot server.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.URL, "url", cfg.URL, "API base URL (ALLOT_API_URL sets the default)")
	fs.StringVar(&cfg.Workload, "workload", cfg.Workload, "workload to run: throughput, handoff or all")
	workers := fs.Int("workers", 0, fmt.Sprintf("workers per workload (default %d for throughput, %d for handoff)",
		cfg.ThroughputWorkers, cfg.HandoffWorkers))
	fs.IntVar(&cfg.Limits, "limits", cfg.Limits, "limits of one slot the throughput workload spreads over")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long each workload is measured")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "how long each workload runs before it is measured")
	fs.DurationVar(&cfg.Hold, "hold", cfg.Hold, "how long a handoff worker holds the slot")
	fs.StringVar(&cfg.Prefix, "prefix", "", "limit name prefix (default bench-<random>)")
	fs.BoolVar(&cfg.Cleanup, "cleanup", cfg.Cleanup, "delete the limits afterwards")
	fs.BoolVar(&cfg.JSON, "json", cfg.JSON, "print one JSON object per workload")
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

	results, err := bench.Run(ctx, cfg, stdout)
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
