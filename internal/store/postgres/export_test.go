package postgres

// PauseRenewals stops t's renewals, as a paused process would, until
// resume is called.
func (t *Term) PauseRenewals() (resume func()) {
	p := make(chan struct{})
	t.mu.Lock()
	t.paused = p
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		t.paused = nil
		t.mu.Unlock()
		close(p)
	}
}

// Renewals is how many times t has renewed its lease.
func (t *Term) Renewals() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.renewed
}
