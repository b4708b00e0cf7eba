package webui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store/memstore"
	"github.com/allot-dev/allot/internal/webui"
)

// BenchmarkLimitPage renders the page of a limit with 1,000 holders and
// 1,000 waiters (the bound: under 50 ms), through the UI's
// handler: the coordinator's read, the why sentence and the template.
func BenchmarkLimitPage(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := coord.New(ctx, memstore.New(), coord.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	const n = 1000
	if _, err := c.CreateLimit(ctx, sema.LimitSpec{Name: "db", Limit: n, Active: true}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, sema.LimitSpec{Name: "other", Limit: 1, Active: true}); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := c.Acquire(ctx, coord.AcquireRequest{Names: []string{"db"}, Slots: 1,
			Holder: sema.Holder{Type: "process", ID: fmt.Sprintf("worker-%d", i), Metadata: map[string]string{"host": "h1"}}}); err != nil {
			b.Fatal(err)
		}
	}
	waitCtx, stopWaiting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Acquire(waitCtx, coord.AcquireRequest{Names: []string{"db", "other"}, Slots: 1, Wait: time.Hour,
				Holder: sema.Holder{Type: "process", ID: fmt.Sprintf("waiter-%d", i)}})
		}()
	}
	for {
		v, err := c.ReadLimit(ctx, "db", sema.Summary)
		if err != nil {
			b.Fatal(err)
		}
		if v.Waiting == n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ui := webui.New(c, webui.Options{})
	req := httptest.NewRequest("GET", "/ui/limits/db", nil)
	b.ReportAllocs()
	b.ResetTimer()
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	b.StopTimer()
	b.ReportMetric(float64(size), "bytes/page")
	stopWaiting()
	wg.Wait()
	cancel()
	<-done
}

// BenchmarkLimitsTable renders the limits table a live limits page
// fetches on every change, over 64 busy limits.
func BenchmarkLimitsTable(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := coord.New(ctx, memstore.New(), coord.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for i := range 64 {
		name := fmt.Sprintf("bench-%02d", i)
		if _, err := c.CreateLimit(ctx, sema.LimitSpec{Name: name, Limit: 1, Active: true}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Acquire(ctx, coord.AcquireRequest{Names: []string{name}, Slots: 1}); err != nil {
			b.Fatal(err)
		}
	}
	ui := webui.New(c, webui.Options{})
	req := httptest.NewRequest("GET", "/ui/limits?part=table", nil)
	req.Header.Set("HX-Request", "true")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
	cancel()
	<-done
}
