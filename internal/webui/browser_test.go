package webui_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/allottest"
)

// The browser tests drive Debian's real headless Chromium (the chromium
// package) through chromedp: one browser process for the package, one tab
// per test, tests in parallel. Without Chromium they skip, unless CI=true,
// where they fail (.ci/run installs it). Every tab fails its test on any
// console error: a Content-Security-Policy violation above all.

var (
	browserOnce sync.Once
	browserCtx  context.Context
	browserErr  error
	stopBrowser = func() {}
)

func chromiumPath() string {
	if p := os.Getenv("ALLOT_CHROMIUM"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopBrowser()
	os.Exit(code)
}

// browser returns the context of the package's one browser, starting it on
// first use.
func browser(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Do(func() {
		path := chromiumPath()
		if path == "" {
			browserErr = fmt.Errorf("chromium not found (install Debian's chromium package, or set ALLOT_CHROMIUM)")
			return
		}
		dir, err := os.MkdirTemp("", "allot-chromium-")
		if err != nil {
			browserErr = err
			return
		}
		opts := []chromedp.ExecAllocatorOption{
			chromedp.ExecPath(path),
			chromedp.UserDataDir(dir),
			chromedp.Flag("headless", true),
			chromedp.Flag("no-sandbox", true),
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("no-first-run", true),
			chromedp.Flag("no-default-browser-check", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.WindowSize(1280, 900),
		}
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelBrowser := chromedp.NewContext(actx)
		if _, err := chromedp.Run(bctx, chromedp.Title()); err != nil {
			cancelBrowser()
			cancelAlloc()
			browserErr = fmt.Errorf("start chromium: %w", err)
			return
		}
		browserCtx = bctx
		stopBrowser = func() { cancelBrowser(); cancelAlloc(); _ = os.RemoveAll(dir) }
	})
	if browserErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser tests must run in CI: %v", browserErr)
		}
		t.Skipf("skipping the browser test: %v", browserErr)
	}
	return browserCtx
}

// tab is one browser tab of a test, on one server.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string // http://127.0.0.1:PORT
	c    *allot.Client

	mu       sync.Mutex
	errs     []string
	expected []string // errors that contain one of these are not counted
}

// newTab starts a server and opens a tab on it; the test fails at its end
// if the tab logged any console error (an exception, console.error, or an
// error of the browser log such as a CSP violation or a failed load).
func newTab(t *testing.T) *tab {
	t.Helper()
	browser(t)
	srv := allottest.NewServer(t)
	return openTab(t, strings.TrimSuffix(srv.URL(), "/api"), srv.Client(t))
}

// openTab opens a tab on the server at base (http://127.0.0.1:PORT), whose
// SDK client is c, in a browser context of its own: cookies are per host,
// not per port, so tabs on different test servers would share (and log
// each other out of) their sessions.
func openTab(t *testing.T, base string, c *allot.Client) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser(t), chromedp.WithNewBrowserContext())
	tb := &tab{t: t, ctx: ctx, base: base, c: c}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				tb.mu.Lock()
				tb.errs = append(tb.errs, m.String()+" "+m.URL)
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		// Read the errors before the tab closes, so that what a page
		// logs as it is torn down is not counted.
		errs := tb.unexpectedErrors()
		cancel()
		<-done
		for _, e := range errs {
			t.Errorf("browser console error: %s", e)
		}
	})
	return tb
}

// unexpectedErrors are the console errors not expected (see forgive).
func (tb *tab) unexpectedErrors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []string
	for _, e := range tb.errs {
		if !slices.ContainsFunc(tb.expected, func(s string) bool { return strings.Contains(e, s) }) {
			out = append(out, e)
		}
	}
	return out
}

func (tb *tab) consoleErrors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.errs...)
}

// do runs steps in the tab with a generous deadline, failing the test on
// error.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	tb.within(20*time.Second, what, steps...)
}

// within runs steps that wait for something, with a deadline of d.
func (tb *tab) within(d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s (within %s): %v", what, d, err)
	}
}

// open navigates to a UI path and waits until htmx has loaded.
func (tb *tab) open(path string) {
	tb.t.Helper()
	tb.do("open "+path, chromedp.Navigate(tb.base+path), chromedp.WaitReady(chromedp.CSS("body")))
	tb.waitJS(5*time.Second, "htmx loaded", `typeof htmx !== "undefined" && document.readyState === "complete"`)
}

// waitJS polls a JavaScript expression until it is true.
func (tb *tab) waitJS(d time.Duration, what, expr string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))); err != nil {
		tb.t.Fatalf("%s: not within %s: %v", what, d, err)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text reads the text of the first element sel matches.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tb.t.Fatalf("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// screenshot saves a PNG of the viewport as a test artefact, in
// $ALLOT_SCREENSHOTS or the test's temporary directory.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	dir := os.Getenv("ALLOT_SCREENSHOTS")
	if dir == "" {
		dir = tb.t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", path)
	return path
}

// eventually polls cond until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
