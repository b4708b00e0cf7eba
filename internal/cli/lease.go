package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// leaseJSON is what allot acquire -o json prints.
type leaseJSON struct {
	LeaseID      string           `json:"lease_id"`
	FencingToken uint64           `json:"fencing_token"`
	Expires      time.Time        `json:"expires"`
	Limits       []allot.LimitRef `json:"limits"`
}

func newAcquireCmd(env Env, g *globals) *cobra.Command {
	var (
		slots         int
		timeout, dur  time.Duration
		holder, outFl string
		allowMissing  bool
		strict        bool
	)
	cmd := &cobra.Command{
		Use:   "acquire NAME...",
		Short: "Take slots of limits and print the lease id, for scripts that cannot wrap a command",
		Long: `Take --slots slots of every named limit, all at once or none, waiting in line
until they are free or --timeout passes (exit 3), and print the lease's id.

allot does not renew the lease: it lives --lease-duration unless 'allot renew
LEASE_ID' extends it. Give the slots back with 'allot release LEASE_ID'.

NAME is always the whole name: 'allot acquire resource:42' takes a slot of
the limit "resource:42" (or the one its template makes); the number of slots
is --slots. A NAME that does not exist, and that no template matches, is an
error (exit 5) and nothing is taken; with --allow-missing it is warned about
and skipped (if none of the names exist there is no lease: exit 5 all the
same).

Exit codes: 0 the lease id is printed; 1 error; 2 usage error; 3 not
acquired within --timeout; 5 a named limit does not exist.`,
		Example: `  lease=$(allot acquire warehouse --timeout 10m --lease-duration 30m) || exit
  ./load.sh
  allot release "$lease"`,
		Args: minArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, _ []string, s string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return g.limitNames(cmd, "", s)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := wantJSON(outFl)
			if err != nil {
				return err
			}
			if _, err := checkLimitFlags("NAME", args, slots); err != nil {
				return err
			}
			switch {
			case timeout < 0:
				return usagef("--timeout %s: must not be negative", timeout)
			case dur <= 0:
				return usagef("--lease-duration %s: must be positive", dur)
			case strict && allowMissing:
				return usagef("--strict and --allow-missing contradict each other")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if !allowMissing {
				if missing := absent(cmd.Context(), c, args); len(missing) > 0 {
					return missingLimits(cmd.Context(), c, missing, "")
				}
			}
			// Always strict for the SDK: a lease that holds nothing has no
			// id to print.
			opts := []allot.Option{allot.Occupy(slots), allot.LeaseDuration(dur),
				allot.Holder("process", holderID(holder), nil), allot.Strict()}
			if cmd.Flags().Changed("timeout") {
				opts = append(opts, allot.Timeout(timeout))
			}
			lease, err := acquireAll(cmd.Context(), c, args, allowMissing, "", env, opts)
			if err != nil {
				return acquireError(err, timeout)
			}
			lease.Detach()
			if asJSON {
				return printJSON(env.Stdout, leaseJSON{LeaseID: lease.ID(), FencingToken: lease.FencingToken(),
					Expires: lease.ExpiresAt().UTC(), Limits: lease.Limits()})
			}
			fmt.Fprintln(env.Stdout, lease.ID())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&slots, "slots", 1, "slots of every limit to take")
	f.DurationVar(&timeout, "timeout", 0, "exit 3 if the slots are not acquired within this time (default: wait as long as it takes)")
	f.DurationVar(&dur, "lease-duration", allot.DefaultLeaseDuration, "how long the lease lives unless renewed")
	f.StringVar(&holder, "holder-id", "", "the holder id others see in inspect (default hostname:pid)")
	f.BoolVar(&allowMissing, "allow-missing", false, "warn about a NAME that does not exist and skip it, instead of exit 5")
	f.BoolVar(&strict, "strict", false, "exit 5 if a limit does not exist (the default)")
	_ = f.MarkHidden("strict")
	outputFlag(cmd, &outFl)
	return cmd
}

func newReleaseCmd(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "release LEASE_ID",
		Short: "Give back the slots of a lease",
		Long: `Give back the slots of a lease taken with 'allot acquire'. As in Prefect, a
lease that has already expired or been released is not an error.`,
		Example: `  allot release "$lease"`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.ReleaseLease(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Released lease %s.\n", args[0])
			return nil
		},
	}
}

func newRenewCmd(env Env, g *globals) *cobra.Command {
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   "renew LEASE_ID",
		Short: "Extend a lease",
		Long: `Extend a lease taken with 'allot acquire' to --lease-duration from now (by
default, the duration it was granted with). A lease that expired or was
released cannot be renewed (exit 1): its slots may be someone else's now.`,
		Example: `  allot renew "$lease" --lease-duration 30m`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if dur < 0 {
				return usagef("--lease-duration %s: must not be negative", dur)
			}
			return onLease(env, g, id, "Renewed", ", and its slots may be held by others now", func(c *allot.Client) error {
				return c.RenewLease(cmd.Context(), id, dur)
			})
		},
	}
	cmd.Flags().DurationVar(&dur, "lease-duration", 0, "the lease's new duration from now (default: the one it was granted with)")
	return cmd
}

func newRevokeCmd(env Env, g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke LEASE_ID",
		Short: "Take a lease away from its holder",
		Long: `Take a lease away from its holder, as an operator: its slots go to the next
waiters at once, and its holder hears of it within about a second: allot run
stops its command (SIGTERM, SIGKILL after 10 s) and exits 4, an SDK lease is
lost and its function's context cancelled, and a task run that held it is
Crashed with --reason as its message. A lease that is not held (it expired
or was released) is an error (exit 1).`,
		Example: `  allot revoke 0197a000-0000-7000-8000-000000000001 --reason "stuck job"`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return onLease(env, g, id, "Revoked", "", func(c *allot.Client) error {
				return c.RevokeLease(cmd.Context(), id, reason)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to the holder (default \"revoked by an operator\")")
	return cmd
}

// onLease runs op, a change to lease id, and says it was done ("Renewed
// lease …."); a lease that is not held is an error (exit 1) whose message
// ends with more.
func onLease(env Env, g *globals, id, done, more string, op func(*allot.Client) error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	err = op(c)
	if errors.Is(err, allot.ErrLeaseNotFound) {
		return fmt.Errorf("lease %s not found: it expired or was released%s", id, more)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s lease %s.\n", done, id)
	return nil
}
