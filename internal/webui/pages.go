package webui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
	"github.com/allot-dev/allot/internal/sema"
)

// pageSize is the number of rows of a list page.
const pageSize = 50

// limitRow is one row of the limits page, formatted in Go: a template
// reaching into the embedded views costs a reflective field search a cell.
type limitRow struct {
	ID, Name, Kind, Usage, BarLabel, HeldPct, LevelX, LevelPct, Decay, Oldest string
	Template, Active                                                          bool
	Waiting, Denied, TimedOut                                                 int
	OldestMs                                                                  int64
}

func newLimitRow(l coord.LimitSummary, now time.Time) limitRow {
	held, lvl, total := l.Held, max(0, l.ActiveSlots-l.Held), l.Limit.Limit
	r := limitRow{ID: l.ID.String(), Name: l.Name, Kind: sema.KindOf(l.Name).String(),
		Usage:    strconv.Itoa(l.ActiveSlots) + "/" + strconv.Itoa(total),
		BarLabel: fmt.Sprintf("%d leased, %d rate level, %d free of %d", held, lvl, max(0, total-l.ActiveSlots), total),
		HeldPct:  pct(held, total), LevelX: pct(held, total), LevelPct: pct(lvl, total),
		Decay: formatDecay(l.SlotDecayPerSecond), Template: l.Template, Active: l.Active,
		Waiting: l.Waiting, Denied: l.Denied, TimedOut: l.TimedOut}
	if !l.HeadSince.IsZero() {
		r.Oldest, r.OldestMs = human(now.Sub(l.HeadSince)), l.HeadSince.UnixMilli()
	}
	return r
}

// limitsData is the limits page's data.
type limitsData struct {
	Limits      []limitRow
	Kind, Query string
	Kinds       []string
	Total       int
	Page, Pages int
	PrevURL     string
	NextURL     string
	TableURL    string // the table alone, fetched again when limits change
}

func (u *UI) limits(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	kind, ok := sema.ParseLimitKind(q.Get("kind"))
	if !ok {
		u.fail(w, r, p, http.StatusBadRequest, "kind must be all, global, tag, label or template")
		return
	}
	query := strings.TrimSpace(q.Get("q"))
	pg, _ := strconv.Atoi(q.Get("page"))
	pg = max(1, pg)
	ls, total, err := u.c.FindLimits(r.Context(), kind, query, (pg-1)*pageSize, pageSize)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	now := u.opts.Now()
	rows := make([]limitRow, len(ls))
	for i, l := range ls {
		rows[i] = newLimitRow(l, now)
	}
	d := limitsData{Limits: rows, Kind: kind.String(), Query: query, Total: total, Page: pg,
		Pages: max(1, (total+pageSize-1)/pageSize), Kinds: []string{"all", "global", "tag", "label", "template"}}
	link := func(n int) string {
		v := url.Values{}
		if kind != sema.AnyKind {
			v.Set("kind", kind.String())
		}
		if query != "" {
			v.Set("q", query)
		}
		v.Set("page", strconv.Itoa(n))
		return "/ui/limits?" + v.Encode()
	}
	d.TableURL = link(pg) + "&part=table"
	if pg > 1 {
		d.PrevURL = link(pg - 1)
	}
	if pg < d.Pages {
		d.NextURL = link(pg + 1)
	}
	tmpl := "layout"
	if r.Header.Get("HX-Request") != "" && r.URL.Query().Get("part") == "table" {
		tmpl = "limits-table"
	}
	u.render(w, r, http.StatusOK, "limits", tmpl, page{Title: "Limits", Nav: "limits", P: p, Now: now, Data: d})
}

// limitPage is a limit's page data: the coordinator's view, and its rows
// formatted once in Go (a template calling functions per cell costs ten
// times more on a line of thousands).
type limitPage struct {
	coord.LimitDetail
	HolderRows []holderRow
	WaiterRows []waiterRow
}

