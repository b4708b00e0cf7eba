package allot_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/server"
)

// startServer runs an allot server on a free port with a temporary store
// for one example, and returns a client of it and the function that stops
// it. (Tests use package allottest instead.)
func startServer() (*allot.Client, func()) {
	dir, err := os.MkdirTemp("", "allot-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: dir, Synchronous: "NORMAL",
			Coord: coord.DefaultConfig(), Listening: func(a net.Addr) { addr <- a }})
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a.String() + "/api"
	case err := <-done:
		log.Fatal(err)
	}
	c, err := allot.NewClient(allot.WithURL(url), allot.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	return c, func() {
		c.CloseIdleConnections()
		cancel()
		<-done
		os.RemoveAll(dir)
	}
}

func ExampleNewClient() {
	// Without options, the client reads ALLOT_API_URL and ALLOT_API_KEY.
	client, err := allot.NewClient(allot.WithURL("http://allot.internal:4200/api"), allot.WithRetry(2, time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.URL())
	// Output: http://allot.internal:4200/api
}

func ExampleClient_Concurrency() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	if _, err := client.EnsureLimit(ctx, "warehouse", 10); err != nil {
		log.Fatal(err)
	}

	// Hold 2 of the warehouse's 10 slots while the load runs; the lease
	// is renewed meanwhile and released when the function returns.
	err := client.Concurrency(ctx, []string{"warehouse"}, func(ctx context.Context) error {
		l, _ := client.GetLimit(ctx, "warehouse")
		fmt.Printf("loading with %d of %d slots taken\n", l.ActiveSlots, l.Limit)
		return nil
	}, allot.Occupy(2), allot.Timeout(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	l, _ := client.GetLimit(ctx, "warehouse")
	fmt.Printf("done, %d slots taken\n", l.ActiveSlots)
	// Output:
	// loading with 2 of 10 slots taken
	// done, 0 slots taken
}

func ExampleClient_Acquire() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	if _, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "customer:42", Limit: 1}); err != nil {
		log.Fatal(err)
	}

	lease, err := client.Acquire(ctx, []string{"customer:42"}, allot.LeaseDuration(time.Minute),
		allot.Holder("process", "invoice-run", map[string]string{"host": "worker-3"}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("holding", lease.Limits()[0].Name, "with a fencing token:", lease.FencingToken() > 0)

	// The lease renews itself until Release; Done closes if it is lost.
	select {
	case <-lease.Done():
		fmt.Println("lost:", lease.Err())
	default:
		fmt.Println("still held")
	}
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(lease.Err())
	// Output:
	// holding customer:42 with a fencing token: true
	// still held
	// lease released
}

func ExampleClient_TryAcquire() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	if _, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "nightly-report", Limit: 1}); err != nil {
		log.Fatal(err)
	}
	first, err := client.TryAcquire(ctx, []string{"nightly-report"})
	if err != nil {
		log.Fatal(err)
	}
	defer first.Release(ctx)

	_, err = client.TryAcquire(ctx, []string{"nightly-report"})
	var locked *allot.LockedError
	if errors.As(err, &locked) {
		fmt.Println("already running; try again later:", errors.Is(err, allot.ErrLocked))
	}
	// Output: already running; try again later: true
}

func ExampleClient_RateLimit() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	// At most 10 calls a second, in bursts of up to 5.
	_, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "github-api", Limit: 5, SlotDecayPerSecond: 10})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		if err := client.RateLimit(ctx, []string{"github-api"}); err != nil {
			log.Fatal(err)
		}
		fmt.Println("call", i)
	}
	// Output:
	// call 0
	// call 1
	// call 2
}

func ExampleClient_EnsureLimit() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	// Safe to call from every process at start-up: the first creates the
	// limit, the others find it; a different size updates it.
	for _, size := range []int{4, 4, 8} {
		l, err := client.EnsureLimit(ctx, "gpu", size)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(l.Name, l.Limit)
	}
	// Output:
	// gpu 4
	// gpu 4
	// gpu 8
}

func ExampleClient_UpdateLimit() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	if _, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "db", Limit: 5}); err != nil {
		log.Fatal(err)
	}
	if _, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "tenant:*", Limit: 1}); err != nil {
		log.Fatal(err)
	}
	// Only the fields set change.
	if err := client.UpdateLimit(ctx, "db", allot.LimitUpdate{Limit: new(3), Active: new(false)}); err != nil {
		log.Fatal(err)
	}
	limits, err := client.ListLimits(ctx, 0, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range limits {
		fmt.Printf("%s limit=%d active=%v template=%v\n", l.Name, l.Limit, l.Active, l.Template)
	}
	if err := client.DeleteLimit(ctx, "db"); err != nil {
		log.Fatal(err)
	}
	_, err = client.GetLimit(ctx, "db")
	fmt.Println(errors.Is(err, allot.ErrLimitNotFound))
	// Output:
	// db limit=3 active=false template=false
	// tenant:* limit=1 active=true template=true
	// true
}

func ExampleLeaseFrom() {
	client, stop := startServer()
	defer stop()
	ctx := context.Background()
	if _, err := client.CreateLimit(ctx, allot.LimitSpec{Name: "primary", Limit: 1}); err != nil {
		log.Fatal(err)
	}
	err := client.Concurrency(ctx, []string{"primary"}, func(ctx context.Context) error {
		// Pass the fencing token to a resource that refuses tokens older
		// than the newest it has seen.
		token := allot.LeaseFrom(ctx).FencingToken()
		fmt.Println("writing with a token:", token > 0)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: writing with a token: true
}

func ExampleStrict() {
	client, stop := startServer()
	defer stop()
	// Without Strict, a limit that does not exist is logged and the work
	// runs unprotected, as in Prefect. With it, that is an error.
	err := client.Concurrency(context.Background(), []string{"no-such-limit"}, func(context.Context) error {
		return nil
	}, allot.Strict())
	fmt.Println(errors.Is(err, allot.ErrLimitNotFound))
	// Output: true
}
