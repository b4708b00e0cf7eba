package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// tagPrefix starts the name of the limit of a tag: the tag "database" is
// limited by the limit "tag:database", as in Prefect 3.
const tagPrefix = "tag:"

// newTagCmd is allot concurrency-limit: Prefect's task-level tag limits.
// A tag's limit is the v2 limit "tag:TAG", managed through the SDK.
func newTagCmd(env Env, g *globals) *cobra.Command {
	cmd := group("concurrency-limit", []string{"concurrency-limits"}, "Manage task-level concurrency limits (limits of tags)")
	cmd.Long = `Manage task-level concurrency limits: the limit of a tag TAG is the global
concurrency limit named "tag:TAG", which task runs with that tag hold while
they run.`
	cmd.AddCommand(tagCreate(env, g), tagList(env, g), tagInspect(env, g), tagReset(env, g), tagDelete(env, g))
	return cmd
}

func tagNotFound(tag string) error {
	return fail("No concurrency limit found for the tag: %s", tag)
}

// tagLimit is the JSON of a tag's limit: Prefect's tag and
// concurrency_limit beside the v2 limit's fields.
type tagLimit struct {
	Tag              string `json:"tag"`
	ConcurrencyLimit int    `json:"concurrency_limit"`
	*allot.Limit
}

func tagCreate(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create TAG LIMIT",
		Short: "Create the limit of a tag, or change its number of slots",
		Long: `Create the limit of a tag, or, if the tag has one, change its number of
slots. This limit controls how many task runs with that tag may run at once.`,
		Example: "  allot concurrency-limit create database 10",
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := args[0]
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return usagef("LIMIT must be a whole number, not %q", args[1])
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if _, err := c.EnsureLimit(cmd.Context(), tagPrefix+tag, n); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, `Created concurrency limit with properties:
    tag - '%[1]s'
    concurrency_limit - %[2]d

Delete the concurrency limit:
    allot concurrency-limit delete '%[1]s'

Inspect the concurrency limit:
    allot concurrency-limit inspect '%[1]s'
`, tag, n)
			return nil
		},
	}
}

func tagList(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the limits of tags with their usage",
		Example: "  allot concurrency-limit ls",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var ls []*allot.Limit
			out := []tagLimit{}
			for l, err := range c.AllLimits(cmd.Context()) {
				if err != nil {
					return err
				}
				if tag, ok := strings.CutPrefix(l.Name, tagPrefix); ok {
					ls = append(ls, l)
					out = append(out, tagLimit{Tag: tag, ConcurrencyLimit: l.Limit, Limit: l})
				}
			}
			switch {
			case asJSON:
				return printJSON(env.Stdout, out)
			case len(ls) == 0:
				fmt.Fprintln(env.Stdout, "No concurrency limits found.")
				return nil
			}
			return limitsTable(env.Stdout, "TAG", ls, tagPrefix, time.Now())
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func tagInspect(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect TAG",
		Short: "Show the limit of a tag, its holders and its waiters",
		Example: `  allot concurrency-limit inspect database
  allot concurrency-limit inspect database -o json`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(tagPrefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := args[0]
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			l, err := c.GetLimit(cmd.Context(), tagPrefix+tag)
			switch {
			case errors.Is(err, allot.ErrNotFound):
				return tagNotFound(tag)
			case err != nil:
				return err
			case asJSON:
				return printJSON(env.Stdout, tagLimit{Tag: tag, ConcurrencyLimit: l.Limit, Limit: l})
			}
			now := time.Now()
			fields := append([][2]string{{"Concurrency limit ID", l.ID}, {"Tag", tag}, {"Name", l.Name}}, limitFields(l, now)...)
			return limitDetail(env.Stdout, fields, l, now)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func tagReset(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reset TAG",
		Short: "Reset the slots of a tag's limit that no lease holds",
		Long: `Reset the slots of a tag's limit that no lease holds (its active_slots level)
to 0. Slots held by leases stay held until their holders release them or the
leases expire.`,
		Example:           "  allot concurrency-limit reset database",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(tagPrefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			err = c.UpdateLimit(cmd.Context(), tagPrefix+tag, allot.LimitUpdate{ActiveSlots: new(0)})
			switch {
			case errors.Is(err, allot.ErrNotFound):
				return tagNotFound(tag)
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "Reset concurrency limit set on the tag: %s\n", tag)
			l, err := c.GetLimit(cmd.Context(), tagPrefix+tag)
			if err == nil && len(l.Holders) > 0 {
				fmt.Fprintf(env.Stderr, "Note: %d lease(s) still hold slots of it; they keep them until they are released or expire.\n", len(l.Holders))
			}
			return nil
		},
	}
}

func tagDelete(env Env, g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:               "delete TAG",
		Short:             "Delete the limit of a tag",
		Long:              "Delete the limit of a tag, after asking (unless --yes).",
		Example:           "  allot concurrency-limit delete database --yes",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(tagPrefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := args[0]
			if !yes && !confirm(env, "Are you sure you want to delete concurrency limit with tag '"+tag+"'?") {
				return fail("Aborted.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			err = c.DeleteLimit(cmd.Context(), tagPrefix+tag)
			switch {
			case errors.Is(err, allot.ErrNotFound):
				return tagNotFound(tag)
			case err != nil:
				return err
			}
			fmt.Fprintf(env.Stdout, "Deleted concurrency limit set on the tag: %s\n", tag)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
