package webui_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/allot-dev/allot"
)

// liveWithin is how soon a change must show on an open page: the issue
// asks for 2 s; the margin absorbs a loaded machine.
const liveWithin = 3 * time.Second

// TestHarnessCatchesCSPViolation proves that the console check works: an
// inline script that the page's Content-Security-Policy refuses is
// reported as a console error.
func TestHarnessCatchesCSPViolation(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	tb.open("/ui/limits")
	eval[any](tb, `(() => { const s = document.createElement("script"); s.textContent = "window.inlineRan = true"; document.body.appendChild(s); return null })()`)
	eventually(t, liveWithin, "the CSP violation is reported", func() bool {
		for _, e := range tb.consoleErrors() {
			if strings.Contains(e, "Content Security Policy") {
				return true
			}
		}
		return false
	})
	if ran := eval[bool](tb, `window.inlineRan === true`); ran {
		t.Errorf("the inline script ran despite the CSP")
	}
	// This test wanted the error: clear it so the tab's check passes.
	tb.mu.Lock()
	tb.errs = nil
	tb.mu.Unlock()
}

// TestCreateLimitThroughForm creates a limit with the form and finds it in
// the list and through the SDK.
func TestCreateLimitThroughForm(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	tb.open("/ui/limits")
	tb.do("go to the form", chromedp.Click(chromedp.CSS(`a[href="/ui/limits/new"]`)), chromedp.WaitVisible(chromedp.CSS("#name")))
	tb.do("fill in and submit",
		chromedp.SendKeys(chromedp.CSS("#name"), "db-pool"),
		chromedp.SetValue(chromedp.CSS("#limit"), "3"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#holders")))
	if got := tb.text("h1"); !strings.HasPrefix(got, "db-pool") {
		t.Errorf("after create: heading %q, want the limit's page", got)
	}
	tb.open("/ui/limits")
	if got := tb.text("#limits-table tbody th a"); got != "db-pool" {
		t.Errorf("list: first limit %q, want db-pool", got)
	}
	l, err := tb.c.GetLimit(t.Context(), "db-pool")
	if err != nil || l.Limit != 3 || !l.Active {
		t.Errorf("SDK: got %+v, %v; want db-pool, limit 3, active", l, err)
	}
	tb.screenshot("limits-page")
}

// TestLiveHoldersAndWaiters opens a limit's page and watches, without a
// reload, a lease appear with its countdown, a second request wait at
// position 1, and take the slot when the first is released.
func TestLiveHoldersAndWaiters(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	ctx := t.Context()
	l, err := tb.c.CreateLimit(ctx, allot.LimitSpec{Name: "db", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	tb.open("/ui/limits/" + l.ID)
	eval[any](tb, `window.notReloaded = true`)

	first, err := tb.c.Acquire(ctx, []string{"db"}, allot.Holder("process", "etl-7", map[string]string{"job": "nightly"}))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release(context.WithoutCancel(ctx))
	row := `tr[data-lease="` + first.ID() + `"]`
	tb.within(liveWithin, "the holder row appears", chromedp.WaitVisible(chromedp.CSS(row)))
	if got := tb.text(row + " td"); got != "process etl-7" {
		t.Errorf("holder cell: %q, want process etl-7", got)
	}
	countdown := tb.text(row + " .countdown")
	if !regexp.MustCompile(`^\dm \d\ds$`).MatchString(countdown) {
		t.Errorf("countdown %q, want minutes and seconds", countdown)
	}
	tb.waitJS(liveWithin, "the countdown counts down", `document.querySelector('`+row+` .countdown').textContent !== "`+countdown+`"`)

	type result struct {
		lease *allot.Lease
		err   error
	}
	second := make(chan result, 1)
	go func() {
		l, err := tb.c.Acquire(ctx, []string{"db"}, allot.Holder("process", "etl-8", nil), allot.Timeout(time.Minute))
		second <- result{l, err}
	}()
	tb.within(liveWithin, "the waiter row appears", chromedp.WaitVisible(chromedp.CSS(`#live th.position`)))
	if got := tb.text("#live th.position"); got != "1" {
		t.Errorf("waiter position %q, want 1", got)
	}
	if got := tb.text(".why"); !strings.Contains(got, "needs 1 slot of `db`, 0 free; `db` frees next when lease") || !strings.Contains(got, "held by process etl-7") {
		t.Errorf("why sentence %q", got)
	}
	tb.screenshot("limit-page")

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.lease.Release(context.WithoutCancel(ctx))
	tb.within(liveWithin, "the waiter becomes the holder", chromedp.WaitVisible(chromedp.CSS(`tr[data-lease="`+r.lease.ID()+`"]`)))
	tb.waitJS(liveWithin, "the line empties", `document.querySelector("#live th.position") === null`)
	if !eval[bool](tb, `window.notReloaded === true`) {
		t.Errorf("the page reloaded; it should update in place")
	}

	// The same page without JavaScript holds the same holders.
	html := get(t, tb.base+"/ui/limits/"+l.ID)
	re := regexp.MustCompile(`data-lease="([0-9a-f-]{36})"`)
	var plain []string
	for _, m := range re.FindAllStringSubmatch(html, -1) {
		plain = append(plain, m[1])
	}
	inBrowser := eval[[]string](tb, `[...document.querySelectorAll("tr[data-lease]")].map(e => e.dataset.lease)`)
	if !slices.Equal(plain, inBrowser) || len(plain) != 1 {
		t.Errorf("holders without JavaScript %v, in the browser %v; want the same one", plain, inBrowser)
	}
}

// TestDisableThenDeleteWithConfirmation disables a limit and deletes it
// through the confirmation page; the SDK sees both.
func TestDisableThenDeleteWithConfirmation(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	ctx := t.Context()
	l, err := tb.c.CreateLimit(ctx, allot.LimitSpec{Name: "old", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	tb.open("/ui/limits/" + l.ID)
	tb.do("disable", chromedp.Click(chromedp.CSS(`form[action$="/active"] button`)), chromedp.WaitVisible(chromedp.CSS(".badge.off")))
	if got, err := tb.c.GetLimit(ctx, "old"); err != nil || got.Active {
		t.Fatalf("after disable: %+v, %v; want inactive", got, err)
	}
	tb.do("ask to delete", chromedp.Click(chromedp.CSS(`a[href$="/delete"]`)), chromedp.WaitVisible(chromedp.CSS(`form[action$="/delete"] button`)))
	if got := tb.text("h1"); got != "Delete the limit “old”?" {
		t.Errorf("confirmation: %q", got)
	}
	if _, err := tb.c.GetLimit(ctx, "old"); err != nil {
		t.Fatalf("the confirmation page deleted already: %v", err)
	}
	tb.do("confirm", chromedp.Click(chromedp.CSS(`form[action$="/delete"] button`)), chromedp.WaitVisible(chromedp.CSS("#limits-table")))
	if _, err := tb.c.GetLimit(ctx, "old"); !errors.Is(err, allot.ErrLimitNotFound) {
		t.Errorf("after delete: %v, want ErrLimitNotFound", err)
	}
}

// TestResetTagLimitCrashesRun resets a tag limit from its page: the dialog
// counts the leases, and the run that held the slot becomes Crashed.
func TestResetTagLimitCrashesRun(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	ctx := t.Context()
	tl, err := tb.c.Tags().Create(ctx, "etl", 1)
	if err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 1)
	running := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		ended <- tb.c.RunTask(ctx, "nightly", func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			return context.Cause(ctx)
		}, allot.RunTags("etl"), allot.RunCreated(func(id string) { ids <- id }))
	}()
	id := <-ids
	<-running
	tb.open("/ui/limits/" + tl.ID)
	tb.within(liveWithin, "the run holds the slot", chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/runs/`+id+`"]`)))
	tb.do("ask to reset", chromedp.Click(chromedp.CSS(`a[href$="/reset"]`)), chromedp.WaitVisible(chromedp.CSS(`form[action$="/reset"] button`)))
	if got := tb.text("main p"); !strings.Contains(got, "1 lease(s) will be revoked") || !strings.Contains(got, "1 run(s) holding them become Crashed") {
		t.Errorf("reset dialog: %q", got)
	}
	tb.do("confirm", chromedp.Click(chromedp.CSS(`form[action$="/reset"] button`)), chromedp.WaitVisible(chromedp.CSS("#live")))
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not end after the reset")
	}
	eventually(t, liveWithin, "the run is Crashed", func() bool {
		r, err := tb.c.GetRun(ctx, id)
		return err == nil && r.State == "Crashed"
	})
	tb.open("/ui/runs/" + id)
	if got := tb.text(".run-state"); got != "Crashed" {
		t.Errorf("run page state %q, want Crashed", got)
	}
	tb.open("/ui/runs")
	if got := tb.text("#runs-table tbody th a"); got != "nightly" {
		t.Errorf("runs page: first run %q, want nightly", got)
	}
}

// TestRevokeFromThePage revokes a holder's lease through its confirmation;
// the holder's SDK lease ends.
func TestRevokeFromThePage(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	ctx := t.Context()
	l, err := tb.c.CreateLimit(ctx, allot.LimitSpec{Name: "gpu", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := tb.c.Acquire(ctx, []string{"gpu"}, allot.Holder("process", "trainer", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	tb.open("/ui/limits/" + l.ID)
	tb.do("ask to revoke", chromedp.Click(chromedp.CSS(`a[href^="/ui/leases/`+lease.ID()+`/revoke"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action*="/revoke"] button`)))
	tb.do("confirm", chromedp.Click(chromedp.CSS(`form[action*="/revoke"] button`)), chromedp.WaitVisible(chromedp.CSS("#live")))
	select {
	case <-lease.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the SDK lease was not lost after the revoke")
	}
	if !errors.Is(lease.Err(), allot.ErrLeaseLost) {
		t.Errorf("lease error %v, want ErrLeaseLost", lease.Err())
	}
}

// TestKeyboardReachesEveryAction tabs through a limit's page and reaches
// each of its actions.
func TestKeyboardReachesEveryAction(t *testing.T) {
	t.Parallel()
	tb := newTab(t)
	ctx := t.Context()
	if _, err := tb.c.Tags().Create(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	lease, err := tb.c.Acquire(ctx, []string{"tag:k"}, allot.Holder("process", "p", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	tb.open("/ui/limits/tag:k")
	want := []string{"Edit", "Disable", "Delete…", "Reset…", "Revoke…"}
	var seen []string
	for range 40 {
		tb.do("press Tab", chromedp.KeyEvent("\t"))
		seen = append(seen, strings.TrimSpace(eval[string](tb, `document.activeElement ? document.activeElement.textContent : ""`)))
	}
	for _, w := range want {
		if !slices.Contains(seen, w) {
			t.Errorf("Tab never reached %q; reached %q", w, seen)
		}
	}
	// The limits page's actions too: the filter and New limit.
	tb.open("/ui/limits")
	seen = nil
	for range 12 {
		tb.do("press Tab", chromedp.KeyEvent("\t"))
		seen = append(seen, strings.TrimSpace(eval[string](tb, `document.activeElement ? (document.activeElement.id || document.activeElement.textContent) : ""`)))
	}
	for _, w := range []string{"kind", "q", "Filter", "New limit", "tag:k"} {
		if !slices.Contains(seen, w) {
			t.Errorf("Tab never reached %q on the limits page; reached %q", w, seen)
		}
	}
	tb.open("/ui/limits/tag:k")
	// Enter on a focused action follows it.
	eval[any](tb, `document.querySelector('a[href$="/edit"]').focus()`)
	tb.do("press Enter", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#limit")))
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}
