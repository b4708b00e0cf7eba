package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Target is an allot server the compare mode measures, by name.
type Target struct {
	Name string // such as "allot" or "follower"
	URL  string // its API base URL
}

// Compare is the compare mode: the throughput and handoff workloads against
// each allot target, then against each peer that answers (a peer that
// cannot be reached is skipped with a line saying so), each result written
// to w as it is known, and last a table of pairs per second, hand-off gap,
// FIFO and Jain, with each allot target's pairs per second over each
// peer's. cfg's URL and Workload are not used.
func Compare(ctx context.Context, cfg Config, targets []Target, peers []func(context.Context) (Peer, error), w io.Writer) ([]Result, error) {
	var results []Result
	for _, t := range targets {
		for _, wl := range []string{WorkloadThroughput, WorkloadHandoff} {
			c := cfg
			c.URL, c.Workload, c.MetricsURL, c.System = t.URL, wl, "", t.Name
			rs, err := Run(ctx, c, w)
			if err != nil {
				return results, fmt.Errorf("%s: %w", t.Name, err)
			}
			results = append(results, rs...)
		}
	}
	for _, open := range peers {
		p, err := open(ctx)
		if err != nil {
			fmt.Fprintf(w, "skipped a peer: %v\n", err)
			continue
		}
		rs, err := RunPeer(ctx, p, cfg, w)
		if cerr := p.Close(); err == nil && cerr != nil {
			fmt.Fprintf(w, "%s: clean up: %v\n", p.Name(), cerr)
		}
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	fmt.Fprint(w, compareTable(results))
	return results, nil
}

// compareTable renders the summary of a compare run.
func compareTable(results []Result) string {
	type row struct {
		pairs, gap50, gap99, fifo, jain float64
		peer                            bool
	}
	var order []string
	rows := map[string]*row{}
	for _, r := range results {
		rw, ok := rows[r.System]
		if !ok {
			rw = &row{peer: r.System == "pg-update" || r.System == "redis-lua"}
			rows[r.System] = rw
			order = append(order, r.System)
		}
		if r.Throughput != nil {
			rw.pairs = r.Throughput.PairsPerSecond
		}
		if r.Handoff != nil {
			rw.gap50, rw.gap99, rw.fifo, rw.jain = r.Handoff.GapP50MS, r.Handoff.GapP99MS, r.Handoff.FIFO, r.Handoff.Jain
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %10s %12s %12s %6s %6s\n", "system", "pairs/s", "gap p50 ms", "gap p99 ms", "fifo", "jain")
	for _, name := range order {
		r := rows[name]
		fmt.Fprintf(&b, "%-16s %10.0f %12.2f %12.2f %6.2f %6.3f\n", name, r.pairs, r.gap50, r.gap99, r.fifo, r.jain)
	}
	for _, a := range order {
		if rows[a].peer {
			continue
		}
		for _, p := range order {
			if rows[p].peer && rows[p].pairs > 0 {
				fmt.Fprintf(&b, "%s / %s pairs/s: %.2f×\n", a, p, rows[a].pairs/rows[p].pairs)
			}
		}
	}
	return b.String()
}
