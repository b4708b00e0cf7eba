// Package bench holds allot's benchmark workloads: the body of the
// allot-bench command, kept under cmd/allot-bench, apart from the server's
// packages. They drive a running allot server over real HTTP and report
// what a user of a coordination service cares about: how many
// acquire+release pairs per second it serves, how quickly a released slot
// reaches the next waiter, whether waiters are served fairly and in order,
// how much memory a held lease and a waiting request cost, and whether the
// cost of an operation grows with the state. Because machines differ too
// much in speed for those figures alone to mean anything, it also measures
// the machine's own yardstick.
//
// # Workloads
//
//   - baseline: the yardstick. The benchmark starts itself again as a bare
//     Go net/http server in a process of its own (ServeBare, selected by
//     BareServerEnv), one POST route that decodes an acquire's body and
//     answers a grant-sized object with encoding/json; the same client and
//     the same number of workers as throughput send it acquires for the
//     same warm-up and duration; the result is requests per second and
//     their latency. Then one client sends it one request a millisecond on
//     the otherwise idle machine: the idle round trip, the floor under the
//     handoff workload's gap. The server is killed afterwards, and exits by
//     itself if the benchmark that started it has gone. Last, the disk's
//     latency to write and fsync 8 KiB, which every durable grant waits for
//     once.
//   - throughput: many workers acquire and release random limits of one
//     slot as fast as they can; the result is pairs per second and the
//     acquire latency, and, after a baseline in the same run, pairs per
//     bare request beside the design's target for that ratio
//     (TargetPairsPerBareRequest).
//   - handoff: many workers contend for one limit of one slot, each holding
//     it briefly; the result is grants per second, the idle gap between a
//     release and the next grant, the wait time, Jain's fairness index and
//     the fraction of grants that went to the longest waiter.
//   - memory: the server's memory growth per held lease (100,000 leases
//     over limits of 100 slots made from a template) and per request
//     waiting in line (10,000 requests for one held slot, each on a TCP
//     connection of its own, so each costs the server a connection and its
//     goroutines too). Memory is read from the server's /metrics: the
//     resident set, the Go heap in use and goroutine stacks, each the lower
//     of two readings a second apart after a second's settling, before and
//     while the leases or requests are held. Nothing is forced: the heap
//     figures include garbage not yet collected, and when the waiters
//     follow the leases the RSS figure can be understated by memory the
//     runtime freed from the leases but kept; run one part at a time on a
//     fresh server (-leases 0 or -waiters 0) for the cleanest figures.
//   - scale: the throughput workload's pairs per second while the server
//     holds 10 leases and while it holds 100,000, each on a limit of its
//     own; the result is the ratio of the two.
//
// # Compare mode
//
// Compare runs throughput and handoff against each allot server it is
// given (by name: the embedded server, a replica that leads, a follower)
// and then against peers, other ways to limit concurrency, with the same
// workers, limits and checks, and prints a table with allot's pairs per
// second over each peer's. The peers: PostgresPeer, Prefect's conditional
// UPDATE of a limit's row on PostgreSQL (pgx, a connection per worker), and
// RedisPeer, the same counting in a Lua script on Redis, spoken over a
// minimal RESP client of this package's own. Neither queues waiters: a
// refused worker sleeps the Retry-After that Prefect's server computes
// (from the limit's average occupancy and its refused requests) and tries
// again, as Prefect's client does. A peer that cannot be reached is skipped
// with a line saying so.
//
// Throughput and handoff also read the server's CPU time
// (process_cpu_seconds_total on its /metrics) as the measured window opens
// and as it closes, and give it per acquire+release pair; when /metrics
// cannot be read the figure is left out, and the run goes on.
//
// The memory and scale workloads build their state with many parallel
// requests and report how long that took; they release their leases
// afterwards even if interrupted.
//
// # Invariants
//
// Every workload that drives allot also checks the server's answers for
// safety: from the client's point of view a hold of a one-slot limit lasts
// from the moment its grant is received to the moment its release is sent,
// both read from one monotonic clock in this process. A correct server
// grants the next holder only after the previous release arrived, so no
// grant may be received inside another hold of the same limit; each such
// grant is counted as an overlap, and a correct server scores zero. The
// check is conservative: it can miss a violation that the network hid, but
// never reports one that did not happen.
//
// Run owns every goroutine and process it starts and returns only after
// they have finished; the limits it creates are deleted afterwards unless
// told not to.
package bench