type holderRow struct {
	LeaseID, Short, Holder, RunLink, Since, Expires, Meta string
	SinceMs, ExpiresMs                                    int64
	Slots                                                 int
	Fence                                                 uint64
}

type waiterRow struct {
	Holder, RunLink, Waited, Deadline string
	SinceMs, DeadlineMs               int64
	Position, Slots                   int
	Rate                              bool
	Others                            []otherLimit
}

type otherLimit struct{ Name, Link string }

func newLimitPage(d coord.LimitDetail) limitPage {
	p := limitPage{LimitDetail: d, HolderRows: make([]holderRow, len(d.Holders)), WaiterRows: make([]waiterRow, len(d.Waiters))}
	for i, h := range d.Holders {
		p.HolderRows[i] = holderRow{LeaseID: h.LeaseID.String(), Short: sema.ShortID(h.LeaseID), Holder: sema.HolderName(h.Holder),
			RunLink: runLink(h.Holder), Since: human(d.At.Sub(h.Since)), Expires: human(h.Expires.Sub(d.At)), Meta: metadata(h.Holder.Metadata),
			SinceMs: h.Since.UnixMilli(), ExpiresMs: h.Expires.UnixMilli(), Slots: h.Slots, Fence: h.FencingToken}
	}
	for i, w := range d.Waiters {
		row := waiterRow{Holder: sema.HolderName(w.Holder), RunLink: runLink(w.Holder), Waited: human(d.At.Sub(w.Since)),
			SinceMs: w.Since.UnixMilli(), Position: w.Position, Slots: w.Slots, Rate: w.Mode == sema.ModeRateLimit}
		if !w.Deadline.IsZero() {
			row.Deadline, row.DeadlineMs = human(w.Deadline.Sub(d.At)), w.Deadline.UnixMilli()
		}
		for _, o := range w.Others {
			row.Others = append(row.Others, otherLimit{Name: o, Link: "/ui/limits/" + url.PathEscape(o)})
		}
		p.WaiterRows[i] = row
	}
	return p
}

func (u *UI) inspect(w http.ResponseWriter, r *http.Request, p Principal) (limitPage, bool) {
	d, err := u.c.InspectLimit(r.Context(), r.PathValue("id"))
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return limitPage{}, false
	}
	return newLimitPage(d), true
}

func (u *UI) limit(w http.ResponseWriter, r *http.Request, p Principal) {
	if d, ok := u.inspect(w, r, p); ok {
		u.render(w, r, http.StatusOK, "limit", "layout", page{Title: d.Name, Nav: "limits", P: p, Now: d.At, Data: d})
	}
}

// limitLive is the live region of a limit's page, fetched again when the
// limit changes.
func (u *UI) limitLive(w http.ResponseWriter, r *http.Request, p Principal) {
	if d, ok := u.inspect(w, r, p); ok {
		u.render(w, r, http.StatusOK, "limit", "limit-live", page{P: p, Now: d.At, Data: d})
	}
}

// limitForm is the create and edit form's data.
type limitForm struct {
	ID, Name, Limit, Decay string
	Active                 bool
	Field                  string // the field at fault
	Edit                   bool
}

func (u *UI) newLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	u.render(w, r, http.StatusOK, "form", "layout", page{Title: "New limit", Nav: "limits", P: p,
		Data: limitForm{Limit: "1", Decay: "0", Active: true}})
}

// readForm parses the limit form; on a bad field it returns the field
// and why.
func readForm(r *http.Request) (limitForm, sema.LimitSpec, error) {
	f := limitForm{Name: strings.TrimSpace(r.PostFormValue("name")), Limit: r.PostFormValue("limit"),
		Decay: r.PostFormValue("decay"), Active: r.PostFormValue("active") != ""}
	s := sema.LimitSpec{Name: f.Name, Active: f.Active}
	n, err := strconv.Atoi(strings.TrimSpace(f.Limit))
	if err != nil || n < 0 {
		return f, s, &sema.InvalidError{Field: "limit", Detail: "must be a whole number, 0 or more"}
	}
	s.Limit = n
	if d := strings.TrimSpace(f.Decay); d != "" {
		x, err := strconv.ParseFloat(d, 64)
		if err != nil || x < 0 {
			return f, s, &sema.InvalidError{Field: "slot_decay_per_second", Detail: "must be a number, 0 or more"}
		}
		s.SlotDecayPerSecond = x
	}
	return f, s, nil
}

