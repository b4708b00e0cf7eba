// Package webui serves allot's web UI at /ui: server-rendered pages of the
// limits, a limit's holders and line of waiters (with why the head of the
// line waits), and the runs, with forms to change them. Pages are
// html/template with embedded templates and static files under
// content-hashed URLs; htmx (vendored, see static/README.md) only enhances
// them: every page reads the same without JavaScript, and with it a region
// listens on /ui/live and fetches itself again when something changed, at
// most four times a second.
//
// Handlers are thin: they decode, call the coordinator and render. What a
// page shows that the API also shows (the why sentence, for one) comes from
// sema and coord, never from here. Who may do what is asked of an
// Authorizer (nil: everyone may do everything, as when keys are off).
package webui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/*.js static/*.css static/*.svg
var staticFS embed.FS

// Action is something a page may let its viewer do.
type Action string

// The actions a Principal is asked about.
const (
	// Read: see limits, leases and runs.
	Read Action = "read"
	// Write: create, edit, enable, disable and delete limits.
	Write Action = "write"
	// Admin: revoke a lease, reset a tag or label limit.
	Admin Action = "admin"
)

// Principal is who makes a request.
type Principal interface {
	// Can reports whether the principal may take the action (on some
	// limit).
	Can(Action) bool
}

// NamedPrincipal is a Principal whose rights depend on the limit's name
// (a key with manage:<glob>); a Principal that is not one may act on
// every limit when Can says so.
type NamedPrincipal interface {
	Principal
	// CanOn reports whether the principal may take the action on the
	// limit called name.
	CanOn(a Action, name string) bool
}

// canOn asks p about the limit called name.
func canOn(p Principal, a Action, name string) bool {
	if np, ok := p.(NamedPrincipal); ok {
		return np.CanOn(a, name)
	}
	return p.Can(a)
}

// Authorizer finds the principal of a request. An error means the request
// has no valid session: the UI answers 401 with a pointer to LoginURL.
type Authorizer interface {
	Principal(r *http.Request) (Principal, error)
}

// Options configures the UI.
type Options struct {
	Logger *slog.Logger
	// Auth, if set, decides who may do what; nil lets everyone do
	// everything (the server runs without keys).
	Auth Authorizer
	// LoginURL is where a request without a session is sent (with Auth).
	LoginURL string
	// Sessions, if set, serves the key login at /ui/login and the logout
	// at /ui/logout, and (unless Auth is set) makes the principal of a
	// request the one the server's gate put in its context (auth.FromContext):
	// the key of its session cookie or of its Authorization header. The
	// gate serves a request without either with no principal, which is
	// sent to the login.
	Sessions *auth.Sessions
	// LiveInterval is the least time between two "change" events on a
	// page's live stream (default 250 ms: at most 4 refreshes a second).
	LiveInterval time.Duration
	// Heartbeat is how often the live stream writes a comment (15 s).
	Heartbeat time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

type everyone struct{}

func (everyone) Can(Action) bool { return true }

// UI is the web UI's handler.
type UI struct {
	c      *coord.Coordinator
	opts   Options
	log    *slog.Logger
	pages  map[string]*template.Template
	static map[string]staticFile // by hashed name
	assets map[string]string     // plain name → /ui/static/hashed name
	mux    *http.ServeMux
}

type staticFile struct {
	body  []byte
	ctype string
}

// New returns the UI served from c; mount it at /ui/.
func New(c *coord.Coordinator, opts Options) *UI {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LiveInterval <= 0 {
		opts.LiveInterval = 250 * time.Millisecond
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sessions != nil && opts.Auth == nil {
		opts.Auth = gateAuth{}
		if opts.LoginURL == "" {
			opts.LoginURL = "/ui/login"
		}
	}
	u := &UI{c: c, opts: opts, log: opts.Logger, static: map[string]staticFile{}, assets: map[string]string{}}
	u.loadStatic()
	u.pages = u.parseTemplates()
	u.mux = u.routes()
	return u
}

// loadStatic names each static file by its content's hash, so that it can
// be cached forever.
func (u *UI) loadStatic() {
	entries, _ := fs.ReadDir(staticFS, "static")
	for _, e := range entries {
		body, _ := staticFS.ReadFile("static/" + e.Name())
		sum := sha256.Sum256(body)
		ext := path.Ext(e.Name())
		hashed := strings.TrimSuffix(e.Name(), ext) + "." + hex.EncodeToString(sum[:6]) + ext
		ctype := "text/css; charset=utf-8"
		switch ext {
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		case ".svg":
			ctype = "image/svg+xml"
		}
		u.static[hashed] = staticFile{body: body, ctype: ctype}
		u.assets[e.Name()] = "/ui/static/" + hashed
	}
}

// maxForm bounds a posted form.
const maxForm = 64 << 10

// contentSecurityPolicy allows only the server's own scripts and styles:
// no inline script or style (htmx is told not to inject its indicator
// styles), no eval.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves the UI with its security headers; state-changing
// requests from another origin are refused (http.CrossOriginProtection).
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	u.mux.ServeHTTP(w, r)
}

func (u *UI) routes() *http.ServeMux {
	mux := http.NewServeMux()
	cop := http.NewCrossOriginProtection()
	handle := func(pattern string, fn func(http.ResponseWriter, *http.Request, Principal)) {
		mux.Handle(pattern, cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := u.principal(w, r)
			if !ok {
				return
			}
			if r.Method == http.MethodPost {
				r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			}
			fn(w, r, p)
		})))
	}
	mux.HandleFunc("GET /ui/static/{file}", u.serveStatic)
	mux.Handle("GET /ui/{$}", http.RedirectHandler("/ui/limits", http.StatusSeeOther))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/limits", http.StatusSeeOther))
	handle("GET /ui/limits", u.limits)
	handle("GET /ui/limits/new", u.newLimit)
	handle("POST /ui/limits", u.createLimit)
	handle("GET /ui/limits/{id}", u.limit)
	handle("GET /ui/limits/{id}/live", u.limitLive)
	handle("GET /ui/limits/{id}/edit", u.editLimit)
	handle("POST /ui/limits/{id}", u.updateLimit)
	handle("POST /ui/limits/{id}/active", u.setActive)
	handle("GET /ui/limits/{id}/delete", u.confirmDelete)
	handle("POST /ui/limits/{id}/delete", u.deleteLimit)
	handle("GET /ui/limits/{id}/reset", u.confirmReset)
	handle("POST /ui/limits/{id}/reset", u.resetLimit)
	handle("GET /ui/leases/{id}/revoke", u.confirmRevoke)
	handle("POST /ui/leases/{id}/revoke", u.revokeLease)
	handle("GET /ui/runs", u.runs)
	handle("GET /ui/runs/{id}", u.run)
	handle("GET /ui/live", u.live)
	if u.opts.Sessions != nil {
		mux.HandleFunc("GET /ui/login", u.loginPage)
		mux.Handle("POST /ui/login", cop.Handler(http.HandlerFunc(u.login)))
		mux.Handle("POST /ui/logout", cop.Handler(http.HandlerFunc(u.logout)))
	}
	return mux
}

// principal finds who asks; without an Authorizer everyone may do all.
func (u *UI) principal(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	if u.opts.Auth == nil {
		return everyone{}, true
	}
	p, err := u.opts.Auth.Principal(r)
	if err != nil {
		if u.opts.LoginURL != "" && r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" {
			http.Redirect(w, r, u.opts.LoginURL+"?next="+url.QueryEscape(r.URL.EscapedPath()), http.StatusSeeOther)
			return nil, false
		}
		http.Error(w, "not signed in: "+err.Error(), http.StatusUnauthorized)
		return nil, false
	}
	if !p.Can(Read) {
		http.Error(w, "this key may not read", http.StatusForbidden)
		return nil, false
	}
	return p, true
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := u.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	_, _ = w.Write(f.body)
}
