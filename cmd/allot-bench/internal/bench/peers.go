package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// A Peer is another way to limit concurrency that the compare mode
// measures with the same throughput and handoff workloads as allot, in the
// same run: Prefect's conditional UPDATE on PostgreSQL (PostgresPeer) and
// a Lua semaphore on Redis (RedisPeer). Neither queues a waiter: a refused
// worker sleeps a Retry-After computed as Prefect's server computes it
// (retryAfter) and tries again, as Prefect's client does.
type Peer interface {
	// Name names the peer in results, such as "pg-update".
	Name() string
	// setup creates names as limits of one slot, none held.
	setup(ctx context.Context, names []string) error
	// open returns a worker's slotter, with a connection of its own.
	open(ctx context.Context) (slotter, error)
	// held returns how many slots of name are held.
	held(ctx context.Context, name string) (int, error)
	// Close drops what the peer created and closes its connections.
	Close() error
}

// prefectMaxWait is Prefect's maximum_concurrency_slot_wait_seconds, the
// cap on a Retry-After.
const prefectMaxWait = 30.0

// retryAfter is the Retry-After Prefect's server answers a refused
// increment (its concurrency-limits v2 rule): the limit's average slot
// occupancy times (denied+1)/limit, capped, drawn from an exponential
// distribution with that mean clamped to [0.75, 1.3] times it.
func retryAfter(avgOccupancy float64, denied, limit int) time.Duration {
	b := float64(denied+1) / float64(max(limit, 1))
	avg := min(min(avgOccupancy, prefectMaxWait)*b, prefectMaxWait)
	lo, hi := 0.7518*avg, 1.3*avg
	// An exponential variate truncated to [lo, hi] by inversion.
	u := mrand.Float64()
	cdf := func(x float64) float64 { return 1 - math.Exp(-x/avg) }
	x := -avg * math.Log(1-(cdf(lo)+u*(cdf(hi)-cdf(lo))))
	if math.IsNaN(x) || x <= 0 {
		x = avg
	}
	return time.Duration(x * float64(time.Second))
}

// pollSlotter is the worker side shared by the peers: try, and on refusal
// sleep the Retry-After and try again, until waitTimeoutSeconds have
// passed.
type pollSlotter struct {
	names []string
	try   func(ctx context.Context, name string) (ok bool, denied, limit int, avgOccupancy float64, err error)
	free  func(ctx context.Context, name string, occupancy float64) error
	end   func()
	// granted is when each limit was last granted to this worker, for the
	// occupancy its release reports.
	granted map[string]time.Time
}

func (p *pollSlotter) take(ctx context.Context, limit int) (grant, error) {
	name := p.names[limit]
	deadline := time.Now().Add(waitTimeoutSeconds * time.Second)
	for {
		ok, denied, lim, avg, err := p.try(ctx, name)
		if err != nil {
			return grant{}, err
		}
		if ok {
			p.granted[name] = time.Now()
			return grant{LeaseID: name}, nil
		}
		if time.Now().After(deadline) {
			return grant{}, errLocked
		}
		t := time.NewTimer(retryAfter(avg, denied, lim))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return grant{}, ctx.Err()
		}
	}
}

func (p *pollSlotter) give(ctx context.Context, g grant) error {
	return p.free(ctx, g.LeaseID, time.Since(p.granted[g.LeaseID]).Seconds())
}

func (p *pollSlotter) close() { p.end() }

// PostgresPeer is Prefect's way: a limit is a row, an acquire the
// conditional UPDATE that Prefect's server runs, a refusal counted in
// denied_slots, a release the decrement that also folds the slot's
// occupancy into the limit's average. Its table lives in a schema of its
// own, dropped by Close.
type PostgresPeer struct {
	url    string
	schema string
	admin  *pgx.Conn
}

// NewPostgresPeer connects to the PostgreSQL at url and creates its
// schema.
func NewPostgresPeer(ctx context.Context, url string) (*PostgresPeer, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	schema := "allot_bench_" + hex.EncodeToString(b)
	cfg.RuntimeParams["search_path"] = schema
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p := &PostgresPeer{url: url, schema: schema, admin: conn}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema+`;
CREATE TABLE `+schema+`.concurrency_limit_v2 (
	name text PRIMARY KEY,
	"limit" int NOT NULL,
	active_slots int NOT NULL DEFAULT 0,
	denied_slots int NOT NULL DEFAULT 0,
	avg_slot_occupancy_seconds float8 NOT NULL DEFAULT 0.001
)`); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return p, nil
}

// Name is "pg-update".
func (p *PostgresPeer) Name() string { return "pg-update" }

