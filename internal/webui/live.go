package webui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// live is GET /ui/live: a server-sent event "change" whenever what a page
// shows may have changed, at most once per LiveInterval however many
// events happened, so a burst of grants costs a page one refresh (and the
// coordinator one function call per event, coord.Notify). ?limit=
// (repeatable, a name or an id) narrows it to events on those limits,
// ?run= to one run; no filter takes every event. The page's regions fetch
// themselves again on "change" (htmx's sse extension). The stream ends
// when the viewer's session does.
func (u *UI) live(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	limits := q["limit"]
	run := q.Get("run")
	match := func(e sema.Event) bool {
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
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	if r.Method == http.MethodHead {
		// A stream without a body would never end.
		w.WriteHeader(http.StatusOK)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	changed, stop := u.c.Notify(match)
	defer stop()
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": allot ui\nretry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	beat := time.NewTicker(u.opts.Heartbeat)
	defer beat.Stop()
	pause := time.NewTimer(0)
	<-pause.C
	defer pause.Stop()
	stillAllowed := func() bool {
		if u.opts.Auth == nil {
			return true
		}
		p, err := u.opts.Auth.Principal(r)
		return err == nil && p.Can(Read)
	}
	for {
		select {
		case <-r.Context().Done():
			u.endSession(w, rc, r)
			return
		case <-beat.C:
			if !stillAllowed() {
				writeLogout(w, rc)
				return
			}
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-changed:
			if !stillAllowed() {
				writeLogout(w, rc)
				return
			}
			if _, err := fmt.Fprint(w, "event: change\ndata: {}\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			// What changes meanwhile waits in changed, as one signal.
			pause.Reset(u.opts.LiveInterval)
			select {
			case <-r.Context().Done():
				u.endSession(w, rc, r)
				return
			case <-pause.C:
			}
		}
	}
}

// endSession tells the page that its session ended, when that is why the
// request's context did (the key revoked, a logout): the page closes its
// stream (sse-close="logout") and loads again, onto the login page. A
// client that left or a server that stops gets nothing.
func (u *UI) endSession(w http.ResponseWriter, rc *http.ResponseController, r *http.Request) {
	cause := context.Cause(r.Context())
	if errors.Is(cause, auth.ErrRevoked) || errors.Is(cause, auth.ErrNoSession) {
		writeLogout(w, rc)
	}
}

func writeLogout(w http.ResponseWriter, rc *http.ResponseController) {
	if _, err := fmt.Fprint(w, "event: logout\ndata: {}\n\n"); err == nil {
		_ = rc.Flush()
	}
}
