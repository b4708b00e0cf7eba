package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

const (
	// killGrace is how long allot run waits after SIGTERM before it kills
	// a command whose lease was lost.
	killGrace = 10 * time.Second
	// releaseWait bounds the release of a lease on the way out.
	releaseWait = 15 * time.Second
	// statusEvery is how often allot run says, on a terminal, what it
	// waits for.
	statusEvery = 2 * time.Second
)

const runLong = `Run a command while holding slots of limits.

allot run takes SLOTS (default 1) of every --limit, all at once or none,
waiting in line (first in, first out) until they are free or --timeout passes. Then it takes one slot of every --rate limit, and
runs the command with allot's stdin, stdout and stderr, and with
ALLOT_LEASE_ID and ALLOT_FENCING_TOKEN in its environment. The lease is renewed
in the background every third of --lease-duration; when the command exits the
slots are released and allot exits with the command's exit code (128+S if
signal S killed it). SIGINT and SIGTERM sent to allot are passed on to the
command. While it waits with stderr on a terminal, allot says every 2 s who
holds the slots and where it stands in line. No terminal is needed: allot run
works from cron and CI.

A trailing ":N" of digits in --limit NAME:N is the number of slots; a name
that itself ends in ":digits" is written NAME:digits:1. All limits of one
allot run take the same number of slots (one request takes one count).

With --tag, the command runs as a task run with those tags: allot creates
the run and waits until every limited tag has a free slot, then takes the
--limit and --rate slots, and runs the command with ALLOT_TASK_RUN_ID in its
environment. The run heartbeats every third of --lease-duration and ends
Completed or Failed by the command's exit code; if allot dies it is Crashed
when its lease expires. A run whose slots are revoked (a reset) stops the
command as a lost lease does.

If none of the named limits exist, allot run warns and runs the command
without slots, as Prefect does; with --strict it exits 1 instead. A limit that
is missing among others that exist is warned about and skipped.

If the lease is lost while the command runs — an operator revoked it ('allot
revoke', or a reset of a tag limit for --tag), it expired, or it could not be
renewed in time — allot learns of it within about a second (it keeps a watch
open on the server beside the renewals), sends the command's process group
SIGTERM, then SIGKILL 10 s later if it is still running, prints one line
("allot: lease ID was revoked (WHY); the command was stopped") and exits 4,
whatever the command's own exit code: its work may have overlapped with the
next holder's. If the command exits before allot learns of the loss, its exit
code stands.

On Linux the command runs in a process group of its own, which is stopped
(SIGTERM, then SIGKILL) if allot dies, even by SIGKILL; run from a terminal
(stdin), it stays in allot's group for job control, and dies with allot.
Elsewhere a command whose allot was killed runs on, and its slots come back
when the lease expires.

Exit codes: the command's; 1 if allot failed; 2 usage error; 3 not acquired
within --timeout; 4 the lease (or the task run) was lost or revoked while the
command ran; 126 the command could not be executed, 127 it was not found;
128+S if signal S interrupted allot while it waited.`

// runner is one allot run.
type runner struct {
	env Env
	g   *globals

	limits, tags, rates []string
	timeout, leaseDur   time.Duration
	hasTimeout          bool
	holderID            string
	strict              bool
}

