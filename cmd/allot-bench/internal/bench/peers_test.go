package bench

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/store/postgres/pgtest"
)

// TestRetryAfter checks the Prefect rule: the mean scales with the
// occupancy and (denied+1)/limit, every draw stays within [0.75, 1.3] of
// it, and the cap holds.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		avg           float64
		denied, limit int
		mean          float64 // seconds
	}{
		{2, 10, 10, 2.2},
		{0.001, 0, 1, 0.001},
		{0.001, 15, 1, 0.016},
		{100, 0, 1, prefectMaxWait},
	} {
		var sum float64
		const n = 2000
		for range n {
			d := retryAfter(tc.avg, tc.denied, tc.limit).Seconds()
			if d < 0.75*tc.mean || d > 1.3*tc.mean+1e-9 {
				t.Fatalf("retryAfter(%v, %d, %d) = %vs, want within [%v, %v]", tc.avg, tc.denied, tc.limit, d, 0.75*tc.mean, 1.3*tc.mean)
			}
			sum += d
		}
		if got := sum / n; got < 0.85*tc.mean || got > 1.15*tc.mean {
			t.Errorf("retryAfter(%v, %d, %d) averages %vs, want about %vs", tc.avg, tc.denied, tc.limit, got, tc.mean)
		}
	}
}

// runPeerBriefly runs both workloads against p for a moment and checks the
// safety counters and that slots changed hands.
func runPeerBriefly(t *testing.T, p Peer) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Duration, cfg.Warmup = 500*time.Millisecond, 100*time.Millisecond
	cfg.ThroughputWorkers, cfg.HandoffWorkers, cfg.Limits = 8, 4, 4
	rs, err := RunPeer(t.Context(), p, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Throughput == nil || rs[1].Handoff == nil {
		t.Fatalf("results %+v, want throughput then handoff", rs)
	}
	for _, r := range rs {
		if r.Errors != 0 || r.Overlaps != 0 || r.LeakedSlots != 0 || r.System != p.Name() {
			t.Errorf("%s %s: errors=%d (%s) overlaps=%d leaked=%d system=%q, want no errors, overlaps or leaks, system %q",
				p.Name(), r.Workload, r.Errors, r.FirstError, r.Overlaps, r.LeakedSlots, r.System, p.Name())
		}
	}
	if rs[0].Pairs == 0 || rs[1].Grants == 0 {
		t.Errorf("%s: %d pairs and %d hand-offs, want some", p.Name(), rs[0].Pairs, rs[1].Grants)
	}
}

// TestPostgresPeer runs the conditional-UPDATE peer on the test
// PostgreSQL (skipped when none answers, failed under CI=true).
func TestPostgresPeer(t *testing.T) {
	t.Parallel()
	url, _ := pgtest.Schema(t)
	p, err := NewPostgresPeer(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}()
	runPeerBriefly(t, p)
}

// TestRedisPeer runs the Lua semaphore, and with it the RESP client, on
// the Redis at 127.0.0.1:6379 (skipped when none answers).
func TestRedisPeer(t *testing.T) {
	t.Parallel()
	const addr = "127.0.0.1:6379"
	if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
		t.Skipf("Redis does not answer at %s: %v", addr, err)
	} else {
		c.Close()
	}
	p, err := NewRedisPeer(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	runPeerBriefly(t, p)
	keys := p.keys
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := dialRESP(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if n, err := c.do(append([]string{"EXISTS"}, keys...)...); err != nil || n != int64(0) {
		t.Errorf("after Close, EXISTS of the peer's keys = %v (%v), want 0", n, err)
	}
	if _, err := c.do("NOSUCHCOMMAND"); err == nil {
		t.Errorf("an unknown command answered no error")
	}
}
