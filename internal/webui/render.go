package webui

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/sema"
)

// page is what every template receives.
type page struct {
	Title  string
	Nav    string
	Assets map[string]string
	P      Principal
	// Session: the viewer logged in with a session cookie (the page
	// offers to log out).
	Session bool
	Now     time.Time
	Error   string
	Data    any
}

// CanWrite, CanWriteOn and CanAdmin tell templates which actions to
// offer.
func (p page) CanWrite() bool              { return p.P.Can(Write) }
func (p page) CanWriteOn(name string) bool { return canOn(p.P, Write, name) }
func (p page) CanAdmin() bool              { return p.P.Can(Admin) }

var funcs = template.FuncMap{
	"ago":      func(t, now time.Time) string { return human(now.Sub(t)) },
	"until":    func(t, now time.Time) string { return human(t.Sub(now)) },
	"unixms":   func(t time.Time) int64 { return t.UnixMilli() },
	"short":    sema.ShortID,
	"holder":   sema.HolderName,
	"runLink":  runLink,
	"kindOf":   func(name string) string { return sema.KindOf(name).String() },
	"isKeyed":  func(name string) bool { k := sema.KindOf(name); return k == sema.TagKind || k == sema.LabelKind },
	"join":     strings.Join,
	"pct":      pct,
	"stamp":    func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock":    func(t time.Time) string { return t.UTC().Format("15:04:05") },
	"free":     func(v sema.LimitView) int { return max(0, v.Limit.Limit-v.ActiveSlots) },
	"level":    func(v sema.LimitView) int { return max(0, v.ActiveSlots-v.Held) },
	"spark":    sparkline,
	"add":      func(a, b int) int { return a + b },
	"decay":    formatDecay,
	"metadata": metadata,
	"isZero":   func(t time.Time) bool { return t.IsZero() },
	"waited":   func(r sema.Run, now time.Time) string { return human(waited(r, now)) },
	"pathEsc":  url.PathEscape,
	"holderRows": func(rows []holderRow, admin bool, id fmt.Stringer) template.HTML {
		return holderRowsHTML(rows, admin, id.String())
	},
	"waiterRows": waiterRowsHTML,
	"limitRows":  limitRowsHTML,
}

func formatDecay(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", f), "0"), ".")
}

// human prints a duration as a page shows it: "41s", "3m 05s", "2h 10m".
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
}

// runLink is the page of the run that holds a lease, or "".
func runLink(h sema.Holder) string {
	if h.Type != "task_run" && h.Type != "flow_run" {
		return ""
	}
	if _, err := uuid.Parse(h.ID); err != nil {
		return ""
	}
	return "/ui/runs/" + h.ID
}

func pct(n, total int) string {
	if total <= 0 {
		return "0"
	}
	return fmt.Sprintf("%.1f", 100*float64(min(n, total))/float64(total))
}

func metadata(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// sparkline draws one series of an hour by minute as a small SVG
// polyline; only numbers go into it.
func sparkline(minutes []sema.MinuteStats, series string) template.HTML {
	if len(minutes) == 0 {
		return ""
	}
	vals := make([]int, len(minutes))
	top, peak := 1, 0
	for i, m := range minutes {
		switch series {
		case "held":
			vals[i] = m.Held
		case "waiting":
			vals[i] = m.Waiting
		case "denied":
			vals[i] = m.Denied + m.TimedOut
		}
		top, peak = max(top, vals[i]), max(peak, vals[i])
	}
	const w, h = 120, 24
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark spark-%s" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s per minute over the last hour, peak %d"><polyline points="`,
		series, w, h, w, h, series, peak)
	for i, v := range vals {
		x := float64(i) * float64(w-1) / float64(max(1, len(vals)-1))
		y := float64(h-1) - float64(v)*float64(h-2)/float64(top)
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()) // #nosec: numbers and a fixed series name only
}

func (u *UI) parseTemplates() map[string]*template.Template {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	names, _ := fs.Glob(templateFS, "templates/*.html")
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, n))
	}
	return out
}

// render writes a whole page (tmpl "layout") or a fragment of it.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, file, tmpl string, p page) {
	p.Assets = u.assets
	if u.opts.Sessions != nil {
		if _, err := r.Cookie(auth.SessionCookie); err == nil && p.P != nil {
			p.Session = true
		}
	}
	if p.Now.IsZero() {
		p.Now = u.opts.Now()
	}
	var buf bytes.Buffer
	if err := u.pages[file].ExecuteTemplate(&buf, tmpl, p); err != nil {
		u.log.Error("render page", "page", file, "err", err)
		http.Error(w, "could not render the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "HX-Request")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
