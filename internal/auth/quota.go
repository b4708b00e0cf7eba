package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rates throttles each key's requests to a rate with a burst, one token
// bucket per key (golang.org/x/time/rate). The zero rate throttles
// nothing.
type Rates struct {
	limit rate.Limit
	burst int
	keys  sync.Map // key id → *rate.Limiter
}

// NewRates returns per-key rates of perSecond requests with burst; a
// perSecond of zero or less returns nil, which throttles nothing.
func NewRates(perSecond float64, burst int) *Rates {
	if perSecond <= 0 {
		return nil
	}
	return &Rates{limit: rate.Limit(perSecond), burst: max(burst, 1)}
}

// Allow takes one request of p's key at now, or returns a *QuotaError
// that says when the next one would be allowed. A nil Rates allows all.
func (r *Rates) Allow(p *Principal, now time.Time) error {
	if r == nil {
		return nil
	}
	v, ok := r.keys.Load(p.KeyID)
	if !ok {
		v, _ = r.keys.LoadOrStore(p.KeyID, rate.NewLimiter(r.limit, r.burst))
	}
	lim := v.(*rate.Limiter)
	res := lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return &QuotaError{KeyID: p.KeyID, What: "requests per second", RetryAfter: d}
	}
	return nil
}
