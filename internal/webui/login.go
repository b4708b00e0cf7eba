package webui

import (
	"errors"
	"net/http"
	"strings"

	"github.com/allot-dev/allot/internal/auth"
)

// gateAuth is the Authorizer of a server with keys: the principal is the
// one the gate found (the key of the session cookie or of the
// Authorization header) and put in the request's context.
type gateAuth struct{}

var errNoSession = errors.New("log in with a key")

func (gateAuth) Principal(r *http.Request) (Principal, error) {
	p := auth.FromContext(r.Context())
	if p == nil {
		return nil, errNoSession
	}
	if r.Context().Err() != nil { // the session ended (the key revoked, a logout)
		return nil, errNoSession
	}
	return keyPrincipal{p}, nil
}

// keyPrincipal is a key's principal as the pages ask it: Write is the
// manage scope, on the limit's name.
type keyPrincipal struct{ p *auth.Principal }

func toAuth(a Action) auth.Action {
	switch a {
	case Write:
		return auth.Manage
	case Admin:
		return auth.Admin
	}
	return auth.Read
}

func (k keyPrincipal) Can(a Action) bool { return k.p.CanSome(toAuth(a)) }

func (k keyPrincipal) CanOn(a Action, name string) bool { return k.p.Can(toAuth(a), name) }

// loginData is the login page's data.
type loginData struct {
	Next string
}

// loginPage is GET /ui/login: a form to paste a key into.
func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "login", "layout", page{Title: "Log in", P: everyoneless{},
		Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

// everyoneless may do nothing: the login page offers no action.
type everyoneless struct{}

func (everyoneless) Can(Action) bool { return false }

// login is POST /ui/login: the pasted key buys a session, whose random id
// is set as an HttpOnly cookie (never the key). Logins are throttled per
// remote address (auth.Sessions).
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	next := safeNext(r.PostFormValue("next"))
	id, _, err := u.opts.Sessions.Login(r.PostFormValue("key"), r.RemoteAddr)
	if err != nil {
		status, msg := http.StatusUnauthorized, "That key is not valid: it is malformed, unknown, expired or revoked."
		switch {
		case errors.Is(err, auth.ErrTooManyLogins):
			status, msg = http.StatusTooManyRequests, "Too many login attempts from your address: wait a minute and try again."
			w.Header().Set("Retry-After", "60")
		case errors.Is(err, auth.ErrNoKey):
			msg = "Paste a key."
		}
		u.render(w, r, status, "login", "layout", page{Title: "Log in", P: everyoneless{}, Error: msg, Data: loginData{Next: next}})
		return
	}
	http.SetCookie(w, sessionCookie(r, id, 0))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout is POST /ui/logout: the session ends (its live streams close)
// and the cookie is cleared.
func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(auth.SessionCookie); err == nil {
		u.opts.Sessions.Logout(c.Value)
	}
	http.SetCookie(w, sessionCookie(r, "", -1))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// sessionCookie is the session cookie: HttpOnly (no script reads it),
// Secure over TLS, SameSite=Lax, scoped to /ui, without an expiry (the
// browser drops it when it closes; the server ends it when idle).
//
// Lax rather than Strict: a link to a page from elsewhere (a chat, a
// ticket) opens it logged in instead of on the login page. Lax never
// sends the cookie with another site's POST, and every change is a POST,
// which CrossOriginProtection refuses from another origin anyway.
func sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: auth.SessionCookie, Value: value, Path: "/ui", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}
}

// safeNext is where to go after the login: a page of the UI, never
// another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "/ui/login") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/limits"
	}
	return next
}