func (p *PostgresPeer) setup(ctx context.Context, names []string) error {
	for _, n := range names {
		if _, err := p.admin.Exec(ctx, `INSERT INTO concurrency_limit_v2 (name, "limit") VALUES ($1, 1)
ON CONFLICT (name) DO UPDATE SET active_slots = 0, denied_slots = 0`, n); err != nil {
			return err
		}
	}
	return nil
}

func (p *PostgresPeer) open(ctx context.Context) (slotter, error) {
	cfg, err := pgx.ParseConfig(p.url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["search_path"] = p.schema
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	try := func(ctx context.Context, name string) (bool, int, int, float64, error) {
		tag, err := conn.Exec(ctx, `UPDATE concurrency_limit_v2 SET active_slots = active_slots + $1
WHERE name = $2 AND active_slots + $1 <= "limit"`, 1, name)
		if err != nil {
			return false, 0, 0, 0, err
		}
		if tag.RowsAffected() == 1 {
			return true, 0, 0, 0, nil
		}
		var denied, limit int
		var avg float64
		err = conn.QueryRow(ctx, `UPDATE concurrency_limit_v2 SET denied_slots = denied_slots + $1 WHERE name = $2
RETURNING denied_slots - $1, "limit", avg_slot_occupancy_seconds`, 1, name).Scan(&denied, &limit, &avg)
		return false, denied, limit, avg, err
	}
	free := func(ctx context.Context, name string, occupancy float64) error {
		_, err := conn.Exec(ctx, `UPDATE concurrency_limit_v2 SET active_slots = greatest(active_slots - $1, 0),
denied_slots = greatest(denied_slots - $1, 0),
avg_slot_occupancy_seconds = avg_slot_occupancy_seconds + ($3 - avg_slot_occupancy_seconds) / 8
WHERE name = $2`, 1, name, occupancy)
		return err
	}
	return &pollSlotter{try: try, free: free, end: func() { _ = conn.Close(context.Background()) }, granted: map[string]time.Time{}}, nil
}

func (p *PostgresPeer) held(ctx context.Context, name string) (int, error) {
	var n int
	err := p.admin.QueryRow(ctx, `SELECT active_slots FROM concurrency_limit_v2 WHERE name = $1`, name).Scan(&n)
	return n, err
}

// Close drops the peer's schema.
func (p *PostgresPeer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shortTimeout)
	defer cancel()
	_, err := p.admin.Exec(ctx, `DROP SCHEMA `+p.schema+` CASCADE`)
	return errors.Join(err, p.admin.Close(ctx))
}

// The Redis semaphore's scripts. A limit is a hash: limit, active, denied
// and avg (the average occupancy in seconds), as in PostgresPeer's row.
const (
	redisAcquire = `local a = tonumber(redis.call('HGET', KEYS[1], 'active') or '0')
local l = tonumber(redis.call('HGET', KEYS[1], 'limit') or '0')
if a + 1 <= l then redis.call('HINCRBY', KEYS[1], 'active', 1) return {1} end
local d = redis.call('HINCRBY', KEYS[1], 'denied', 1) - 1
return {0, d, l, redis.call('HGET', KEYS[1], 'avg') or '0.001'}`
	redisRelease = `local a = tonumber(redis.call('HGET', KEYS[1], 'active') or '0')
if a > 0 then redis.call('HINCRBY', KEYS[1], 'active', -1) end
local d = tonumber(redis.call('HGET', KEYS[1], 'denied') or '0')
if d > 0 then redis.call('HINCRBY', KEYS[1], 'denied', -1) end
local avg = tonumber(redis.call('HGET', KEYS[1], 'avg') or '0.001')
redis.call('HSET', KEYS[1], 'avg', tostring(avg + (tonumber(ARGV[1]) - avg) / 8))
return 1`
)

// RedisPeer is a semaphore in Redis: a Lua script that takes a slot when
// the count allows, another that gives it back, spoken over RESP by a
// small client of this package's own. Its keys share a random prefix;
// Close deletes them.
type RedisPeer struct {
	addr   string
	prefix string
	admin  *respConn
	mu     sync.Mutex
	keys   []string

	acquireSHA, releaseSHA string
}

// NewRedisPeer connects to the Redis at addr (host:port) and loads the
// scripts.
func NewRedisPeer(ctx context.Context, addr string) (*RedisPeer, error) {
	c, err := dialRESP(ctx, addr)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	p := &RedisPeer{addr: addr, prefix: "allot-bench-" + hex.EncodeToString(b) + ":", admin: c}
	for _, s := range []struct {
		src string
		sha *string
	}{{redisAcquire, &p.acquireSHA}, {redisRelease, &p.releaseSHA}} {
		v, err := c.do("SCRIPT", "LOAD", s.src)
		if err != nil {
			c.close()
			return nil, err
		}
		sha, ok := v.(string)
		if !ok {
			c.close()
			return nil, fmt.Errorf("redis: SCRIPT LOAD answered %v", v)
		}
		*s.sha = sha
	}
	return p, nil
}