func newRunCmd(env Env, g *globals) *cobra.Command {
	r := &runner{env: env, g: g}
	cmd := &cobra.Command{
		Use:   "run [--limit NAME[:SLOTS]]... [--tag TAG]... [--rate NAME]... [flags] -- COMMAND [ARG...]",
		Short: "Run a command while holding slots of limits",
		Long:  runLong,
		Example: `  allot run --limit warehouse -- ./load.sh
  allot run --limit db:2 --rate github-api --timeout 10m -- make deploy`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.hasTimeout = cmd.Flags().Changed("timeout")
			return r.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after COMMAND are the command's
	f.StringArrayVar(&r.limits, "limit", nil, "hold SLOTS (default 1) of the limit NAME while the command runs (repeatable)")
	f.StringArrayVar(&r.tags, "tag", nil, "run the command as a task run with this tag, admitted when the tag's limit has a free slot (repeatable)")
	f.StringArrayVar(&r.rates, "rate", nil, "take one slot of the rate limit NAME before the command starts (repeatable)")
	f.DurationVar(&r.timeout, "timeout", 0, "exit 3 if the slots are not acquired within this time (default: wait as long as it takes)")
	f.DurationVar(&r.leaseDur, "lease-duration", allot.DefaultLeaseDuration, "how long the slots stay held if allot dies without releasing them")
	f.StringVar(&r.holderID, "holder-id", "", "the holder id others see in inspect (default hostname:pid)")
	f.BoolVar(&r.strict, "strict", false, "exit 1 if none of the limits exist, instead of running the command without slots")
	_ = cmd.RegisterFlagCompletionFunc("limit", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, "", toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("rate", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, "", toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("tag", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, tagPrefix, toComplete)
	})
	return cmd
}

// interrupted is the cause of an acquisition that a signal ended.
type interrupted struct{ sig os.Signal }

func (e interrupted) Error() string {
	name := e.sig.String()
	switch e.sig {
	case syscall.SIGINT:
		name = "SIGINT"
	case syscall.SIGTERM:
		name = "SIGTERM"
	}
	return "interrupted by " + name
}

// signalExit is the exit code of a process that signal s ended: 128+s.
func signalExit(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return ExitError
}

func (r *runner) run(ctx context.Context, args []string) error {
	names, slots, err := parseLimitFlags(r.limits)
	if err != nil {
		return err
	}
	if len(names)+len(r.tags)+len(r.rates) == 0 {
		return usagef("run needs at least one --limit, --tag or --rate")
	}
	c, err := r.g.client()
	if err != nil {
		return err
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	if len(r.tags) > 0 {
		return r.runTask(ctx, c, sigc, names, slots, args)
	}
	lease, err := r.acquire(ctx, c, sigc, names, slots)
	if err != nil {
		return err
	}
	return r.exec(ctx, lease, nil, sigc, args)
}

// errRunTimeout ends the wait of a task run after --timeout.
var errRunTimeout = errors.New("not admitted within --timeout")

// runTask runs the command as a task run with the --tag tags (the server
// admits it when each tag's limit has a free slot), then, inside the run,
// takes the --limit and --rate slots as allot run does without tags. The
// run heartbeats while the command runs and ends Completed or Failed by
// the command's exit code; if allot dies, the run is Crashed when its lease
// expires.
func (r *runner) runTask(ctx context.Context, c *allot.Client, sigc <-chan os.Signal, names []string, slots int, args []string) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	started := make(chan struct{})
	var (
		wg   sync.WaitGroup
		once sync.Once
	)
	var timeoutC <-chan time.Time
	if r.hasTimeout {
		t := time.NewTimer(r.timeout)
		defer t.Stop()
		timeoutC = t.C
	}
	// Until the run is admitted, a signal or --timeout ends the wait.
	wg.Go(func() {
		select {
		case s := <-sigc:
			cancel(interrupted{s})
		case <-timeoutC:
			cancel(errRunTimeout)
		case <-started:
		}
	})
	admitted := func() {
		once.Do(func() {
			close(started)
			wg.Wait()
		})
	}
	err := c.RunTask(wctx, filepath.Base(args[0]), func(fctx context.Context) error {
		admitted()
		if wctx.Err() != nil {
			return context.Cause(wctx)
		}
		var lease *allot.Lease
		if len(names)+len(r.rates) > 0 {
			var err error
			if lease, err = r.acquire(fctx, c, sigc, names, slots); err != nil {
				return err
			}
		}
		return r.exec(fctx, lease, fctx, sigc, args)
	}, allot.RunTags(r.tags...), allot.RunLeaseDuration(r.leaseDur))
	admitted()
	var in interrupted
	switch {
	case err == nil:
		return nil
	case errors.As(err, &in):
		return exitError{code: signalExit(in.sig), msg: "allot: " + in.Error() + " before the command started"}
	case errors.Is(err, errRunTimeout):
		return exitError{code: ExitNotAcquired, msg: "allot: not acquired within " + r.timeout.String()}
	}
	var ee exitError
	if !errors.As(err, &ee) && errors.Is(err, allot.ErrLeaseLost) {
		// The command finished, but the server had ended the run first.
		return exitError{code: ExitLeaseLost, msg: lostLine(err) + "; the command had finished"}
	}
	return err
}

// acquire takes the slots and the rate-limit slots, reporting on a
// terminal what it waits for; a signal ends the wait.
func (r *runner) acquire(ctx context.Context, c *allot.Client, sigc <-chan os.Signal, names []string, slots int) (*allot.Lease, error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rctx, stopReport := context.WithCancel(actx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case s := <-sigc:
			cancel(interrupted{s})
		case <-stop:
		}
	})
	me := allot.Identity{Kind: "process", ID: holderID(r.holderID)}
	if r.env.StderrIsTerminal != nil && r.env.StderrIsTerminal() && len(names) > 0 {
		wg.Go(func() { r.report(rctx, c, names, me) })
	}
	lease, err := r.take(actx, c, names, slots, me)
	stopReport()
	close(stop)
	wg.Wait()
	var in interrupted
	if errors.As(context.Cause(actx), &in) {
		if lease != nil {
			r.release(ctx, lease)
		}
		return nil, exitError{code: signalExit(in.sig), msg: "allot: " + in.Error() + " before the command started"}
	}
	return lease, err
}