func (u *UI) createLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	f, s, err := readForm(r)
	if err == nil {
		var v sema.LimitView
		v, err = u.c.CreateLimit(r.Context(), s)
		if err == nil {
			http.Redirect(w, r, "/ui/limits/"+v.ID.String(), http.StatusSeeOther)
			return
		}
	}
	u.formError(w, r, p, "New limit", f, err)
}

func (u *UI) formError(w http.ResponseWriter, r *http.Request, p Principal, title string, f limitForm, err error) {
	var ie *sema.InvalidError
	if errors.As(err, &ie) {
		f.Field = ie.Field
	} else if errors.Is(err, sema.ErrNameTaken) {
		f.Field = "name"
	}
	u.render(w, r, statusOf(err), "form", "layout", page{Title: title, Nav: "limits", P: p, Error: err.Error(), Data: f})
}

func (u *UI) editLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	v, err := u.c.ReadLimit(r.Context(), r.PathValue("id"), sema.Summary)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	u.render(w, r, http.StatusOK, "form", "layout", page{Title: "Edit " + v.Name, Nav: "limits", P: p,
		Data: limitForm{ID: v.ID.String(), Name: v.Name, Limit: strconv.Itoa(v.Limit.Limit),
			Decay: strconv.FormatFloat(v.SlotDecayPerSecond, 'f', -1, 64), Active: v.Active, Edit: true}})
}

func (u *UI) updateLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	f, s, err := readForm(r)
	f.ID, f.Edit = r.PathValue("id"), true
	if err == nil {
		var v sema.LimitView
		v, err = u.c.UpdateLimit(r.Context(), f.ID, sema.LimitPatch{Name: &s.Name, Limit: &s.Limit, Active: &s.Active,
			SlotDecayPerSecond: &s.SlotDecayPerSecond})
		if err == nil {
			http.Redirect(w, r, "/ui/limits/"+v.ID.String(), http.StatusSeeOther)
			return
		}
	}
	u.formError(w, r, p, "Edit "+f.Name, f, err)
}

func (u *UI) setActive(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	active := r.PostFormValue("active") == "true"
	v, err := u.c.UpdateLimit(r.Context(), r.PathValue("id"), sema.LimitPatch{Active: &active})
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	http.Redirect(w, r, "/ui/limits/"+v.ID.String(), http.StatusSeeOther)
}

// confirmData is a confirmation page's data.
type confirmData struct {
	Question, Detail, Action, Button, Back string
}

func (u *UI) confirmDelete(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	v, err := u.c.ReadLimit(r.Context(), r.PathValue("id"), sema.Summary)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	detail := "Its leases are kept by their holders but no longer limited by it; requests waiting only for it are granted."
	u.confirm(w, r, p, confirmData{Question: "Delete the limit “" + v.Name + "”?", Detail: detail,
		Action: "/ui/limits/" + v.ID.String() + "/delete", Button: "Delete " + v.Name, Back: "/ui/limits/" + v.ID.String()})
}

func (u *UI) deleteLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Write) {
		return
	}
	if _, err := u.c.DeleteLimit(r.Context(), r.PathValue("id")); err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	http.Redirect(w, r, "/ui/limits", http.StatusSeeOther)
}