// Name is "redis-lua".
func (p *RedisPeer) Name() string { return "redis-lua" }

func (p *RedisPeer) setup(ctx context.Context, names []string) error {
	for _, n := range names {
		k := p.prefix + n
		if _, err := p.admin.do("HSET", k, "limit", "1", "active", "0", "denied", "0", "avg", "0.001"); err != nil {
			return err
		}
		p.mu.Lock()
		p.keys = append(p.keys, k)
		p.mu.Unlock()
	}
	return nil
}

func (p *RedisPeer) open(ctx context.Context) (slotter, error) {
	c, err := dialRESP(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	try := func(ctx context.Context, name string) (bool, int, int, float64, error) {
		v, err := c.do("EVALSHA", p.acquireSHA, "1", p.prefix+name)
		if err != nil {
			return false, 0, 0, 0, err
		}
		a, _ := v.([]any)
		if len(a) == 1 && a[0] == int64(1) {
			return true, 0, 0, 0, nil
		}
		if len(a) != 4 {
			return false, 0, 0, 0, fmt.Errorf("redis: acquire answered %v", v)
		}
		d, _ := a[1].(int64)
		l, _ := a[2].(int64)
		s, _ := a[3].(string)
		avg, _ := strconv.ParseFloat(s, 64)
		return false, int(d), int(l), avg, nil
	}
	free := func(ctx context.Context, name string, occupancy float64) error {
		_, err := c.do("EVALSHA", p.releaseSHA, "1", p.prefix+name, strconv.FormatFloat(occupancy, 'g', -1, 64))
		return err
	}
	return &pollSlotter{try: try, free: free, end: c.close, granted: map[string]time.Time{}}, nil
}

func (p *RedisPeer) held(ctx context.Context, name string) (int, error) {
	v, err := p.admin.do("HGET", p.prefix+name, "active")
	if err != nil {
		return 0, err
	}
	s, _ := v.(string)
	return strconv.Atoi(s)
}

// Close deletes the peer's keys.
func (p *RedisPeer) Close() error {
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	var err error
	if len(keys) > 0 {
		_, err = p.admin.do(append([]string{"DEL"}, keys...)...)
	}
	p.admin.close()
	return err
}

// RunPeer runs the throughput and handoff workloads of cfg against p,
// writing each result to w as Run does. The results name p as their
// System.
func RunPeer(ctx context.Context, p Peer, cfg Config, w io.Writer) ([]Result, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("bench-%08x", mrand.Uint32())
	}
	var results []Result
	for _, name := range []string{WorkloadThroughput, WorkloadHandoff} {
		var names []string
		workers := cfg.ThroughputWorkers
		hold := time.Duration(0)
		if name == WorkloadThroughput {
			for i := range cfg.Limits {
				names = append(names, fmt.Sprintf("%s-t%d", cfg.Prefix, i))
			}
		} else {
			names = []string{cfg.Prefix + "-h"}
			workers, hold = cfg.HandoffWorkers, cfg.Hold
		}
		if err := p.setup(ctx, names); err != nil {
			return results, fmt.Errorf("%s %s: set up: %w", p.Name(), name, err)
		}
		var (
			openErr error
			mu      sync.Mutex
		)
		open := func(int) slotter {
			s, err := p.open(ctx)
			if err != nil {
				mu.Lock()
				openErr = errors.Join(openErr, err)
				mu.Unlock()
				return failedSlotter{err}
			}
			s.(*pollSlotter).names = names
			return s
		}
		o := outcome{window: window{from: cfg.Warmup, to: cfg.Warmup + cfg.Duration}}
		o.attempts, o.errs = drive(ctx, open, workers, len(names), hold, time.Now(), o.window.to)
		if openErr != nil {
			return results, fmt.Errorf("%s %s: connect: %w", p.Name(), name, openErr)
		}
		if err := ctx.Err(); err != nil {
			return results, err
		}
		for _, n := range names {
			k, err := p.held(ctx, n)
			if err != nil {
				o.errs.add(fmt.Errorf("check: %w", err))
				continue
			}
			o.leaked += k
		}
		r := o.result(name, workers, len(names))
		r.System = p.Name()
		if name == WorkloadThroughput {
			r.Throughput = o.throughput(len(names))
		} else {
			r.Handoff = o.handoff(cfg, workers, r.Seconds)
		}
		results = append(results, r)
		if err := writeResult(w, cfg, r); err != nil {
			return results, err
		}
	}
	return results, nil
}

// failedSlotter is the slotter of a worker that could not connect.
type failedSlotter struct{ err error }

func (f failedSlotter) take(context.Context, int) (grant, error) { return grant{}, f.err }
func (f failedSlotter) give(context.Context, grant) error        { return f.err }
func (failedSlotter) close()                                     {}