// take acquires the lease, then the rate-limit slots.
func (r *runner) take(ctx context.Context, c *allot.Client, names []string, slots int, me allot.Identity) (*allot.Lease, error) {
	start := time.Now()
	opts := []allot.Option{allot.Occupy(slots), allot.LeaseDuration(r.leaseDur), allot.Holder(me.Kind, me.ID, nil)}
	if r.strict {
		opts = append(opts, allot.Strict())
	}
	if r.hasTimeout {
		opts = append(opts, allot.Timeout(r.timeout))
	}
	lease, err := c.Acquire(ctx, names, opts...)
	if err != nil {
		return nil, acquireError(err, names, r.timeout)
	}
	warnMissing(r.env, lease, names)
	if len(r.rates) == 0 {
		return lease, nil
	}
	var ropts []allot.Option
	if r.strict {
		ropts = append(ropts, allot.Strict())
	}
	if r.hasTimeout {
		ropts = append(ropts, allot.Timeout(r.timeout-time.Since(start)))
	}
	if err := c.RateLimit(ctx, r.rates, ropts...); err != nil {
		r.release(ctx, lease)
		return nil, acquireError(err, r.rates, r.timeout)
	}
	return lease, nil
}

// acquireError is how allot run and allot acquire report a failed
// acquisition.
func acquireError(err error, names []string, timeout time.Duration) error {
	switch {
	case errors.Is(err, allot.ErrTimeout):
		return exitError{code: ExitNotAcquired, msg: "allot: not acquired within " + timeout.String()}
	case errors.Is(err, allot.ErrLimitNotFound):
		return fmt.Errorf("no limit named %s exists", quoteNames(names))
	}
	return err
}

// warnMissing warns about the named limits a lease holds nothing of, when
// it holds others (the SDK warns when it holds none).
func warnMissing(env Env, lease *allot.Lease, names []string) {
	held := lease.Limits()
	if len(held) == 0 {
		return
	}
	for _, n := range names {
		if !slices.ContainsFunc(held, func(l allot.LimitRef) bool { return l.Name == n }) {
			fmt.Fprintf(env.Stderr, "allot: limit '%s' does not exist - skipping it\n", n)
		}
	}
}

// exec runs the command while the lease (if any) is held and the task run
// (if runCtx is not nil: the context RunTask gave) runs, passing signals
// on, and returns its outcome.
func (r *runner) exec(ctx context.Context, lease *allot.Lease, runCtx context.Context, sigc <-chan os.Signal, args []string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r.env.Stdin, r.env.Stdout, r.env.Stderr
	if r.env.Environ != nil {
		cmd.Env = r.env.Environ()
		if lease != nil {
			cmd.Env = append(cmd.Env, "ALLOT_LEASE_ID="+lease.ID(),
				"ALLOT_FENCING_TOKEN="+strconv.FormatUint(lease.FencingToken(), 10))
		}
		if runCtx != nil {
			if id, ok := allot.RunFrom(runCtx); ok {
				cmd.Env = append(cmd.Env, "ALLOT_TASK_RUN_ID="+id)
			}
		}
	}
	ch, err := startChild(cmd, r.env, r.env.Self, killGrace)
	if err != nil {
		r.release(ctx, lease)
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
		return exitError{code: code, msg: "allot: " + err.Error()}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // received below before returning
	var (
		lost    error
		waitErr error
		kill    *time.Timer
		killC   <-chan time.Time
	)
	var done, runDone <-chan struct{}
	if lease != nil {
		done = lease.Done()
	}
	if runCtx != nil {
		runDone = runCtx.Done()
	}
	stop := func(err error) {
		done, runDone = nil, nil
		lost = err
		ch.signal(syscall.SIGTERM)
		kill = time.NewTimer(killGrace)
		killC = kill.C
	}
loop:
	for {
		select {
		case waitErr = <-exited:
			break loop
		case s := <-sigc:
			ch.signal(s)
		case <-done:
			stop(lease.Err())
		case <-runDone:
			stop(context.Cause(runCtx))
		case <-killC:
			killC = nil
			ch.signal(syscall.SIGKILL)
		}
	}
	ch.exited()
	if kill != nil {
		kill.Stop()
	}
	if lost != nil {
		// The lease is gone or expired: releasing it is a courtesy whose
		// failure says nothing new.
		if lease != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
			_ = lease.Release(rctx)
			cancel()
		}
		return exitError{code: ExitLeaseLost, msg: lostLine(lost) + "; the command was stopped"}
	}
	r.release(ctx, lease)
	if code := exitCode(cmd.ProcessState, waitErr); code != 0 {
		return exitError{code: code}
	}
	return nil
}

