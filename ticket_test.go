package allot_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-dev/allot"
)

// cutter is a proxy in front of a real server that can lose the answer to
// the first acquisition (lose) or cut its connection while it waits in line
// (cut): what a client sees when the network or a server restart gets in
// the way. Every other request goes through untouched.
type cutter struct {
	proxy *httputil.ReverseProxy
	// lose: forward the first acquisition, let the server grant it, then
	// drop the answer.
	lose bool
	// cut, when closed, drops the first acquisition's connection while the
	// server keeps it in line.
	cut   chan struct{}
	first atomic.Bool
	// acquires counts the acquisitions the server was sent.
	acquires atomic.Int32
}

func newCutter(t *testing.T, target string) (*cutter, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = ""
	p := &cutter{proxy: httputil.NewSingleHostReverseProxy(u), cut: make(chan struct{})}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL + "/api"
}

func (p *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/increment-with-lease") {
		p.proxy.ServeHTTP(w, r)
		return
	}
	p.acquires.Add(1)
	if !p.first.CompareAndSwap(false, true) {
		p.proxy.ServeHTTP(w, r)
		return
	}
	if p.lose {
		rec := httptest.NewRecorder()
		p.proxy.ServeHTTP(rec, r)   // the server grants it...
		panic(http.ErrAbortHandler) // ...and the answer is lost
	}
	ctx, cancel := context.WithCancel(r.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.proxy.ServeHTTP(httptest.NewRecorder(), r.WithContext(ctx))
	}()
	select {
	case <-p.cut:
	case <-done:
	}
	cancel() // the server sees the connection go...
	<-done
	panic(http.ErrAbortHandler) // ...and so does the client
}

func TestAcquireRetriedAfterLostAnswerGetsTheSameLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 2})
	p, u := newCutter(t, b.srv.URL())
	p.lose = true
	c, err := allot.NewClient(allot.WithURL(u), allot.WithRetry(4, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	l, err := c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer l.Release(context.Background())
	if n := p.acquires.Load(); n != 2 {
		t.Fatalf("acquisitions sent = %d, want 2 (the lost one and its retry)", n)
	}
	lim, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if lim.ActiveSlots != 1 || len(lim.Holders) != 1 || lim.Holders[0].LeaseID != l.ID() {
		t.Errorf("after a retried acquisition: active %d holders %+v, want the one lease %s", lim.ActiveSlots, lim.Holders, l.ID())
	}
}

func TestWaiterReconnectsAndKeepsItsPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	held, err := b.c.Acquire(t.Context(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	p, u := newCutter(t, b.srv.URL())
	c, err := allot.NewClient(allot.WithURL(u), allot.WithRetry(4, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	order := make(chan string, 2)
	wait := func(c *allot.Client, who string) {
		defer wg.Done()
		l, err := c.Acquire(t.Context(), []string{"db"}, allot.Timeout(time.Minute))
		if err != nil {
			t.Errorf("%s: %v", who, err)
			return
		}
		order <- who
		time.Sleep(50 * time.Millisecond)
		_ = l.Release(context.Background())
	}
	waiting := func(n int) func() bool {
		return func() bool {
			l, err := b.c.GetLimit(t.Context(), "db")
			return err == nil && l.Waiting == n
		}
	}
	wg.Add(2)
	go wait(c, "first")
	eventually(t, "the first waiter is in line", waiting(1))
	go wait(b.c, "second")
	eventually(t, "the second waiter is in line", waiting(2))
	close(p.cut) // the first one's connection drops; it reconnects
	eventually(t, "the first waiter is back", func() bool { return p.acquires.Load() >= 2 })
	if err := held.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	var got []string
	for who := range order {
		got = append(got, who)
	}
	if len(got) != 2 || got[0] != "first" {
		t.Errorf("granted in order %v, want [first second]", got)
	}
}

// A TryAcquire whose answer is lost (and no retry is left) cancels its
// ticket: the lease the server granted it is released, not left held
// until it expires.
func TestTryAcquireWithLostAnswerCancelsItsTicket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.limit(t, allot.LimitSpec{Name: "db", Limit: 1})
	p, u := newCutter(t, b.srv.URL())
	p.lose = true
	c, err := allot.NewClient(allot.WithURL(u), allot.WithRetry(0, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if l, err := c.TryAcquire(t.Context(), []string{"db"}); err == nil {
		l.Release(context.Background())
		t.Fatal("TryAcquire with its answer lost: granted, want a connection error")
	}
	if n := p.acquires.Load(); n != 1 {
		t.Fatalf("acquisitions sent = %d, want 1", n)
	}
	lim, err := b.c.GetLimit(t.Context(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if lim.ActiveSlots != 0 || len(lim.Holders) != 0 {
		t.Errorf("after a lost TryAcquire: active %d holders %+v, want the granted lease released", lim.ActiveSlots, lim.Holders)
	}
}
