package cli

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// newGCLCmd is allot global-concurrency-limit (gcl): Prefect's commands
// of the same name, on the v2 API.
func newGCLCmd(env Env, g *globals) *cobra.Command {
	cmd := group("global-concurrency-limit", []string{"gcl"}, "Manage global concurrency limits")
	cmd.AddCommand(
		gclCreate(env, g), gclList(env, g), gclInspect(env, g), gclUpdate(env, g),
		gclEnable(env, g, true), gclEnable(env, g, false), gclDelete(env, g),
	)
	return cmd
}

func gclNotFound(name string) error {
	return fail("Global concurrency limit '%s' not found.", name)
}

func gclCreate(env Env, g *globals) *cobra.Command {
	var (
		spec     allot.LimitSpec
		disabled bool
		idle     float64
	)
	cmd := &cobra.Command{
		Use:   "create NAME --limit N",
		Short: "Create a global concurrency limit",
		Example: `  allot gcl create my-concurrency-limit --limit 5
  allot gcl create my-rate-limit --limit 5 --slot-decay-per-second 1.0`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("limit") {
				return usagef("Missing option '--limit' / '-l'.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			spec.Name, spec.Disabled = args[0], disabled
			if cmd.Flags().Changed("idle-seconds") {
				spec.IdleSeconds = &idle
			}
			l, err := c.CreateLimit(cmd.Context(), spec)
			switch {
			case errors.Is(err, allot.ErrConflict):
				return fail("Global concurrency limit '%s' already exists. Please try creating with a different name.", spec.Name)
			case errors.Is(err, allot.ErrInvalid):
				return fail("Invalid arguments provided: %s", describe(err, g.apiURL))
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "Created global concurrency limit with name '%s' and ID '%s'. Run `allot gcl inspect %s` to view details.\n",
				l.Name, l.ID, l.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&spec.Limit, "limit", "l", 0, "the number of slots (required)")
	f.Float64Var(&spec.SlotDecayPerSecond, "slot-decay-per-second", 0, "make it a rate limit: slots come back at this rate")
	f.IntVar(&spec.ActiveSlots, "active-slots", 0, "slots taken from the start")
	f.BoolVar(&disabled, "disable", false, "create it inactive: it limits nothing until enabled")
	f.Float64Var(&idle, "idle-seconds", 0, "templates only: remove a limit the template creates after this long unused (0: never; default 3600)")
	return cmd
}

func gclList(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List global concurrency limits with their usage",
		Example: `  allot gcl ls
  allot gcl ls -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			ls, err := collect(c.AllLimits(cmd.Context()))
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return printJSON(env.Stdout, ls)
			case len(ls) == 0:
				fmt.Fprintf(env.Stdout, "No global concurrency limits found.\n")
				return nil
			}
			return limitsTable(env.Stdout, "NAME", ls, "", time.Now())
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func gclInspect(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a global concurrency limit, its holders and its waiters",
		Example: `  allot gcl inspect my-concurrency-limit
  allot gcl inspect my-concurrency-limit -o json`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			l, err := c.GetLimit(cmd.Context(), args[0])
			switch {
			case errors.Is(err, allot.ErrLimitNotFound):
				return gclNotFound(args[0])
			case err != nil:
				return err
			case asJSON:
				return printJSON(env.Stdout, l)
			}
			now := time.Now()
			fields := append([][2]string{{"Name", l.Name}, {"ID", l.ID}}, limitFields(l, now)...)
			return limitDetail(env.Stdout, fields, l, now)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func gclUpdate(env Env, g *globals) *cobra.Command {
	var (
		limit, activeSlots int
		decay, idle        float64
		enable, disable    bool
	)
	cmd := &cobra.Command{
		Use:   "update NAME [--limit N] [--slot-decay-per-second F] [--active-slots N] [--idle-seconds S] [--enable|--disable]",
		Short: "Change a global concurrency limit",
		Long: `Change a global concurrency limit. Lowering the limit never revokes held
leases: it only stops new grants until usage falls below it. --active-slots 0
resets a rate limit's level; slots held by leases stay held.`,
		Example: `  allot gcl update my-concurrency-limit --limit 10
  allot gcl update my-concurrency-limit --disable`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if enable && disable {
				return usagef("Cannot enable and disable a global concurrency limit at the same time.")
			}
			var u allot.LimitUpdate
			f := cmd.Flags()
			if f.Changed("limit") {
				u.Limit = &limit
			}
			if f.Changed("active-slots") {
				u.ActiveSlots = &activeSlots
			}
			if f.Changed("slot-decay-per-second") {
				u.SlotDecayPerSecond = &decay
			}
			if f.Changed("idle-seconds") {
				u.IdleSeconds = &idle
			}
			if enable || disable {
				u.Active = new(enable)
			}
			if u == (allot.LimitUpdate{}) {
				return fail("No update arguments provided.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			err = c.UpdateLimit(cmd.Context(), name, u)
			switch {
			case errors.Is(err, allot.ErrLimitNotFound):
				return gclNotFound(name)
			case errors.Is(err, allot.ErrInvalid):
				return fail("Error updating global concurrency limit: %s", describe(err, g.apiURL))
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "Updated global concurrency limit with name '%s'.\n", name)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&limit, "limit", "l", 0, "the number of slots")
	f.Float64Var(&decay, "slot-decay-per-second", 0, "the rate at which rate-limit slots come back (0: not a rate limit)")
	f.IntVar(&activeSlots, "active-slots", 0, "set the slots taken without a lease (0 resets a rate limit)")
	f.Float64Var(&idle, "idle-seconds", 0, "templates only: how long a limit the template creates may sit unused before it is removed (0: never)")
	f.BoolVar(&enable, "enable", false, "enable the limit")
	f.BoolVar(&disable, "disable", false, "disable the limit: it limits nothing until enabled")
	return cmd
}

// gclEnable is enable NAME (on) or disable NAME.
func gclEnable(env Env, g *globals, on bool) *cobra.Command {
	verb, done, state, short := "disable", "Disabled", "disabled", "Disable a global concurrency limit: it limits nothing until enabled"
	if on {
		verb, done, state, short = "enable", "Enabled", "enabled", "Enable a global concurrency limit"
	}
	return &cobra.Command{
		Use:               verb + " NAME",
		Short:             short,
		Example:           "  allot gcl " + verb + " my-concurrency-limit",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			l, err := c.GetLimit(cmd.Context(), name)
			if err == nil && l.Active == on {
				return fail("Global concurrency limit with name '%s' is already %s.", name, state)
			}
			if err == nil {
				err = c.UpdateLimit(cmd.Context(), name, allot.LimitUpdate{Active: new(on)})
			}
			switch {
			case errors.Is(err, allot.ErrLimitNotFound):
				return gclNotFound(name)
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "%s global concurrency limit with name '%s'.\n", done, name)
			return nil
		},
	}
}

func gclDelete(env Env, g *globals) *cobra.Command {
	var (
		yes, all, templates bool
		matching            string
	)
	cmd := &cobra.Command{
		Use:   "delete NAME | --matching PATTERN",
		Short: "Delete a global concurrency limit, or every limit matching a pattern",
		Long: `Delete a global concurrency limit, after asking (unless --yes). Leases that
hold it keep their other limits.

With --matching, delete every limit whose name matches PATTERN ('*' is any
run of characters, as in templates): it first counts them and asks
"Delete N limits matching PATTERN?". Templates are kept unless --templates;
a pattern that matches every name ('*') needs --all.`,
		Example: "  allot gcl delete my-concurrency-limit --yes\n" +
			"  allot gcl delete --matching 'resource:*'",
		Args: func(cmd *cobra.Command, args []string) error {
			if matching != "" || all {
				if len(args) != 0 {
					return usagef("give either NAME or --matching, not both")
				}
				return nil
			}
			return exactArgs(1)(cmd, args)
		},
		ValidArgsFunction: g.completeLimits(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if matching != "" || all {
				return gclDeleteMatching(cmd, env, g, allot.DeleteMatching{Pattern: matching, All: all, Templates: templates}, yes)
			}
			name := args[0]
			if !yes && !confirm(env, "Are you sure you want to delete global concurrency limit '"+name+"'?") {
				return fail("Aborted.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			err = c.DeleteLimit(cmd.Context(), name)
			switch {
			case errors.Is(err, allot.ErrLimitNotFound):
				return gclNotFound(name)
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "Deleted global concurrency limit with name '%s'.\n", name)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&matching, "matching", "", "delete every limit whose name matches this pattern ('*' is any run of characters)")
	cmd.Flags().BoolVar(&templates, "templates", false, "with --matching, delete matching templates too")
	cmd.Flags().BoolVar(&all, "all", false, "allow a pattern that matches every limit ('*', or no --matching)")
	return cmd
}

// gclDeleteMatching counts the limits d selects, asks, and deletes them.
// Limits created between the count and the delete are deleted too; the
// answer says how many were.
func gclDeleteMatching(cmd *cobra.Command, env Env, g *globals, d allot.DeleteMatching, yes bool) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	if !yes {
		dry := d
		dry.DryRun = true
		n, err := c.DeleteLimitsMatching(cmd.Context(), dry)
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintf(env.Stdout, "No limits match %s.\n", d.Pattern)
			return nil
		}
		if !confirm(env, fmt.Sprintf("Delete %s %s matching %s?", thousands(n), plural(n, "limit", "limits"), d.Pattern)) {
			return fail("Aborted.")
		}
	}
	n, err := c.DeleteLimitsMatching(cmd.Context(), d)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Deleted %s %s matching %s.\n", thousands(n), plural(n, "limit", "limits"), d.Pattern)
	return nil
}

// thousands writes n with commas between groups of three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
