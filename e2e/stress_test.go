package e2e

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

type interval struct {
	from, to time.Time // grant received, release sent
	names    []string
}

// TestStressNeverOverGranted runs many waiting clients against small limits
// and checks "held ≤ limit" twice: from the server's own reads while the
// load runs, and from the clients' hold intervals (each of which lies
// inside the server's, so overlap counted on them can only be lower).
func TestStressNeverOverGranted(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir(), "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	limits := map[string]int{"stress-a": 3, "stress-b": 1, "stress-c": 2}
	for name, n := range limits {
		mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/"), map[string]any{"name": name, "limit": n}, nil, 201)
	}
	requests := [][]string{{"stress-a"}, {"stress-b"}, {"stress-c"}, {"stress-a", "stress-b"}, {"stress-c", "stress-a"}}

	// The load runs for at least 2 s and until it has made 100 holds (a
	// busy machine makes fewer per second), at most 30 s.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	var holds []interval
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names := requests[w%len(requests)]
			for ctx.Err() == nil {
				var a leaseAnswer
				code, _, err := call(ctx, client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
					map[string]any{"names": names, "slots": 1, "lease_duration": 30, "timeout_seconds": 5}, &a)
				if err != nil || code != 200 {
					if ctx.Err() == nil {
						t.Errorf("acquire %v: got %d (%v), want 200", names, code, err)
					}
					return
				}
				from := time.Now()
				time.Sleep(500 * time.Microsecond)
				to := time.Now()
				if code, _, err := call(context.Background(), client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"),
					map[string]any{"lease_id": a.LeaseID}, nil); err != nil || code != 204 {
					t.Errorf("release: got %d (%v), want 204", code, err)
					return
				}
				mu.Lock()
				holds = append(holds, interval{from: from, to: to, names: names})
				mu.Unlock()
			}
		}()
	}
	reads := 0
	for ctx.Err() == nil {
		mu.Lock()
		enough := len(holds) >= 100
		mu.Unlock()
		if enough && time.Since(start) >= 2*time.Second {
			cancel()
			break
		}
		for name, n := range limits {
			var v limitView
			if code, _, err := call(ctx, client, "GET", srv.url("/v2/concurrency_limits/"+name), nil, &v); err != nil || code != 200 {
				continue
			}
			reads++
			held := 0
			for _, h := range v.Holders {
				held += h.Slots
			}
			if v.ActiveSlots > n || held > n {
				t.Errorf("%s read active_slots %d, holders' slots %d, limit %d", name, v.ActiveSlots, held, n)
			}
		}
	}
	wg.Wait()
	if reads == 0 || len(holds) < 100 {
		t.Fatalf("load too small to mean anything: %d reads, %d holds", reads, len(holds))
	}
	for name, n := range limits {
		if got := maxOverlap(holds, name); got > n {
			t.Errorf("%s: %d clients held it at once, limit %d", name, got, n)
		}
	}
	t.Logf("%d holds, %d reads", len(holds), reads)
}

// maxOverlap is the most intervals naming name that contain one instant.
func maxOverlap(holds []interval, name string) int {
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	for _, h := range holds {
		if slices.Contains(h.names, name) {
			edges = append(edges, edge{h.from, 1}, edge{h.to, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // ends before starts at the same instant
	})
	cur, best := 0, 0
	for _, e := range edges {
		cur += e.d
		best = max(best, cur)
	}
	return best
}

func TestMaxOverlap(t *testing.T) {
	t.Parallel()
	base := time.Unix(0, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	holds := []interval{
		{at(0), at(10), []string{"x"}},
		{at(5), at(15), []string{"x", "y"}},
		{at(10), at(20), []string{"x"}},
		{at(12), at(13), []string{"y"}},
	}
	for name, want := range map[string]int{"x": 2, "y": 2, "z": 0} {
		if got := maxOverlap(holds, name); got != want {
			t.Errorf("maxOverlap(%s) = %d, want %d", name, got, want)
		}
	}
}
