package webui

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/allot-dev/allot/internal/sema"
)

// live is GET /ui/live: a server-sent event "change" whenever what a page
// shows may have changed, at most once per LiveInterval however many
// events happened, so a burst of grants costs a page one refresh. ?limit=
// (repeatable) narrows it to events on those limits, ?run= to one run; no
// filter takes every event. The page's regions fetch themselves again on
// "change" (htmx's sse extension). The stream ends when the viewer's
// session does.
func (u *UI) live(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	limits := q["limit"]
	run := q.Get("run")
	relevant := func(e sema.Event) bool {
		if e.Kind == sema.WaiterFailed {
			return len(limits) == 0 && run == ""
		}
		if run != "" {
			return e.Kind == sema.RunChanged && e.Run != nil && e.Run.ID.String() == run
		}
		if len(limits) == 0 {
			return true
		}
		for _, l := range e.Limits {
			if slices.Contains(limits, l.Name) || slices.Contains(limits, l.ID.String()) {
				return true
			}
		}
		return false
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	ch, stop := u.c.Subscribe(256)
	defer stop()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": allot ui\nretry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	beat := time.NewTicker(u.opts.Heartbeat)
	defer beat.Stop()
	pending := time.NewTimer(time.Hour)
	pending.Stop()
	defer pending.Stop()
	var last time.Time
	dirty, armed := false, false
	stillAllowed := func() bool {
		if u.opts.Auth == nil {
			return true
		}
		p, err := u.opts.Auth.Principal(r)
		return err == nil && p.Can(Read)
	}
	send := func() bool {
		if !stillAllowed() {
			return false
		}
		dirty, last = false, time.Now()
		_, err := fmt.Fprint(w, "event: change\ndata: {}\n\n")
		return err == nil && rc.Flush() == nil
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			if !stillAllowed() {
				return
			}
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case e := <-ch:
			if !relevant(e) {
				continue
			}
			dirty = true
			if armed {
				continue
			}
			if wait := u.opts.LiveInterval - time.Since(last); wait > 0 {
				pending.Reset(wait)
				armed = true
				continue
			}
			if !send() {
				return
			}
		case <-pending.C:
			armed = false
			if dirty && !send() {
				return
			}
		}
	}
}
