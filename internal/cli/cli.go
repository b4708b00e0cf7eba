// Package cli is allot's command line: one cobra command tree built per
// invocation from the environment it is given (no package-level commands or
// flags). Commands decode their flags, call the server package or the SDK,
// and print; they hold no business rules. What a limit is, who holds it and
// who waits is the server's to say; the commands only show it.
//
// Exit codes: 0 success, 1 error, 2 usage error, 3 slots not acquired in
// time, 4 a lease lost or revoked while allot run's command ran, 5 a named
// limit does not exist; allot run passes its command's exit code through.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNotAcquired = 3
	// ExitLeaseLost: the lease (or the task run) was lost or revoked while
	// the command ran, and allot stopped the command.
	ExitLeaseLost = 4
	// ExitMissing: a named limit does not exist and no template matches
	// it (allot run, allot acquire); nothing was run or taken.
	ExitMissing = 5
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Environ is the environment allot run's command starts with (plus
	// ALLOT_LEASE_ID and ALLOT_FENCING_TOKEN). If nil, the command
	// inherits allot's environment unchanged.
	Environ func() []string
	// StderrIsTerminal reports whether Stderr is a terminal, where allot
	// run reports who it waits for. Nil means it is not.
	StderrIsTerminal func() bool
	// StatusInterval is how often allot run reports while it waits on a
	// terminal; zero means every 2 s.
	StatusInterval time.Duration
	// Self is the allot executable. On Linux allot run starts it as the
	// guard of its command's process group, which stops the group if allot
	// dies; empty starts no guard (the command alone dies with allot).
	Self string
}

// usageError marks a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError ends the command with code after printing msg, as it is, on
// stderr (nothing if msg is empty). Prefect's messages ("Global
// concurrency limit 'x' not found.") and allot run's outcomes use it.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// fail is an exitError with code 1.
func fail(format string, args ...any) error {
	return exitError{code: ExitError, msg: fmt.Sprintf(format, args...)}
}

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	root, g := build(env)
	root.SetArgs(negativeArgs(root, args))
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	g.close()
	if err == nil {
		return ExitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(env.Stderr, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(env.Stderr, "Error:", describe(err, g.apiURL))
	var ue usageError
	if errors.As(err, &ue) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(env.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	}
	return ExitError
}

// negativeArgsAnnotation marks a command whose positional arguments may be
// negative numbers ("create db -1"), which the flag parser would otherwise
// take for shorthand flags; the command then checks their range itself.
const negativeArgsAnnotation = "allot/negative-args"

// negativeArgs moves the negative numbers among the arguments of such a
// command after a "--", so that they reach it as arguments, in order. A
// number right after a flag is that flag's value and stays.
func negativeArgs(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd.Annotations[negativeArgsAnnotation] == "" || slices.Contains(args, "--") {
		return args
	}
	var kept, moved []string
	for i, a := range args {
		prev := ""
		if i > 0 {
			prev = args[i-1]
		}
		if isNegativeNumber(a) && !(strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=")) {
			moved = append(moved, a)
			continue
		}
		kept = append(kept, a)
	}
	if len(moved) == 0 {
		return args
	}
	return append(append(kept, "--"), moved...)
}

// isNegativeNumber reports whether s is "-" and digits.
func isNegativeNumber(s string) bool { return len(s) > 1 && s[0] == '-' && isDigits(s[1:]) }

// describe is the one line an error is shown as: the server's own words
// for an answer, where the server is for a connection that failed, the
// error otherwise.
func describe(err error, apiURL string) string {
	var ae *allot.APIError
	if errors.As(err, &ae) {
		d := ae.Detail
		if ae.Field != "" && !strings.Contains(d, ae.Field) {
			d += " (field " + ae.Field + ")"
		}
		if hint := apiURLHint(ae, apiURL); hint != "" {
			d += "; " + hint
		}
		if ae.Status == http.StatusUnauthorized {
			d += " (set " + allot.EnvAPIKey + " or --api-key)"
		}
		return d
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Sprintf("cannot reach the allot server at %s: %v", apiURL, ue.Err)
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	return err.Error()
}

// apiURLHint is a hint for a 404 that is no answer of allot's API (an
// unknown route, not a limit or run that was not found) when --api-url does
// not end in /api: the usual mistake is to give the server's root.
func apiURLHint(ae *allot.APIError, apiURL string) string {
	if ae.Status != http.StatusNotFound || (ae.Code != "" && ae.Code != "not_found") {
		return ""
	}
	u, err := url.Parse(apiURL)
	if err != nil || strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/api") {
		return ""
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api"
	u.RawQuery, u.Fragment = "", ""
	return fmt.Sprintf("the server has no such route at --api-url %s: did you mean %s?", apiURL, u)
}

const rootLong = `allot is a coordination server that limits how many units of work run at once
and how often they start, across processes, hosts and languages.

The commands other than 'server' talk to the server at --api-url
(ALLOT_API_URL, default http://127.0.0.1:4200/api), sending --api-key
(ALLOT_API_KEY) as a bearer token.

Exit codes:
  0    success
  1    error (the server refused, the server could not be reached, ...)
  2    usage error (unknown command or flag, bad arguments)
  3    slots not acquired within --timeout (allot run, allot acquire)
  4    allot run: the lease (or task run) was lost or revoked while the
       command ran, and allot stopped the command
  5    a named limit does not exist and no template matches it (allot run,
       allot acquire); nothing was run
  N    allot run: the command's own exit code (128+S if signal S killed it)`

// New builds the command tree.
func New(env Env) *cobra.Command {
	root, _ := build(env)
	return root
}

func build(env Env) (*cobra.Command, *globals) {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	g := &globals{}
	root := &cobra.Command{
		Use:           "allot",
		Short:         "allot limits how many units of work run at once and how often they start",
		Long:          rootLong,
		Args:          noArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       readBuildInfo().String(),
	}
	root.SetVersionTemplate("{{.Version}}")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.apiURL, "api-url", envOr(env, allot.EnvURL, allot.DefaultURL), "the allot API's URL, or several replicas' URLs separated by commas (env "+allot.EnvURL+")")
	pf.StringVar(&g.apiKey, "api-key", "", "API key, sent as a bearer token (env "+allot.EnvAPIKey+")")
	g.env, g.keyGiven = env, func() bool { return pf.Changed("api-key") }
	root.AddCommand(
		newServerCmd(env),
		newGCLCmd(env, g),
		newTagCmd(env, g),
		newLabelCmd(env, g),
		newRunCmd(env, g),
		newAcquireCmd(env, g),
		newReleaseCmd(env, g),
		newRenewCmd(env, g),
		newRevokeCmd(env, g),
		newWatchCmd(env, g),
		newKeyCmd(env, g),
		newAuditCmd(env, g),
		newGuardCmd(),
		newVersionCmd(env),
	)
	return root, g
}

// group returns a command that only holds subcommands: run without one it
// prints its help; with an unknown one it is a usage error.
func group(use string, aliases []string, short string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// noArgs is cobra.NoArgs with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return usageError{err}
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// minArgs is cobra.MinimumNArgs with a usage error.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MinimumNArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
