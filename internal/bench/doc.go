// Package bench holds allot's benchmark workloads, which drive a running
// allot server over real HTTP and report what a user of a coordination
// service cares about: how many acquire+release pairs per second it serves,
// how quickly a released slot reaches the next waiter, and whether waiters
// are served fairly and in order.
//
// # Workloads
//
//   - throughput: many workers acquire and release random limits of one
//     slot as fast as they can; the result is pairs per second and the
//     acquire latency.
//   - handoff: many workers contend for one limit of one slot, each holding
//     it briefly; the result is grants per second, the idle gap between a
//     release and the next grant, the wait time, Jain's fairness index and
//     the fraction of grants that went to the longest waiter.
//
// # Invariants
//
// Every workload also checks the server's answers for safety: from the
// client's point of view a hold of a one-slot limit lasts from the moment its
// grant is received to the moment its release is sent, both read from one
// monotonic clock in this process. A correct server grants the next holder
// only after the previous release arrived, so no grant may be received inside
// another hold of the same limit; each such grant is counted as an overlap,
// and a correct server scores zero. The check is conservative: it can miss a
// violation that the network hid, but never reports one that did not happen.
//
// Run owns every goroutine it starts and returns only after they have
// finished; the limits it creates are deleted afterwards unless told not to.
package bench