// lostLine is allot run's one line for a lease or task run lost while the
// command ran: how the server ended it, as the watch told, or why the
// renewals (heartbeats) failed.
func lostLine(err error) string {
	var ended *allot.LeaseEndedError
	if errors.As(err, &ended) {
		return "allot: " + ended.Error()
	}
	if err == nil {
		return "allot: lease lost"
	}
	return "allot: " + err.Error()
}

// exitCode is a finished command's exit code, 128+S if signal S killed it.
func exitCode(ps *os.ProcessState, waitErr error) int {
	if ps == nil {
		return ExitError
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ps.ExitCode(); code != 0 || waitErr == nil {
		return code
	}
	return ExitError // the command succeeded but its output could not be copied
}

// release gives the lease back; a failure is only a warning, as the lease
// expires anyway.
func (r *runner) release(ctx context.Context, lease *allot.Lease) {
	if lease == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
	defer cancel()
	if err := lease.Release(rctx); err != nil {
		fmt.Fprintf(r.env.Stderr, "allot: warning: could not release lease %s: %s; its slots come back when it expires\n",
			lease.ID(), describe(err, r.g.apiURL))
	}
}

// report says every StatusInterval, until ctx is done, who holds the
// limits and where this process stands in line.
func (r *runner) report(ctx context.Context, c *allot.Client, names []string, me allot.Identity) {
	every := r.env.StatusInterval
	if every <= 0 {
		every = statusEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var inLine, all []string
		for _, name := range names {
			l, err := c.GetLimit(ctx, name)
			if err != nil {
				continue
			}
			line, queued := waitStatus(l, me, time.Now())
			all = append(all, line)
			if queued {
				inLine = append(inLine, line)
			}
		}
		if len(inLine) > 0 {
			all = inLine
		}
		if ctx.Err() != nil {
			return
		}
		for _, line := range all {
			fmt.Fprintln(r.env.Stderr, line)
		}
	}
}

// waitStatus is one line on who holds l and where me stands in its line;
// queued reports whether me is in that line.
func waitStatus(l *allot.Limit, me allot.Identity, now time.Time) (line string, queued bool) {
	pos := 0
	for _, w := range l.Waiters {
		if w.Holder != nil && w.Holder.Kind == me.Kind && w.Holder.ID == me.ID {
			pos = w.Position
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "allot: waiting for '%s'", l.Name)
	if pos > 0 {
		fmt.Fprintf(&b, ": position %d of %d in line", pos, len(l.Waiters))
	}
	fmt.Fprintf(&b, "; %d/%d slots in use", l.ActiveSlots, l.Limit)
	for i, h := range l.Holders {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(l.Holders)-i)
			break
		}
		sep := ", "
		if i == 0 {
			sep = ", held by "
		}
		fmt.Fprintf(&b, "%s%s (%d slot(s) for %s, lease %s)", sep, holderName(h.Holder), h.Slots, human(now.Sub(h.Since)), h.LeaseID)
	}
	return b.String(), pos > 0
}

// parseLimitFlags splits --limit NAME[:SLOTS] values into names and the
// one slot count they share.
func parseLimitFlags(specs []string) (names []string, slots int, err error) {
	first := ""
	for _, s := range specs {
		name, n := s, 1
		if i := strings.LastIndexByte(s, ':'); i >= 0 && isDigits(s[i+1:]) {
			v, err := strconv.Atoi(s[i+1:])
			if err != nil {
				return nil, 0, usagef("--limit %q: %v", s, err)
			}
			name, n = s[:i], v
		}
		switch {
		case name == "":
			return nil, 0, usagef("--limit %q: the name is empty", s)
		case n < 1:
			return nil, 0, usagef("--limit %q: SLOTS must be at least 1", s)
		case slots != 0 && n != slots:
			return nil, 0, usagef("--limit %s and --limit %s take different numbers of slots, but allot acquires all limits "+
				"in one request, which takes one slot count for every limit: give every --limit the same SLOTS", first, s)
		}
		if slots == 0 {
			slots, first = n, s
		}
		names = append(names, name)
	}
	return names, max(slots, 1), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// holderID is id, or this process's hostname:pid.
func holderID(id string) string {
	if id != "" {
		return id
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// quoteNames is 'a', 'b' and 'c'.
func quoteNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
