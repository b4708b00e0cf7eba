// Package cli is allot's command line: one cobra command tree built per
// invocation from the environment it is given (no package-level commands or
// flags). Commands decode their flags, call the server package or the SDK,
// and print; they hold no business rules.
//
// Exit codes: 0 success, 1 error, 2 usage error, 3 slots not acquired in
// time.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNotAcquired = 3
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// usageError marks a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	root := New(env)
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(env.Stderr, "Error:", err)
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintln(env.Stderr, "Run 'allot --help' for usage.")
		return ExitUsage
	}
	return ExitError
}

// New builds the command tree.
func New(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "allot",
		Short: "allot limits how many units of work run at once and how often they start",
		Long: `allot is a coordination server that limits how many units of work run at once
and how often they start, across processes, hosts and languages.

Exit codes: 0 ok, 1 error, 2 usage error, 3 slots not acquired in time.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServerCmd(env))
	return root
}

// noArgs is cobra.NoArgs with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return usageError{err}
	}
	return nil
}
