package bench

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"time"
)

// attempt is one acquire and, if it was granted, its release. Times are
// offsets from the start of the run on one monotonic clock.
type attempt struct {
	worker   int
	limit    int
	sent     time.Duration // the acquire request is about to be sent
	done     time.Duration // its answer (grant or refusal) was received
	released time.Duration // the release is about to be sent; granted only
	token    int64         // fencing token of the grant, 0 if none
	granted  bool
	// releasedOK says the release was answered with success.
	releasedOK bool
}

// hold is a grant as the client saw it: from receiving the grant to
// starting to send the release.
type hold struct {
	granted  time.Duration
	released time.Duration
	token    int64
}

// hold returns a granted attempt's hold.
func (a attempt) hold() hold {
	return hold{granted: a.done, released: a.released, token: a.token}
}

// window is the measured part of a run, [from, to); the rest is warm-up and
// wind-down.
type window struct {
	from, to time.Duration
}

func (w window) contains(d time.Duration) bool { return d >= w.from && d < w.to }

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value that at least p percent of the
// values are less than or equal to. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	return sorted[min(max(rank, 1), n)-1]
}

// jain returns Jain's fairness index of counts, (Σx)² / (n·Σx²): 1 when
// all are equal, 1/n when one has everything. It returns 0 when there is
// nothing to share (no counts, or all zero).
func jain(counts []int) float64 {
	var sum, sumSq float64
	for _, c := range counts {
		x := float64(c)
		sum += x
		sumSq += x * x
	}
	if sumSq == 0 {
		return 0
	}
	return sum * sum / (float64(len(counts)) * sumSq)
}

// sortHolds orders holds by the time their grant was received.
func sortHolds(hs []hold) {
	slices.SortFunc(hs, func(a, b hold) int {
		if c := cmp.Compare(a.granted, b.granted); c != 0 {
			return c
		}
		return cmp.Compare(a.released, b.released)
	})
}

// overlaps counts the grants of one one-slot limit that were received while
// an earlier hold of it had not yet been released: each is a moment when,
// as far as the clients can tell, two holders held the slot at once. It
// sorts hs.
func overlaps(hs []hold) int {
	sortHolds(hs)
	n := 0
	end := time.Duration(math.MinInt64)
	for _, h := range hs {
		if h.granted < end {
			n++
		}
		end = max(end, h.released)
	}
	return n
}

// fencingRegressions counts the grants of one one-slot limit, in the order
// they were received, whose fencing token does not exceed the one before.
// Grants without a token are skipped. It sorts hs.
func fencingRegressions(hs []hold) int {
	sortHolds(hs)
	n := 0
	var prev int64
	for _, h := range hs {
		if h.token == 0 {
			continue
		}
		if prev != 0 && h.token <= prev {
			n++
		}
		prev = h.token
	}
	return n
}

// idleGaps returns, for each grant of one one-slot limit received within w
// that has a predecessor, the idle time of the slot: when this grant was
// received minus when the previous holder started sending its release. It
// sorts hs; the gaps come back sorted ascending.
func idleGaps(hs []hold, w window) []time.Duration {
	sortHolds(hs)
	var gaps []time.Duration
	for k := 1; k < len(hs); k++ {
		if w.contains(hs[k].granted) {
			gaps = append(gaps, hs[k].granted-hs[k-1].released)
		}
	}
	slices.Sort(gaps)
	return gaps
}

// fifoFraction returns the fraction of the grants received within w that
// went to the longest waiter, for attempts on one one-slot limit.
//
// Grant k is first in, first out unless some other request was already
// waiting before both k's request was sent and the previous holder started
// its release (so it was in line when the slot came free), and was still
// waiting when k's grant arrived. It returns 0 when no grant fell within
// w.
func fifoFraction(attempts []attempt, w window) float64 {
	reqs := slices.Clone(attempts)
	slices.SortFunc(reqs, func(a, b attempt) int { return cmp.Compare(a.sent, b.sent) })
	// lastDone[i] is the latest answer among reqs[:i+1]: whether anyone
	// sent before a moment was still waiting at a later one.
	lastDone := make([]time.Duration, len(reqs))
	for i, r := range reqs {
		lastDone[i] = r.done
		if i > 0 {
			lastDone[i] = max(lastDone[i], lastDone[i-1])
		}
	}
	var grants []attempt
	for _, a := range attempts {
		if a.granted {
			grants = append(grants, a)
		}
	}
	slices.SortFunc(grants, func(a, b attempt) int { return cmp.Compare(a.done, b.done) })

	total, inOrder := 0, 0
	for k, g := range grants {
		if !w.contains(g.done) {
			continue
		}
		total++
		since := g.sent
		if k > 0 {
			since = min(since, grants[k-1].released)
		}
		j := sort.Search(len(reqs), func(i int) bool { return reqs[i].sent >= since })
		if j == 0 || lastDone[j-1] <= g.done {
			inOrder++
		}
	}
	if total == 0 {
		return 0
	}
	return float64(inOrder) / float64(total)
}
