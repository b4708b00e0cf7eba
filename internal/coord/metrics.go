package coord

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the coordinator's Prometheus metrics. Limit names are not
// labels: they are unbounded.
type Metrics struct {
	grants        prometheus.Counter
	releases      prometheus.Counter
	expiries      prometheus.Counter
	refusals      prometheus.Counter
	leases        prometheus.Gauge
	waiters       prometheus.Gauge
	waitSeconds   prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitChanges prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg, if not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		grants:   prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_grants_total", Help: "Slots granted (leases and rate-limit grants)."}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_releases_total", Help: "Leases released by their holders."}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_expiries_total", Help: "Leases expired because they were not renewed."}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_refusals_total", Help: "Requests refused with 423 (full, not waiting or timed out)."}),
		leases:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "allot_leases", Help: "Leases held now."}),
		waiters:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "allot_waiters", Help: "Requests waiting in line now."}),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_acquire_wait_seconds", Help: "Time granted requests spent waiting in line.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_store_commit_seconds", Help: "Time to make one batch durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitChanges: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "allot_store_commit_changes", Help: "Changes per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.grants, m.releases, m.expiries, m.refusals, m.leases, m.waiters, m.waitSeconds, m.commitSeconds, m.commitChanges)
	}
	return m
}
