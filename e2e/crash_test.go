package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// ledger is what clients were told: leases acknowledged and not released,
// leases whose release was acknowledged, and leases whose release was cut
// off by the crash.
type ledger struct {
	mu       sync.Mutex
	held     map[string]leaseAnswer
	released map[string]bool
	unsure   map[string]bool
	maxFence uint64
}

func newLedger() *ledger {
	return &ledger{held: map[string]leaseAnswer{}, released: map[string]bool{}, unsure: map[string]bool{}}
}

// TestCrashKeepsAcknowledgedLeases kills the server with SIGKILL while
// clients acquire and release, three times, and checks after each restart
// that every acknowledged lease is still held with its expiry, no released
// lease came back, no limit is over-granted, fencing tokens keep growing and
// a waiter cut off by the crash can queue again.
func TestCrashKeepsAcknowledgedLeases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, dir, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	const nLimits, limit = 4, 3
	names := make([]string, nLimits)
	for i := range names {
		names[i] = fmt.Sprintf("crash-%d", i)
		mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/"), map[string]any{"name": names[i], "limit": limit}, nil, 201)
	}
	mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/"), map[string]any{"name": "crash-w", "limit": 1}, nil, 201)

	led := newLedger()
	for round := range 3 {
		// A holder and a waiter on crash-w.
		var wHolder leaseAnswer
		mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
			map[string]any{"names": []string{"crash-w"}, "slots": 1, "lease_duration": 600}, &wHolder, 200)
		waiterErr := make(chan error, 1)
		go func() {
			_, _, err := call(context.Background(), client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
				map[string]any{"names": []string{"crash-w"}, "slots": 1, "lease_duration": 600, "timeout_seconds": 60}, nil)
			waiterErr <- err
		}()

		ctx, stopLoad := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				load(ctx, client, srv, names, led, uint64(round*100+w))
			}()
		}
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		srv.kill()
		stopLoad()
		wg.Wait()
		if err := <-waiterErr; err == nil {
			t.Fatalf("round %d: the waiter's request survived a SIGKILL of the server", round)
		}

		srv = startServer(t, dir, srv.addr)
		checkLedger(t, client, srv, names, limit, led)

		// The cut-off waiter queues again and gets the slot when the holder,
		// whose lease survived the crash, releases it.
		got := make(chan leaseAnswer, 1)
		go func() {
			var a leaseAnswer
			code, _, err := call(context.Background(), client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
				map[string]any{"names": []string{"crash-w"}, "slots": 1, "lease_duration": 600, "timeout_seconds": 30}, &a)
			if err != nil || code != 200 {
				t.Errorf("round %d: requeued waiter: got %d (%v), want 200", round, code, err)
			}
			got <- a
		}()
		waitFor(t, func() bool {
			var v limitView
			_, _, err := call(t.Context(), client, "GET", srv.url("/v2/concurrency_limits/crash-w"), nil, &v)
			return err == nil && v.Waiting == 1
		})
		mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": wHolder.LeaseID}, nil, 204)
		a := <-got
		if a.FencingToken <= wHolder.FencingToken {
			t.Errorf("round %d: fencing token after restart %d, want > %d", round, a.FencingToken, wHolder.FencingToken)
		}
		mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": a.LeaseID}, nil, 204)

		// Start the next round with every limit free again.
		for id := range led.held {
			mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": id}, nil, 204)
			delete(led.held, id)
			led.released[id] = true
		}
		for id := range led.unsure {
			mustCall(t, client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"), map[string]any{"lease_id": id}, nil, 204)
		}
		clear(led.unsure)
	}
	srv.stop()
}

// load acquires and releases until ctx ends or the server goes away,
// writing what it was told into led.
func load(ctx context.Context, client *http.Client, srv *server, names []string, led *ledger, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	kept := false
	for ctx.Err() == nil {
		req := []string{names[rng.IntN(len(names))]}
		if rng.IntN(3) == 0 {
			if other := names[rng.IntN(len(names))]; other != req[0] {
				req = append(req, other)
			}
		}
		var a leaseAnswer
		code, _, err := call(ctx, client, "POST", srv.url("/v2/concurrency_limits/increment-with-lease"),
			map[string]any{"names": req, "slots": 1, "lease_duration": 600, "timeout_seconds": 2}, &a)
		if err != nil {
			return
		}
		if code != 200 {
			continue
		}
		led.mu.Lock()
		led.held[a.LeaseID] = a
		led.maxFence = max(led.maxFence, a.FencingToken)
		led.mu.Unlock()
		if !kept && rng.IntN(10) == 0 {
			kept = true
			continue // keep this one across the crash
		}
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		code, _, err = call(context.Background(), client, "POST", srv.url("/v2/concurrency_limits/decrement-with-lease"),
			map[string]any{"lease_id": a.LeaseID}, nil)
		led.mu.Lock()
		delete(led.held, a.LeaseID)
		if err == nil && code == 204 {
			led.released[a.LeaseID] = true
		} else {
			led.unsure[a.LeaseID] = true
		}
		led.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func checkLedger(t *testing.T, client *http.Client, srv *server, names []string, limit int, led *ledger) {
	t.Helper()
	led.mu.Lock()
	defer led.mu.Unlock()
	holders := map[string]holderView{}
	for _, name := range names {
		var v limitView
		mustCall(t, client, "GET", srv.url("/v2/concurrency_limits/"+name), nil, &v, 200)
		held := 0
		for _, h := range v.Holders {
			held += h.Slots
			holders[h.LeaseID] = h
			if led.released[h.LeaseID] {
				t.Errorf("%s: lease %s is held after restart, but its release was acknowledged", name, h.LeaseID)
			}
		}
		if held > limit {
			t.Errorf("%s: %d slots held after restart, limit %d", name, held, limit)
		}
	}
	for id, a := range led.held {
		h, ok := holders[id]
		if !ok {
			t.Errorf("acknowledged lease %s (fence %d) is gone after restart", id, a.FencingToken)
			continue
		}
		if d := h.Expires.Sub(a.Expires).Abs(); d > time.Microsecond {
			t.Errorf("lease %s expires %v after restart, was told %v", id, h.Expires, a.Expires)
		}
		if h.FencingToken != a.FencingToken {
			t.Errorf("lease %s fencing token %d after restart, was told %d", id, h.FencingToken, a.FencingToken)
		}
	}
	if len(led.held)+len(led.released) == 0 {
		t.Errorf("the load granted nothing before the crash")
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