// keyedRef finds the run kind and reference of a tag or label limit.
func (u *UI) keyedRef(r *http.Request) (sema.LimitView, sema.RunKind, error) {
	v, err := u.c.ReadLimit(r.Context(), r.PathValue("id"), sema.Full)
	if err != nil {
		return v, 0, err
	}
	switch sema.KindOf(v.Name) {
	case sema.TagKind:
		return v, sema.KindTask, nil
	case sema.LabelKind:
		return v, sema.KindFlow, nil
	}
	return v, 0, &sema.InvalidError{Field: "id", Detail: "only a tag or label limit can be reset"}
}

func (u *UI) confirmReset(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Admin) {
		return
	}
	v, _, err := u.keyedRef(r)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	runs := 0
	for _, h := range v.Holders {
		if runLink(h.Holder) != "" {
			runs++
		}
	}
	u.confirm(w, r, p, confirmData{Question: "Reset “" + v.Name + "”?",
		Detail: strconv.Itoa(len(v.Holders)) + " lease(s) will be revoked; the " + strconv.Itoa(runs) +
			" run(s) holding them become Crashed. Waiting requests then take the freed slots.",
		Action: "/ui/limits/" + v.ID.String() + "/reset", Button: "Reset " + v.Name, Back: "/ui/limits/" + v.ID.String()})
}

func (u *UI) resetLimit(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Admin) {
		return
	}
	v, kind, err := u.keyedRef(r)
	if err == nil {
		_, err = u.c.ResetTagLimit(r.Context(), kind, coord.TagLimitRef{ID: v.ID}, nil)
	}
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	http.Redirect(w, r, "/ui/limits/"+v.ID.String(), http.StatusSeeOther)
}

func (u *UI) confirmRevoke(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Admin) {
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		u.fail(w, r, p, http.StatusNotFound, "no such lease")
		return
	}
	l, refs, err := u.c.Lease(r.Context(), id)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	back := "/ui/limits"
	if len(refs) > 0 {
		back = "/ui/limits/" + refs[0].ID.String()
	}
	if b := r.URL.Query().Get("back"); strings.HasPrefix(b, "/ui/") {
		back = b
	}
	detail := "Its " + strconv.Itoa(l.Slots) + " slot(s) go to the next in line at once."
	if runLink(l.Holder) != "" {
		detail += " The run holding it becomes Crashed."
	}
	u.confirm(w, r, p, confirmData{Question: "Revoke lease " + sema.ShortID(l.ID) + " held by " + sema.HolderName(l.Holder) + "?",
		Detail: detail, Action: "/ui/leases/" + l.ID.String() + "/revoke?back=" + url.QueryEscape(back), Button: "Revoke", Back: back})
}

