package sema

import "time"

// waiter is a queued request. It stands in the queue of every limit it
// names, in arrival order, so the oldest waiter is always at the head of
// all its queues and nothing can deadlock.
type waiter struct {
	id     uint64
	req    Request
	since  time.Time
	limits []*limitState
	nodes  []qnode   // nodes[i] stands in limits[i].queue
	run    *runState // the run waiting, if a run is
}

type qnode struct {
	w          *waiter
	prev, next *qnode
}

// waitQueue is an intrusive doubly linked FIFO of waiters.
type waitQueue struct {
	head, tail *qnode
	n          int
}

func (q *waitQueue) push(n *qnode) {
	n.prev, n.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = n
	} else {
		q.head = n
	}
	q.tail = n
	q.n++
}

func (q *waitQueue) remove(n *qnode) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		q.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		q.tail = n.prev
	}
	n.prev, n.next = nil, nil
	q.n--
}

func (q *waitQueue) first() *waiter {
	if q.head == nil {
		return nil
	}
	return q.head.w
}

// leaseHeap orders leases by expiry; each lease knows its index so renewals
// and releases are O(log n).
type leaseHeap []*leaseState

func (h leaseHeap) Len() int { return len(h) }
func (h leaseHeap) Less(i, j int) bool {
	if !h[i].Expires.Equal(h[j].Expires) {
		return h[i].Expires.Before(h[j].Expires)
	}
	return h[i].Fence < h[j].Fence
}
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *leaseHeap) Push(x any) {
	l := x.(*leaseState)
	l.heapIdx = len(*h)
	*h = append(*h, l)
}
func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.heapIdx = -1
	return l
}

// wake is a moment at which decay may let a limit's head waiter in.
type wake struct {
	at    time.Time
	limit *limitState
}

type wakeHeap []wake

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h wakeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *wakeHeap) Push(x any)        { *h = append(*h, x.(wake)) }
func (h *wakeHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = wake{}
	*h = old[:len(old)-1]
	return w
}
