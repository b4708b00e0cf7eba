package webui

import (
	"html/template"
	"strconv"
	"strings"
)

// The rows of a limit's holders and waiters are written here rather than
// by the template: a line of thousands costs html/template a reflective
// escaper call per cell, about 20 µs a row, and the bound is a
// 50 ms page with 1,000 of each. Every value is escaped with
// template.HTMLEscapeString; ids are UUIDs and links are built from
// PathEscaped names, so nothing unescaped reaches the page.

var esc = template.HTMLEscapeString

func holderRowsHTML(rows []holderRow, admin bool, limitID string) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 600)
	for _, h := range rows {
		b.WriteString(`<tr data-lease="`)
		b.WriteString(h.LeaseID)
		b.WriteString(`">` + "\n" + `<th scope="row"><code title="`)
		b.WriteString(h.LeaseID)
		b.WriteString(`">`)
		b.WriteString(esc(h.Short))
		b.WriteString("</code></th>\n<td>")
		if h.RunLink != "" {
			b.WriteString(`<a href="`)
			b.WriteString(esc(h.RunLink))
			b.WriteString(`">`)
			b.WriteString(esc(h.Holder))
			b.WriteString("</a>")
		} else {
			b.WriteString(esc(h.Holder))
		}
		b.WriteString("</td>\n<td>")
		b.WriteString(strconv.Itoa(h.Slots))
		b.WriteString(`</td>` + "\n" + `<td><span data-since="`)
		b.WriteString(strconv.FormatInt(h.SinceMs, 10))
		b.WriteString(`">`)
		b.WriteString(h.Since)
		b.WriteString(`</span></td>` + "\n" + `<td><span class="countdown" data-until="`)
		b.WriteString(strconv.FormatInt(h.ExpiresMs, 10))
		b.WriteString(`">`)
		b.WriteString(h.Expires)
		b.WriteString(`</span></td>` + "\n" + `<td class="hide-narrow">`)
		b.WriteString(strconv.FormatUint(h.Fence, 10))
		b.WriteString(`</td>` + "\n" + `<td class="hide-narrow">`)
		b.WriteString(esc(h.Meta))
		b.WriteString("</td>\n")
		if admin {
			b.WriteString(`<td><a class="button danger" href="/ui/leases/`)
			b.WriteString(h.LeaseID)
			b.WriteString(`/revoke?back=/ui/limits/`)
			b.WriteString(esc(limitID))
			b.WriteString(`">Revoke…</a></td>` + "\n")
		}
		b.WriteString("</tr>\n")
	}
	return template.HTML(b.String()) // #nosec G203: every value escaped above
}

func waiterRowsHTML(rows []waiterRow) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 400)
	for _, w := range rows {
		b.WriteString(`<tr>` + "\n" + `<th scope="row" class="position">`)
		b.WriteString(strconv.Itoa(w.Position))
		b.WriteString("</th>\n<td>")
		if w.RunLink != "" {
			b.WriteString(`<a href="`)
			b.WriteString(esc(w.RunLink))
			b.WriteString(`">`)
			b.WriteString(esc(w.Holder))
			b.WriteString("</a>")
		} else {
			b.WriteString(esc(w.Holder))
		}
		b.WriteString("</td>\n<td>")
		b.WriteString(strconv.Itoa(w.Slots))
		if w.Rate {
			b.WriteString(" (rate)")
		}
		b.WriteString(`</td>` + "\n" + `<td><span data-since="`)
		b.WriteString(strconv.FormatInt(w.SinceMs, 10))
		b.WriteString(`">`)
		b.WriteString(w.Waited)
		b.WriteString("</span></td>\n<td>")
		if w.Deadline != "" {
			b.WriteString(`in <span data-until="`)
			b.WriteString(strconv.FormatInt(w.DeadlineMs, 10))
			b.WriteString(`">`)
			b.WriteString(w.Deadline)
			b.WriteString(`</span>`)
		} else {
			b.WriteString(`<span class="muted">none</span>`)
		}
		b.WriteString("</td>\n<td>")
		for i, o := range w.Others {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(`<a href="`)
			b.WriteString(esc(o.Link))
			b.WriteString(`">`)
			b.WriteString(esc(o.Name))
			b.WriteString("</a>")
		}
		if len(w.Others) == 0 {
			b.WriteString(`<span class="muted">–</span>`)
		}
		b.WriteString("</td>\n</tr>\n")
	}
	return template.HTML(b.String()) // #nosec G203: every value escaped above
}

func limitRowsHTML(rows []limitRow) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 900)
	for _, l := range rows {
		b.WriteString("<tr>\n" + `<th scope="row"><a href="/ui/limits/`)
		b.WriteString(l.ID)
		b.WriteString(`">`)
		b.WriteString(esc(l.Name))
		b.WriteString("</a>")
		if l.Template {
			b.WriteString(` <span class="badge">applies to <code>`)
			b.WriteString(esc(l.Name))
			b.WriteString(`</code> on first use</span>`)
		}
		b.WriteString("</th>\n<td>")
		b.WriteString(l.Kind)
		b.WriteString("</td>\n<td>")
		if l.Template {
			b.WriteString(`<span class="muted">template</span>`)
		} else {
			b.WriteString(`<svg class="bar" width="100" height="10" viewBox="0 0 100 10" role="img" aria-label="`)
			b.WriteString(esc(l.BarLabel))
			b.WriteString(`"><rect class="free" x="0" y="0" width="100" height="10"/><rect class="held" x="0" y="0" width="`)
			b.WriteString(l.HeldPct)
			b.WriteString(`" height="10"/><rect class="level" x="`)
			b.WriteString(l.LevelX)
			b.WriteString(`" y="0" width="`)
			b.WriteString(l.LevelPct)
			b.WriteString(`" height="10"/></svg>`)
			b.WriteString(l.Usage)
		}
		b.WriteString("</td>\n" + `<td class="hide-narrow">`)
		if l.Active {
			b.WriteString("yes")
		} else {
			b.WriteString(`<span class="badge off">off</span>`)
		}
		b.WriteString("</td>\n" + `<td class="hide-narrow">`)
		b.WriteString(l.Decay)
		b.WriteString("</td>\n<td>")
		b.WriteString(strconv.Itoa(l.Waiting))
		b.WriteString("</td>\n" + `<td class="hide-narrow">`)
		if l.Oldest != "" {
			b.WriteString(`<span data-since="`)
			b.WriteString(strconv.FormatInt(l.OldestMs, 10))
			b.WriteString(`">`)
			b.WriteString(l.Oldest)
			b.WriteString("</span>")
		} else {
			b.WriteString(`<span class="muted">–</span>`)
		}
		b.WriteString("</td>\n" + `<td class="hide-narrow">`)
		b.WriteString(strconv.Itoa(l.Denied))
		b.WriteString("</td>\n" + `<td class="hide-narrow">`)
		b.WriteString(strconv.Itoa(l.TimedOut))
		b.WriteString("</td>\n</tr>\n")
	}
	return template.HTML(b.String()) // #nosec G203: every value escaped above
}
