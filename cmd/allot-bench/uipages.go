package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// uiPages stands for n browsers showing the web UI's limits page while the
// workloads run: each listens on /ui/live and fetches the limits table
// again on every "change", as htmx does. It returns a function that stops
// them and reports the fetches.
func uiPages(ctx context.Context, apiURL string, n int) (stop func() (fetches, failures int64)) {
	base := strings.TrimSuffix(strings.TrimRight(apiURL, "/"), "/api")
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var fetched, failed atomic.Int64
	hc := &http.Client{}
	fetch := func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ui/limits?part=table", nil)
		req.Header.Set("HX-Request", "true")
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				failed.Add(1)
			}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed.Add(1)
			return
		}
		fetched.Add(1)
	}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ui/live", nil)
			resp, err := hc.Do(req)
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() == "event: change" {
					fetch()
				}
			}
		}()
	}
	return func() (int64, int64) {
		cancel()
		wg.Wait()
		return fetched.Load(), failed.Load()
	}
}

func reportUIPages(w io.Writer, n int, fetches, failures int64) {
	fmt.Fprintf(w, "ui-pages: %d pages open fetched the limits table %d times (%d failures)\n", n, fetches, failures)
}
