package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BareServerEnv is the environment variable that makes allot-bench the
// baseline's bare server instead of a benchmark: its value is the address
// to listen on, such as 127.0.0.1:0, and main passes it to ServeBare.
const BareServerEnv = "ALLOT_BENCH_BARE_SERVER"

const (
	// bareStartTimeout bounds how long the bare server may take to start
	// and print its address.
	bareStartTimeout = 10 * time.Second
	// bareParentPoll is how often the bare server checks that the process
	// that started it is still there.
	bareParentPoll = 500 * time.Millisecond
	// bareAcquirePath is where the bare server answers: an acquire's path,
	// so that the baseline's requests are byte for byte the throughput
	// workload's acquires.
	bareAcquirePath = "/api/v2/concurrency_limits/increment-with-lease"
	// bareLimitID is the id of every limit the bare server names.
	bareLimitID = "00000000-0000-4000-9000-000000000001"
)

// Baseline is what the baseline workload measured: how many bare Go
// net/http JSON round trips per second this machine serves, with the same
// client, workers, warm-up and duration as the throughput workload. It is
// the yardstick for throughput's pairs per second, which mean little
// without it: the design's target is stated on a machine where this is
// near 67,000.
type Baseline struct {
	// Requests counts the requests answered with a decoded grant in the
	// measured window.
	Requests int `json:"requests"`
	// RequestsPerSecond is Requests over the window's length.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// RequestP50MS and RequestP99MS are percentiles of how long one of them
	// took, in milliseconds.
	RequestP50MS float64 `json:"request_p50_ms"`
	RequestP99MS float64 `json:"request_p99_ms"`
	// IdleP50MS and IdleP99MS are percentiles of one bare round trip on an
	// otherwise idle machine, one every millisecond from one worker: the
	// floor under the handoff workload's gap, which is a request in and
	// an answer out at about that pace.
	IdleP50MS float64 `json:"idle_p50_ms"`
	IdleP99MS float64 `json:"idle_p99_ms"`
	// FsyncP50MS and FsyncP99MS are percentiles of how long this machine's
	// disk takes to write and fsync 8 KiB in Config.FsyncDir: the floor
	// under a durable server's latencies, since every grant handed over
	// waits for one.
	FsyncP50MS float64 `json:"fsync_p50_ms"`
	FsyncP99MS float64 `json:"fsync_p99_ms"`
}

// idleSamples is how many round trips the baseline times on an idle
// machine, at most, and idleEvery their pace.
const (
	idleSamples = 2000
	idleEvery   = time.Millisecond
)

// idleCount is how many idle round trips a baseline measured for d times:
// idleSamples, or fewer to take at most half of d.
func idleCount(d time.Duration) int {
	return max(1, min(idleSamples, int(d/idleEvery/2)))
}

