package coord

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/internal/sema"
)

// Metrics are the coordinator's Prometheus metrics. Limit names are not
// labels (they are unbounded) except for the limits named to NewMetrics,
// whose held slots and waiters are exported with a limit label.
type Metrics struct {
	grants        prometheus.Counter
	releases      prometheus.Counter
	expiries      prometheus.Counter
	revocations   prometheus.Counter
	refusals      prometheus.Counter
	timeouts      prometheus.Counter
	leases        prometheus.Gauge
	waiters       prometheus.Gauge
	waitSeconds   prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitChanges prometheus.Histogram
	state         *stateCollector
}

// NewMetrics creates the metrics and registers them with reg, if not nil.
// exposeLimits names the limits whose held slots and waiters are exported
// by name (allot_limit_held_slots, allot_limit_waiting); there are none by
// default.
func NewMetrics(reg prometheus.Registerer, exposeLimits ...string) *Metrics {
	m := &Metrics{
		grants:      prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_grants_total", Help: "Slots granted (leases and rate-limit grants)."}),
		releases:    prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_releases_total", Help: "Leases released by their holders."}),
		expiries:    prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_expiries_total", Help: "Leases expired because they were not renewed."}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_revocations_total", Help: "Leases revoked by an operator (a revoke, or a reset of their limit)."}),
		refusals:    prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_refusals_total", Help: "Requests refused with 423 (full, not waiting or timed out)."}),
		timeouts:    prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_wait_timeouts_total", Help: "Requests that waited in line and timed out without a grant."}),
		leases:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "allot_leases", Help: "Leases held now."}),
		waiters:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "allot_waiters", Help: "Requests waiting in line now."}),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_acquire_wait_seconds", Help: "Time granted requests spent waiting in line.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_store_commit_seconds", Help: "Time to make one batch durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitChanges: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_store_commit_changes", Help: "Changes per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		state: &stateCollector{
			limits: exposeLimits,
			runs:   prometheus.NewDesc("allot_runs", "Runs kept now, by state (final runs are kept for the run retention).", []string{"state"}, nil),
			held:   prometheus.NewDesc("allot_limit_held_slots", "Slots held by leases on the limit (only the limits named with --metrics-limit).", []string{"limit"}, nil),
			wait:   prometheus.NewDesc("allot_limit_waiting", "Requests waiting in the limit's line (only the limits named with --metrics-limit).", []string{"limit"}, nil),
		},
	}
	if reg != nil {
		reg.MustRegister(m.grants, m.releases, m.expiries, m.revocations, m.refusals, m.timeouts, m.leases, m.waiters,
			m.waitSeconds, m.commitSeconds, m.commitChanges, m.state)
	}
	return m
}

func (m *Metrics) attach(c *Coordinator) { m.state.c.Store(c) }

// stateCollector reads the runs by state and the exposed limits from the
// coordinator when scraped, so that nothing on the hot path counts them.
type stateCollector struct {
	c                atomic.Pointer[Coordinator]
	limits           []string
	runs, held, wait *prometheus.Desc
}

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.runs
	ch <- s.held
	ch <- s.wait
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c := s.c.Load()
	if c == nil {
		return
	}
	type occ struct {
		name          string
		held, waiting int
		ok            bool
	}
	var states [sema.Cancelled + 1]int
	occs := make([]occ, len(s.limits))
	_ = c.read(func(m *sema.Machine, _ time.Time) {
		states = m.RunStates()
		for i, name := range s.limits {
			occs[i].name = name
			occs[i].held, occs[i].waiting, occs[i].ok = m.Occupancy(name)
		}
	})
	for st := sema.Pending; st <= sema.Cancelled; st++ {
		ch <- prometheus.MustNewConstMetric(s.runs, prometheus.GaugeValue, float64(states[st]), st.String())
	}
	for _, o := range occs {
		if o.ok {
			ch <- prometheus.MustNewConstMetric(s.held, prometheus.GaugeValue, float64(o.held), o.name)
			ch <- prometheus.MustNewConstMetric(s.wait, prometheus.GaugeValue, float64(o.waiting), o.name)
		}
	}
}