func (u *UI) revokeLease(w http.ResponseWriter, r *http.Request, p Principal) {
	if !u.allowed(w, r, p, Admin) {
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err == nil {
		_, err = u.c.RevokeLease(r.Context(), id, "revoked in the web UI")
	} else {
		err = sema.ErrLeaseNotFound
	}
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	back := r.URL.Query().Get("back")
	if !strings.HasPrefix(back, "/ui/") {
		back = "/ui/limits"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (u *UI) confirm(w http.ResponseWriter, r *http.Request, p Principal, d confirmData) {
	u.render(w, r, http.StatusOK, "confirm", "layout", page{Title: "Confirm", Nav: "limits", P: p, Data: d})
}

// runsData is the runs page's data.
type runsData struct {
	Runs             []sema.Run
	Kind, State      string
	States           []string
	Total            int
	Page, Pages      int
	PrevURL, NextURL string
}

func (u *UI) runs(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	var f sema.RunFilter
	d := runsData{Kind: q.Get("kind"), State: q.Get("state")}
	if d.Kind != "" {
		k, ok := sema.ParseRunKind(d.Kind)
		if !ok {
			u.fail(w, r, p, http.StatusBadRequest, "kind must be task or flow")
			return
		}
		f.Kind = k
	}
	for s := sema.Pending; s <= sema.Cancelled; s++ {
		d.States = append(d.States, s.String())
		if s.String() == d.State {
			f.State = s
		}
	}
	if d.State != "" && f.State == 0 {
		u.fail(w, r, p, http.StatusBadRequest, "no such state: "+d.State)
		return
	}
	pg, _ := strconv.Atoi(q.Get("page"))
	d.Page = max(1, pg)
	runs, total, err := u.c.RecentRuns(r.Context(), f, (d.Page-1)*pageSize, pageSize)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	d.Runs, d.Total, d.Pages = runs, total, max(1, (total+pageSize-1)/pageSize)
	link := func(n int) string {
		v := url.Values{}
		if d.Kind != "" {
			v.Set("kind", d.Kind)
		}
		if d.State != "" {
			v.Set("state", d.State)
		}
		v.Set("page", strconv.Itoa(n))
		return "/ui/runs?" + v.Encode()
	}
	if d.Page > 1 {
		d.PrevURL = link(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.NextURL = link(d.Page + 1)
	}
	tmpl := "layout"
	if r.Header.Get("HX-Request") != "" && q.Get("part") == "table" {
		tmpl = "runs-table"
	}
	u.render(w, r, http.StatusOK, "runs", tmpl, page{Title: "Runs", Nav: "runs", P: p, Data: d})
}

// runData is a run's page data.
type runData struct {
	Run sema.Run
	// Limits are the limits the run takes (its tags' and its own).
	Limits []string
}

func (u *UI) run(w http.ResponseWriter, r *http.Request, p Principal) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		u.fail(w, r, p, http.StatusNotFound, sema.ErrRunNotFound.Error())
		return
	}
	run, err := u.c.ReadRun(r.Context(), id)
	if err != nil {
		u.fail(w, r, p, statusOf(err), err.Error())
		return
	}
	d := runData{Run: run}
	for _, t := range run.Tags {
		d.Limits = append(d.Limits, run.Kind.LimitPrefix()+t)
	}
	d.Limits = append(d.Limits, run.Limits...)
	tmpl := "layout"
	if r.Header.Get("HX-Request") != "" && r.URL.Query().Get("part") == "live" {
		tmpl = "run-live"
	}
	u.render(w, r, http.StatusOK, "run", tmpl, page{Title: run.Kind.String() + " run " + run.Name, Nav: "runs", P: p, Data: d})
}

// allowed answers 403 when p may not take action a.
func (u *UI) allowed(w http.ResponseWriter, r *http.Request, p Principal, a Action) bool {
	if p.Can(a) {
		return true
	}
	u.fail(w, r, p, http.StatusForbidden, "your key may not "+string(a))
	return false
}

// fail renders an error page.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, p Principal, status int, msg string) {
	if status >= 500 {
		u.log.Error("ui request failed", "path", r.URL.Path, "status", status, "err", msg)
	}
	u.render(w, r, status, "error", "layout", page{Title: http.StatusText(status), P: p, Error: msg})
}

// statusOf maps the coordinator's errors to HTTP statuses.
func statusOf(err error) int {
	var ie *sema.InvalidError
	switch {
	case errors.As(err, &ie):
		return http.StatusUnprocessableEntity
	case errors.Is(err, sema.ErrLimitNotFound), errors.Is(err, sema.ErrLeaseNotFound), errors.Is(err, sema.ErrRunNotFound):
		return http.StatusNotFound
	case errors.Is(err, sema.ErrNameTaken):
		return http.StatusConflict
	case errors.As(err, new(*auth.ForbiddenError)):
		return http.StatusForbidden
	case errors.Is(err, coord.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// waited is how long a run stood in line, over its history.
func waited(run sema.Run, now time.Time) time.Duration {
	var d time.Duration
	for i, e := range run.History {
		if e.State != sema.AwaitingConcurrencySlot {
			continue
		}
		end := now
		if i+1 < len(run.History) {
			end = run.History[i+1].At
		}
		d += end.Sub(e.At)
	}
	return d
}