// idleRoundTrips times n acquires of the bare server, one at a time, one
// every idleEvery, over one connection, and returns their latencies,
// sorted.
func idleRoundTrips(ctx context.Context, c *client, name []byte, n int) ([]time.Duration, error) {
	p := c.worker()
	defer p.close()
	body := appendAcquireBody(nil, name, quote("bench-idle"))
	lat := make([]time.Duration, 0, n)
	for range n {
		if err := sleep(ctx, idleEvery); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, err := p.acquire(ctx, body); err != nil {
			return nil, fmt.Errorf("idle round trip: %w", err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat, nil
}

// fsyncSamples is how many writes measureFsync times.
const fsyncSamples = 1000

// measureFsync times fsyncSamples writes of 8 KiB, each followed by an
// fsync, at rotating offsets of a 4 MiB file it creates in dir and
// removes: the pattern of a write-ahead log being reused. It returns the
// latencies, sorted.
func measureFsync(ctx context.Context, dir string) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "allot-bench-fsync-*")
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const size, chunk = 4 << 20, 8 << 10
	if _, err := f.Write(make([]byte, size)); err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	page := make([]byte, chunk)
	lat := make([]time.Duration, 0, fsyncSamples)
	for i := range fsyncSamples {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, err := f.WriteAt(page, int64(i*chunk%size)); err != nil {
			return nil, fmt.Errorf("fsync probe: %w", err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("fsync probe: %w", err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat, nil
}

// bareRequest is what the bare server decodes: the body of an acquire.
type bareRequest struct {
	Names          []string `json:"names"`
	Slots          int      `json:"slots"`
	Mode           string   `json:"mode"`
	LeaseDuration  float64  `json:"lease_duration"`
	TimeoutSeconds float64  `json:"timeout_seconds"`
	Holder         struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"holder"`
}

// bareLimit is a limit as a grant names it.
type bareLimit struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Limit int    `json:"limit"`
}

// bareGrant is what the bare server answers: about the size of allot's
// grant.
type bareGrant struct {
	LeaseID      string      `json:"lease_id"`
	Limits       []bareLimit `json:"limits"`
	FencingToken int64       `json:"fencing_token"`
}

// bareHandler returns the bare server's handler: a ServeMux with one POST
// route that decodes a bareRequest and answers a bareGrant, both with
// encoding/json, and does nothing else.
func bareHandler() http.Handler {
	var token atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+bareAcquirePath, func(w http.ResponseWriter, r *http.Request) {
		var req bareRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if len(req.Names) == 0 {
			http.Error(w, "no names", http.StatusBadRequest)
			return
		}
		n := token.Add(1)
		g := bareGrant{
			LeaseID:      fmt.Sprintf("00000000-0000-4000-8000-%012x", n),
			Limits:       []bareLimit{{ID: bareLimitID, Name: req.Names[0], Limit: req.Slots}},
			FencingToken: n,
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(g)
	})
	return mux
}

// ServeBare serves the baseline's bare server on addr (host:port; port 0
// picks one) and writes the address it listens on to out as one line once
// it accepts connections. It serves until ctx is done or the process that
// started this one has gone, so that a bare server never outlives the
// benchmark that started it even if that one was killed. (That process is
// this one's parent as the address is written, which the benchmark waits
// for.)
func ServeBare(ctx context.Context, addr string, out io.Writer) error {
	ppid := os.Getppid()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("bare server: %w", err)
	}
	if _, err := fmt.Fprintln(out, ln.Addr()); err != nil {
		_ = ln.Close()
		return fmt.Errorf("bare server: write address: %w", err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: shortTimeout}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { watchParent(ctx, ppid, cancel) })
	wg.Go(func() {
		<-ctx.Done()
		_ = srv.Close()
	})
	err = srv.Serve(ln)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("bare server: %w", err)
}

// watchParent calls gone once this process's parent is no longer ppid,
// which on Unix means that parent has exited; it returns when ctx is done.
func watchParent(ctx context.Context, ppid int, gone func()) {
	t := time.NewTicker(bareParentPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != ppid {
				gone()
				return
			}
		}
	}
}

// startBare starts exe as the bare server on a free loopback port and
// returns its address, and a function that kills it and waits for it to
// exit.
func startBare(ctx context.Context, exe string) (addr string, stop func(), err error) {
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(cmd.Environ(), BareServerEnv+"=127.0.0.1:0")
	// A process it started could keep its output open after it was
	// killed; Wait stops waiting for that output this long after.
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, fmt.Errorf("start bare server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start bare server: %w", err)
	}
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// The read ends when a line arrives or the process exits, whichever
	// comes first; every path below waits for it.
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- l
	}()
	t := time.NewTimer(bareStartTimeout)
	defer t.Stop()
	var (
		line string
		read bool
	)
	select {
	case line = <-lines:
		read = true
		addr = strings.TrimSpace(line)
		if _, _, perr := net.SplitHostPort(addr); perr != nil {
			err = fmt.Errorf("want its address as the first line of its output, got %q", line)
		}
	case <-t.C:
		err = fmt.Errorf("no address within %v", bareStartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = cmd.Process.Kill()
		if !read {
			<-lines
		}
		_ = cmd.Wait()
		if s := strings.TrimSpace(stderr.String()); s != "" {
			err = fmt.Errorf("%w (its stderr: %s)", err, s)
		}
		return "", nil, fmt.Errorf("start bare server %s: %w", exe, err)
	}
	return addr, stop, nil
}

// runBaseline runs the baseline workload: it starts the bare server and
// runs cfg.ThroughputWorkers workers against it through cfg.Warmup and
// cfg.Duration, each sending an acquire's body and decoding the answer as
// the throughput workload's workers do, then kills the server.
func runBaseline(ctx context.Context, hc *http.Client, cfg Config) (Result, error) {
	addr, stop, err := startBare(ctx, cfg.Executable)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	c := newClient(hc, "http://"+addr+"/api")
	c.raw = !cfg.NetHTTP

	names := make([][]byte, max(cfg.Limits, 1))
	for i := range names {
		names[i] = quote(fmt.Sprintf("%s-t%d", cfg.Prefix, i))
	}
	workers := cfg.ThroughputWorkers
	win := window{from: cfg.Warmup, to: cfg.Warmup + cfg.Duration}
	perWorker := make([][]attempt, workers)
	errs := make([]tally, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			perWorker[w], errs[w] = bareWork(ctx, c, w, start, names, win.to)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	r := Result{Workload: WorkloadBaseline, Workers: workers, Seconds: (win.to - win.from).Seconds()}
	var lat []time.Duration
	for w := range workers {
		r.count(errs[w])
		for _, a := range perWorker[w] {
			if a.granted && win.contains(a.done) {
				lat = append(lat, a.done-a.sent)
			}
		}
	}
	slices.Sort(lat)
	idle, err := idleRoundTrips(ctx, c, names[0], idleCount(cfg.Duration))
	if err != nil {
		return Result{}, err
	}
	stop() // the disk is timed on a quiet machine
	syncs, err := measureFsync(ctx, cfg.FsyncDir)
	if err != nil {
		return Result{}, err
	}
	r.Baseline = &Baseline{
		Requests:          len(lat),
		RequestsPerSecond: float64(len(lat)) / r.Seconds,
		RequestP50MS:      ms(percentile(lat, 50)),
		RequestP99MS:      ms(percentile(lat, 99)),
		IdleP50MS:         ms(percentile(idle, 50)),
		IdleP99MS:         ms(percentile(idle, 99)),
		FsyncP50MS:        ms(percentile(syncs, 50)),
		FsyncP99MS:        ms(percentile(syncs, 99)),
	}
	return r, nil
}

// bareWork is one worker of runBaseline: until stop (an offset from start)
// or until ctx is done, it sends an acquire of a random one of names
// (JSON-quoted) and decodes the answer, as work does without the release.
// It returns every request as an attempt, granted if it was answered with
// a grant, and the errors it met.
func bareWork(ctx context.Context, c *client, w int, start time.Time, names [][]byte, stop time.Duration) ([]attempt, tally) {
	p := c.worker()
	defer p.close()
	var (
		attempts []attempt
		errs     tally
		body     []byte
	)
	holder := quote(fmt.Sprintf("bench-w%d", w))
	for ctx.Err() == nil && time.Since(start) < stop {
		a := attempt{worker: w, limit: rand.IntN(len(names))}
		body = appendAcquireBody(body[:0], names[a.limit], holder)
		a.sent = time.Since(start)
		_, err := p.acquire(ctx, body)
		a.done = time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			errs.add(err)
			if sleep(ctx, errorBackoff) != nil {
				break
			}
			continue
		}
		a.granted = true
		attempts = append(attempts, a)
	}
	return attempts, errs
}
