// Package sema is allot's core: a deterministic state machine of limits,
// leases, first-in-first-out waiters, slot decay, fencing tokens, and the
// task runs and flow runs whose tags those limits govern.
//
// A Machine is a pure function of its state, the commands given to it and the
// time passed in with each command. It owns no goroutines, does no I/O and
// reads no clock, so every decision it makes can be replayed and tested.
//
// # Invariants
//
//   - Safety: for an active limit, the slots held by leases plus the
//     undecayed rate-limit slots never exceed the limit at the moment of a
//     grant. Lowering a limit never revokes a lease.
//   - All or nothing: a request that names several limits is granted on all
//     of them in one step or on none.
//   - Fairness: waiters on a limit are granted in the order they arrived; a
//     request that finds anyone waiting on one of its limits queues behind
//     them even if it would fit.
//   - Liveness: a lease that is not renewed expires at its expiry time and
//     its slots go to the next waiters in the same step.
//   - Fencing: every grant takes the next value of one machine-wide counter,
//     so tokens grow on every limit.
//   - Runs: a task run or flow run is Running exactly while it holds a
//     lease of its own, which takes one slot of every limit named by its
//     tags ("tag:{tag}") or labels ("label:{label}") at once, except the
//     limits whose slot an ancestor run holds: those it shares, so a child
//     never waits for its own parent. A run that cannot start waits in the
//     same first-in-first-out lines as any request (AwaitingConcurrency-
//     Slot); one that never can (a limit of 0) fails at once. A run whose
//     lease ends without the run saying it is done (expiry, revocation) is
//     Crashed.
//
// Every change that must survive a restart is recorded as a Change, in
// order; the caller drains them with Drain and makes them durable before it
// acknowledges the command. Replaying any prefix of the recorded changes
// yields a state that satisfies the invariants.
//
// # Files
//
// Each feature has the same file name here as in coord, httpapi and the SDK:
//
//   - machine.go: the engine. Machine, Config, New, Restore, Drain and
//     FlushSoft, decay arithmetic (settle, level, fits), Tick and
//     NextDeadline, and pump, which hands freed slots to the waiters next in
//     line.
//   - limits.go: limits. CreateLimit, UpdateLimit, EnsureLimit, DeleteLimit,
//     DeleteMatching and their validation; templates (a name with '*') and
//     the limits they create on first use; idle removal.
//   - leases.go: slots. Acquire (grant, queue or refuse with Retry-After),
//     Release, Renew, expiry, Decrement, CancelWaiter, revocations, and the
//     rule of a plain increment (PlainIncrement).
//   - ticket.go: tickets, a request's idempotency key: resuming a lease or
//     a place in line, durable waiters and their restore.
//   - taglimits.go: Prefect's v1 tag limits and allot's label limits:
//     lookup by key, upsert, reset with slot_override, v1 increment and
//     decrement.
//   - runs.go: task runs and flow runs, their states, and the lease that
//     their Running state is.
//   - view.go: reads (LimitView, Lease). types.go: the durable records
//     (Limit, Lease, Waiter), Change, Event, Request, Holder and its
//     validation. errors.go: the errors callers branch on. name.go: limit
//     names and template patterns. queue.go: the waiter lines and heaps.
package sema
