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
	"github.com/allot-dev/allot/internal/sema"
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

allot run takes --slots (default 1) slots of every --limit, all at once or
none, waiting in line (first in, first out) until they are free or --timeout
passes. Then it takes one slot of every --rate limit, and runs the command
with allot's stdin, stdout and stderr, and with ALLOT_LEASE_ID and
ALLOT_FENCING_TOKEN in its environment. The lease is renewed in the
background every third of --lease-duration; when the command exits the slots
are released and allot exits with the command's exit code (128+S if signal S
killed it). SIGINT and SIGTERM sent to allot are passed on to the command.
While it waits with stderr on a terminal, allot says every 2 s who holds the
slots and where it stands in line. No terminal is needed: allot run works
from cron and CI.

--limit NAME is always the whole name: --limit resource:42 holds the limit
"resource:42" (or the one its template makes). The number of slots is
--slots, the same for every --limit (one request carries one slot count).

With --tag, the command runs as a task run with those tags, named --name
(default: the command's name): allot creates the run and waits until every
limited tag and every --limit has room, all in one wait (the run holds none
of them until it has them all, and a --limit slot is never shared with a
parent run), then takes the --rate slots, and runs the command with
ALLOT_TASK_RUN_ID (and the run's lease as ALLOT_LEASE_ID) in its
environment. With --label it
runs as a flow run under label limits instead, with ALLOT_FLOW_RUN_ID.
While it waits with stderr on a terminal, allot says every 2 s where the run
stands in each full tag's line, and who holds the tag. The run heartbeats every
third of --lease-duration and ends Completed or Failed by the command's exit
code; if allot dies it is Crashed when its lease expires. A run whose slots
are revoked (a reset) stops the command as a lost lease does. A tag or label
without a limit is not limited (as in Prefect).

A --limit or --rate that does not exist, and that no template matches, is
an error (exit 5): nothing is run. With --allow-missing, allot warns and
runs the command without that limit's slots, as Prefect does.

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
command ran; 5 a named limit does not exist; 126 the command could not be
executed, 127 it was not found; 128+S if signal S interrupted allot while it
waited.`

// runner is one allot run.
type runner struct {
	env Env
	g   *globals

	limits, tags, labels, rates []string
	slots                       int
	name                        string
	timeout, leaseDur           time.Duration
	hasTimeout                  bool
	holderID                    string
	allowMissing                bool
	// runLeaseID and runFence are the lease of the task run that holds the
	// --limit slots (with --tag or --label), for the command's environment.
	runLeaseID string
	runFence   uint64
}

func newRunCmd(env Env, g *globals) *cobra.Command {
	r := &runner{env: env, g: g}
	var strict bool
	cmd := &cobra.Command{
		Use:   "run [--limit NAME]... [--slots N] [--tag TAG]... [--label LABEL]... [--rate NAME]... [flags] -- COMMAND [ARG...]",
		Short: "Run a command while holding slots of limits",
		Long:  runLong,
		Example: `  allot run --limit warehouse -- ./load.sh
  allot run --limit db --slots 2 --rate github-api --timeout 10m -- make deploy
  allot run --limit resource:42 -- ./process.sh 42
  allot run --tag database --name nightly-load -- ./load.sh`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.hasTimeout = cmd.Flags().Changed("timeout")
			if r.allowMissing && strict {
				return usagef("--strict and --allow-missing contradict each other")
			}
			return r.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after COMMAND are the command's
	f.StringArrayVar(&r.limits, "limit", nil, "hold --slots slots of the limit NAME (the whole name) while the command runs (repeatable)")
	f.IntVar(&r.slots, "slots", 1, "slots of every --limit to take")
	f.StringArrayVar(&r.tags, "tag", nil, "run the command as a task run with this tag, admitted when the tag's limit has a free slot (repeatable)")
	f.StringArrayVar(&r.labels, "label", nil, "run the command as a flow run with this label, admitted when the label's limit has a free slot (repeatable)")
	f.StringVar(&r.name, "name", "", "the name of the task or flow run (--tag, --label; default: the command's name)")
	f.StringArrayVar(&r.rates, "rate", nil, "take one slot of the rate limit NAME before the command starts (repeatable)")
	f.DurationVar(&r.timeout, "timeout", 0, "exit 3 if the slots are not acquired within this time (default: wait as long as it takes)")
	f.DurationVar(&r.leaseDur, "lease-duration", allot.DefaultLeaseDuration, "how long the slots stay held if allot dies without releasing them")
	f.StringVar(&r.holderID, "holder-id", "", "the holder id others see in inspect (default hostname:pid)")
	f.BoolVar(&r.allowMissing, "allow-missing", false, "warn about a --limit or --rate that does not exist and run without it, instead of exit 5")
	f.BoolVar(&strict, "strict", false, "exit 5 if a limit does not exist (the default)")
	_ = f.MarkHidden("strict")
	_ = cmd.RegisterFlagCompletionFunc("limit", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, "", toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("rate", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, "", toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("tag", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, tagPrefix, toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("label", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return g.limitNames(cmd, labelPrefix, toComplete)
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
	names, err := checkLimitFlags("--limit", r.limits, r.slots)
	if err != nil {
		return err
	}
	if _, err := checkLimitFlags("--rate", r.rates, 1); err != nil {
		return err
	}
	switch {
	case len(names)+len(r.tags)+len(r.labels)+len(r.rates) == 0:
		return usagef("run needs at least one --limit, --tag, --label or --rate")
	case len(r.tags) > 0 && len(r.labels) > 0:
		return usagef("--tag and --label cannot be used together: a run is a task run (tags) or a flow run (labels)")
	case r.timeout < 0:
		return usagef("--timeout %s: must not be negative", r.timeout)
	case r.leaseDur <= 0:
		return usagef("--lease-duration %s: must be positive", r.leaseDur)
	case r.name != "" && len(r.tags)+len(r.labels) == 0:
		return usagef("--name names a task or flow run: give --tag or --label too")
	}
	c, err := r.g.client()
	if err != nil {
		return err
	}
	if !r.allowMissing {
		// A typo fails at once, before any wait or run.
		if missing := absent(ctx, c, names); len(missing) > 0 {
			return missingLimits(ctx, c, missing, "--limit")
		}
		if missing := absent(ctx, c, r.rates); len(missing) > 0 {
			return missingLimits(ctx, c, missing, "--rate")
		}
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	if len(r.tags)+len(r.labels) > 0 {
		return r.runTask(ctx, c, sigc, names, args)
	}
	lease, err := r.acquire(ctx, c, sigc, names)
	if err != nil {
		return err
	}
	return r.exec(ctx, lease, nil, sigc, args)
}

// errRunTimeout ends the wait of a task run after --timeout.
var errRunTimeout = errors.New("not admitted within --timeout")

// runTask runs the command as a task run with the --tag tags (or a flow
// run with the --label labels): the server admits it when each tag's limit
// has a free slot. Then, inside the run, it takes the --limit and --rate
// slots as allot run does without tags. The run heartbeats while the
// command runs and ends Completed or Failed by the command's exit code; if
// allot dies, the run is Crashed when its lease expires.
func (r *runner) runTask(ctx context.Context, c *allot.Client, sigc <-chan os.Signal, names []string, args []string) error {
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
	runFn, prefix, keys := c.RunTask, tagPrefix, r.tags
	if len(r.labels) > 0 {
		runFn, prefix, keys = c.RunFlow, labelPrefix, r.labels
	}
	// The --limit limits are the run's own: the server admits the run when
	// its tags' limits and these all have room, in one wait, so that it
	// holds none of them while it waits for another. The server refuses a
	// name that does not exist; with --allow-missing it is left out.
	if r.allowMissing {
		missing := absent(ctx, c, names)
		for _, n := range missing {
			fmt.Fprintf(r.env.Stderr, "allot: limit '%s' does not exist - skipping it\n", n)
		}
		names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(missing, n) })
	}
	opts := []allot.RunOption{allot.RunTags(keys...), allot.RunLeaseDuration(r.leaseDur)}
	if len(names) > 0 {
		opts = append(opts, allot.RunLimits(r.slots, names...))
	}
	// On a terminal, say where the run stands while it waits.
	created := make(chan string, 1)
	if r.env.StderrIsTerminal != nil && r.env.StderrIsTerminal() {
		rctx, stopReport := context.WithCancel(wctx)
		wg.Go(func() {
			select {
			case id := <-created:
				r.reportRun(rctx, c, prefix, keys, names, id)
			case <-rctx.Done():
			}
		})
		go func() { <-started; stopReport() }()
		defer stopReport()
	}
	admitted := func() {
		once.Do(func() {
			close(started)
			wg.Wait()
		})
	}
	name := r.name
	if name == "" {
		name = filepath.Base(args[0])
	}
	err := runFn(wctx, name, func(fctx context.Context) error {
		admitted()
		if wctx.Err() != nil {
			return context.Cause(wctx)
		}
		if id, ok := allot.RunFrom(fctx); ok && len(names) > 0 {
			// The command sees the lease that holds the --limit slots: the
			// run's.
			if run, err := c.GetRun(fctx, id); err == nil {
				r.runLeaseID, r.runFence = run.LeaseID, run.FencingToken
			}
		}
		var lease *allot.Lease
		if len(r.rates) > 0 {
			var err error
			if lease, err = r.acquire(fctx, c, sigc, nil); err != nil {
				return err
			}
		}
		return r.exec(fctx, lease, fctx, sigc, args)
	}, append(opts, allot.RunCreated(func(id string) {
		select {
		case created <- id:
		default:
		}
	}))...)
	admitted()
	var in interrupted
	switch {
	case err == nil:
		return nil
	case errors.As(err, &in):
		return exitError{code: signalExit(in.sig), msg: "allot: " + in.Error() + " before the command started"}
	case errors.Is(err, errRunTimeout):
		return exitError{code: ExitNotAcquired, msg: "allot: not acquired within " + r.timeout.String()}
	case errors.Is(err, allot.ErrLimitNotFound):
		// A limit deleted since the check in run.
		if missing := absent(ctx, c, names); len(missing) > 0 {
			return missingLimits(ctx, c, missing, "--limit")
		}
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
func (r *runner) acquire(ctx context.Context, c *allot.Client, sigc <-chan os.Signal, names []string) (*allot.Lease, error) {
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
	lease, err := r.take(actx, c, names, me)
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

// take acquires the lease, then the rate-limit slots. A limit that does
// not exist is an error unless --allow-missing.
func (r *runner) take(ctx context.Context, c *allot.Client, names []string, me allot.Identity) (*allot.Lease, error) {
	start := time.Now()
	opts := []allot.Option{allot.Occupy(r.slots), allot.LeaseDuration(r.leaseDur), allot.Holder(me.Kind, me.ID, nil)}
	if !r.allowMissing {
		opts = append(opts, allot.Strict())
	}
	if r.hasTimeout {
		opts = append(opts, allot.Timeout(r.timeout))
	}
	lease, err := acquireAll(ctx, c, names, r.allowMissing, "--limit", r.env, opts)
	if err != nil {
		return nil, acquireError(err, r.timeout)
	}
	if len(r.rates) == 0 {
		return lease, nil
	}
	var ropts []allot.Option
	if !r.allowMissing {
		ropts = append(ropts, allot.Strict())
	}
	if r.hasTimeout {
		ropts = append(ropts, allot.Timeout(r.timeout-time.Since(start)))
	}
	err = c.RateLimit(ctx, r.rates, ropts...)
	if errors.Is(err, allot.ErrLimitNotFound) {
		err = missingLimits(ctx, c, r.rates, "--rate")
	} else if err == nil && !r.allowMissing {
		// RateLimit skips a missing limit among others that exist: the
		// names it took now exist (a template made them), the others do not.
		var missing []string
		for _, n := range r.rates {
			if _, gerr := c.GetLimit(ctx, n); errors.Is(gerr, allot.ErrLimitNotFound) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			err = missingLimits(ctx, c, missing, "--rate")
		}
	}
	if err != nil {
		r.release(ctx, lease)
		return nil, acquireError(err, r.timeout)
	}
	return lease, nil
}

// acquireAll acquires the lease for names. Unless allowMissing, every name
// must be held (exist or match a template): otherwise the lease is given
// back and the error is missingLimits' (exit 5). With allowMissing a
// missing name is warned about and skipped. Callers check absent first,
// so that a typo does not wait for the limits that exist.
func acquireAll(ctx context.Context, c *allot.Client, names []string, allowMissing bool, flag string, env Env, opts []allot.Option) (*allot.Lease, error) {
	lease, err := c.Acquire(ctx, names, opts...)
	if errors.Is(err, allot.ErrLimitNotFound) {
		return nil, missingLimits(ctx, c, names, flag)
	}
	if err != nil {
		return nil, err
	}
	held := lease.Limits()
	var missing []string
	for _, n := range names {
		if !slices.ContainsFunc(held, func(l allot.LimitRef) bool { return l.Name == n }) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 || len(held) == 0 {
		return lease, nil // none held: the SDK has warned (--allow-missing)
	}
	if allowMissing {
		for _, n := range missing {
			fmt.Fprintf(env.Stderr, "allot: limit '%s' does not exist - skipping it\n", n)
		}
		return lease, nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
	_ = lease.Release(rctx)
	cancel()
	return nil, missingLimits(ctx, c, missing, flag)
}

// absent returns the names that neither exist nor match a template now,
// so that a typo fails at once rather than after a wait for the limits
// that exist. What the lease holds stays the final word (a limit may be
// deleted in between). A name that could not be read is not reported.
func absent(ctx context.Context, c *allot.Client, names []string) []string {
	var unknown []string
	for _, n := range names {
		if _, err := c.GetLimit(ctx, n); errors.Is(err, allot.ErrLimitNotFound) && !slices.Contains(unknown, n) {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	var templates []string
	for l, err := range c.AllLimits(ctx) {
		if err != nil {
			return nil
		}
		if l.Template {
			templates = append(templates, l.Name)
		}
	}
	return slices.DeleteFunc(unknown, func(n string) bool {
		return slices.ContainsFunc(templates, func(t string) bool { return sema.MatchPattern(t, n) })
	})
}

// missingLimits is the error for limits that do not exist and that no
// template matches: exit 5, with how to create them, and a hint when a
// name looks like the old NAME:SLOTS spelling of a limit that exists.
func missingLimits(ctx context.Context, c *allot.Client, names []string, flag string) error {
	var b strings.Builder
	if len(names) == 1 {
		fmt.Fprintf(&b, "allot: limit %q does not exist and no template matches it; create it with: allot gcl create %s --limit N",
			names[0], shellQuote(names[0]))
	} else {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = strconv.Quote(n)
		}
		fmt.Fprintf(&b, "allot: limits %s do not exist and no template matches them; create each with: allot gcl create NAME --limit N",
			strings.Join(q, ", "))
	}
	if flag == "--rate" {
		b.WriteString(" --slot-decay-per-second R")
	}
	if flag == "" {
		b.WriteString(" (or pass --allow-missing to skip it)")
	} else {
		b.WriteString(" (or pass --allow-missing to run without it)")
	}
	for _, n := range names {
		i := strings.LastIndexByte(n, ':')
		if i <= 0 || !isDigits(n[i+1:]) {
			continue
		}
		if _, err := c.GetLimit(ctx, n[:i]); err == nil {
			if flag == "" {
				fmt.Fprintf(&b, "; did you mean %s --slots %s?", shellQuote(n[:i]), n[i+1:])
			} else {
				fmt.Fprintf(&b, "; did you mean %s %s --slots %s?", flag, shellQuote(n[:i]), n[i+1:])
			}
		}
	}
	return exitError{code: ExitMissing, msg: b.String()}
}

// shellQuote quotes s for a shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:@+,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// acquireError is how allot run and allot acquire report a failed
// acquisition.
func acquireError(err error, timeout time.Duration) error {
	if errors.Is(err, allot.ErrTimeout) {
		return exitError{code: ExitNotAcquired, msg: "allot: not acquired within " + timeout.String()}
	}
	return err
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
			if r.runLeaseID != "" {
				cmd.Env = append(cmd.Env, "ALLOT_LEASE_ID="+r.runLeaseID,
					"ALLOT_FENCING_TOKEN="+strconv.FormatUint(r.runFence, 10))
			}
			if id, ok := allot.RunFrom(runCtx); ok {
				key := "ALLOT_TASK_RUN_ID="
				if len(r.labels) > 0 {
					key = "ALLOT_FLOW_RUN_ID="
				}
				cmd.Env = append(cmd.Env, key+id)
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
	r.every(ctx, func() {
		var inLine, all []string
		for _, name := range names {
			l, err := c.GetLimit(ctx, name)
			if err != nil {
				continue
			}
			line, queued := waitStatus(l, "'"+name+"'", me, time.Now())
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
	})
}

// reportRun says every StatusInterval, until ctx is done, where the run id
// stands: for each full limit of its tags (or labels) keys and of its own
// limits names, who holds it and where the run stands in its line; if none
// is full, the state the server gives the run.
func (r *runner) reportRun(ctx context.Context, c *allot.Client, prefix string, keys, names []string, id string) {
	kind, noun := "task_run", "tag"
	if prefix == labelPrefix {
		kind, noun = "flow_run", "label"
	}
	me := allot.Identity{Kind: kind, ID: id}
	r.every(ctx, func() {
		var lines []string
		for _, k := range keys {
			l, err := c.GetLimit(ctx, prefix+k)
			if err != nil {
				continue // a tag without a limit does not hold the run back
			}
			line, queued := waitStatus(l, fmt.Sprintf("%s '%s'", noun, k), me, time.Now())
			if queued || l.ActiveSlots >= l.Limit {
				lines = append(lines, line)
			}
		}
		for _, n := range names {
			l, err := c.GetLimit(ctx, n)
			if err != nil {
				continue
			}
			line, queued := waitStatus(l, "'"+n+"'", me, time.Now())
			if queued || l.ActiveSlots >= l.Limit {
				lines = append(lines, line)
			}
		}
		if len(lines) == 0 {
			if run, err := c.GetRun(ctx, id); err == nil && len(run.StateHistory) > 0 {
				last := run.StateHistory[len(run.StateHistory)-1]
				line := "allot: run " + id + " is " + last.State
				if last.Message != "" {
					line += ": " + last.Message
				}
				lines = append(lines, line)
			}
		}
		if ctx.Err() != nil {
			return
		}
		for _, line := range lines {
			fmt.Fprintln(r.env.Stderr, line)
		}
	})
}

// every calls f every StatusInterval until ctx is done.
func (r *runner) every(ctx context.Context, f func()) {
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
		f()
	}
}

// waitStatus is one line on who holds l (shown as what) and where me
// stands in its line; queued reports whether me is in that line.
func waitStatus(l *allot.Limit, what string, me allot.Identity, now time.Time) (line string, queued bool) {
	pos := 0
	for _, w := range l.Waiters {
		if w.Holder != nil && w.Holder.Kind == me.Kind && w.Holder.ID == me.ID {
			pos = w.Position
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "allot: waiting for %s", what)
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

// checkLimitFlags checks the names of --limit (or --rate) and the slot
// count they share, and returns the names, each whole: a name is never
// split.
func checkLimitFlags(flag string, names []string, slots int) ([]string, error) {
	if slots < 1 {
		return nil, usagef("--slots %d: must be at least 1", slots)
	}
	for _, n := range names {
		if n == "" {
			return nil, usagef("%s: the name is empty", flag)
		}
	}
	return names, nil
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
