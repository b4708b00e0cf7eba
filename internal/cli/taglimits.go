package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// tagPrefix starts the name of the limit of a tag: the tag "database" is
// limited by the limit "tag:database", as in Prefect 3.
var tagPrefix = allot.KindTag.LimitPrefix()

// labelPrefix starts the name of the limit of a flow run's label.
var labelPrefix = allot.KindLabel.LimitPrefix()

// tagLimitKind is what differs between the commands of tags' limits (allot
// concurrency-limit) and labels' limits (allot label-limit): names, texts
// and the SDK's handle.
type tagLimitKind struct {
	cmd     string // the command's name
	runs    string // "Task Run" or "Flow Run"
	example string // an example name
	kind    allot.TagLimitKind
	api     func(c *allot.Client) allot.TagLimits // Client.Tags or Client.Labels
}

func tagKind() tagLimitKind {
	return tagLimitKind{cmd: "concurrency-limit", runs: "Task Run", example: "database", kind: allot.KindTag, api: (*allot.Client).Tags}
}

func labelKind() tagLimitKind {
	return tagLimitKind{cmd: "label-limit", runs: "Flow Run", example: "gpu", kind: allot.KindLabel, api: (*allot.Client).Labels}
}

// noun is "tag" or "label".
func (k tagLimitKind) noun() string { return string(k.kind) }

// newTagCmd is allot concurrency-limit: Prefect's task-level tag limits.
func newTagCmd(env Env, g *globals) *cobra.Command {
	k := tagKind()
	cmd := group(k.cmd, []string{"concurrency-limits"}, "Manage task-level concurrency limits (limits of tags)")
	cmd.Long = `Manage task-level concurrency limits: the limit of a tag TAG bounds how many
task runs with that tag run at once. It is the global concurrency limit named
"tag:TAG".`
	cmd.AddCommand(k.createCmd(env, g), k.listCmd(env, g), k.inspectCmd(env, g), k.resetCmd(env, g), k.deleteCmd(env, g))
	return cmd
}

// newLabelCmd is allot label-limit: the limits of flow runs' labels.
func newLabelCmd(env Env, g *globals) *cobra.Command {
	k := labelKind()
	cmd := group(k.cmd, []string{"label-limits"}, "Manage flow-level concurrency limits (limits of labels)")
	cmd.Long = `Manage flow-level concurrency limits: the limit of a label LABEL bounds how
many flow runs with that label run at once. It is the global concurrency limit
named "label:LABEL".`
	cmd.AddCommand(k.createCmd(env, g), k.listCmd(env, g), k.inspectCmd(env, g), k.resetCmd(env, g), k.deleteCmd(env, g))
	return cmd
}

// notFound maps a limit not found to Prefect's message.
func (k tagLimitKind) notFound(key string, err error) error {
	if errors.Is(err, allot.ErrLimitNotFound) {
		return fail("No concurrency limit found for the %s: %s", k.noun(), key)
	}
	return err
}

func (k tagLimitKind) upper() string { return strings.ToUpper(k.noun()) }

func (k tagLimitKind) createCmd(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create " + k.upper() + " LIMIT",
		Short: "Create the limit of a " + k.noun() + ", or change its number of slots",
		Long: `Create the limit of a ` + k.noun() + `, or, if the ` + k.noun() + ` has one, change its number of
slots. This limit controls how many ` + strings.ToLower(k.runs) + `s with that ` + k.noun() + ` may run at once.`,
		Example:     "  allot " + k.cmd + " create " + k.example + " 10",
		Args:        exactArgs(2),
		Annotations: map[string]string{negativeArgsAnnotation: "true"},
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return usagef("LIMIT must be a whole number, not %q", args[1])
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if _, err := k.api(c).Create(cmd.Context(), key, n); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, `Created concurrency limit with properties:
    %[3]s - '%[1]s'
    concurrency_limit - %[2]d

Delete the concurrency limit:
    allot %[4]s delete '%[1]s'

Inspect the concurrency limit:
    allot %[4]s inspect '%[1]s'
`, key, n, k.noun(), k.cmd)
			return nil
		},
	}
}

func (k tagLimitKind) listCmd(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the limits of " + k.noun() + "s with the number of runs holding them",
		Example: "  allot " + k.cmd + " ls",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			ls, err := collect(k.api(c).All(cmd.Context()))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, ls)
			}
			if len(ls) == 0 {
				fmt.Fprintln(env.Stdout, "No concurrency limits found.")
				return nil
			}
			rows := make([][]string, len(ls))
			for i, l := range ls {
				rows[i] = []string{l.Name, l.ID, strconv.Itoa(l.ConcurrencyLimit), strconv.Itoa(len(l.ActiveSlots))}
			}
			return table(env.Stdout, k.upper()+"\tID\tCONCURRENCY LIMIT\tACTIVE "+strings.ToUpper(k.runs)+"S", rows)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func (k tagLimitKind) inspectCmd(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect " + k.upper(),
		Short: "Show the limit of a " + k.noun() + ", the " + strings.ToLower(k.runs) + "s holding it and those waiting",
		Example: "  allot " + k.cmd + " inspect " + k.example + `
  allot ` + k.cmd + " inspect " + k.example + " -o json",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.kind.LimitPrefix()),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			l, err := k.api(c).Get(cmd.Context(), key)
			if err != nil {
				return k.notFound(key, err)
			}
			if asJSON {
				return printJSON(env.Stdout, l)
			}
			// The line is an allot extension the v1 route only counts;
			// the limit's v2 view lists it.
			var waiters []allot.Waiter
			why := ""
			if l.Waiting > 0 {
				v2, err := c.GetLimit(cmd.Context(), k.kind.LimitPrefix()+key)
				if err != nil && !errors.Is(err, allot.ErrLimitNotFound) {
					return err
				}
				if v2 != nil {
					waiters, why = v2.Waiters, v2.WhyWaiting
				}
			}
			return k.detail(env.Stdout, l, waiters, why, k.runNames(cmd.Context(), c, l, waiters), time.Now())
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

// detail prints a limit, the runs holding it (and other leases, if any)
// and the line.
// maxNamed bounds how many runs inspect looks up by name.
const maxNamed = 100

// runNames reads the names of the runs holding or waiting for the limit,
// the first maxNamed of them; a run that cannot be read keeps no name.
func (k tagLimitKind) runNames(ctx context.Context, c *allot.Client, l *allot.TagLimit, waiters []allot.Waiter) map[string]string {
	names := map[string]string{}
	look := func(h *allot.Identity) {
		if h == nil || h.Kind != k.kind.HolderType() || len(names) >= maxNamed {
			return
		}
		if _, done := names[h.ID]; done {
			return
		}
		names[h.ID] = ""
		if r, err := c.GetRun(ctx, h.ID); err == nil {
			names[h.ID] = r.Name
		}
	}
	for _, h := range l.Holders {
		look(h.Holder)
	}
	for _, wt := range waiters {
		look(wt.Holder)
	}
	return names
}

func (k tagLimitKind) detail(w io.Writer, l *allot.TagLimit, waiters []allot.Waiter, why string, names map[string]string, now time.Time) error {
	held := 0
	var runs, others [][]string
	for _, h := range l.Holders {
		held += h.Slots
		if h.Holder != nil && h.Holder.Kind == k.kind.HolderType() {
			runs = append(runs, []string{orDash(names[h.Holder.ID]), h.Holder.ID, ago(h.Since, now), until(h.Expires, now)})
			continue
		}
		others = append(others, []string{h.LeaseID, holderName(h.Holder), strconv.Itoa(h.Slots), ago(h.Since, now), until(h.Expires, now)})
	}
	tw := newFieldWriter(w)
	for _, f := range [][2]string{
		{"Concurrency limit ID", l.ID},
		{strings.ToUpper(k.noun()[:1]) + k.noun()[1:], l.Name},
		{"Concurrency limit", strconv.Itoa(l.ConcurrencyLimit)},
		{"Active", strconv.FormatBool(l.Active)},
		{"Active slots", fmt.Sprintf("%d/%d", held, l.ConcurrencyLimit)},
		{"Waiting", strconv.Itoa(l.Waiting)},
		{"Created", stamp(l.Created, now)},
		{"Updated", stamp(l.Updated, now)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	title := "Active " + k.runs + " IDs"
	if len(runs) == 0 {
		fmt.Fprintln(w, title+": none")
	} else {
		fmt.Fprintln(w, title+":")
		if err := table(w, "NAME\t"+strings.ToUpper(k.runs)+" ID\tSINCE\tEXPIRES", runs); err != nil {
			return err
		}
	}
	if len(others) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Other leases:")
		if err := table(w, "LEASE ID\tHOLDER\tSLOTS\tSINCE\tEXPIRES", others); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if why != "" {
		fmt.Fprintf(w, "Why the first in line waits: %s.\n\n", why)
	}
	return waitersTable(w, waiters, "POSITION\tNAME\t"+strings.ToUpper(k.runs)+" ID / HOLDER\tWAITING SINCE", func(wt allot.Waiter) []string {
		name, holder := "-", holderName(wt.Holder)
		if wt.Holder != nil && wt.Holder.Kind == k.kind.HolderType() {
			name, holder = orDash(names[wt.Holder.ID]), wt.Holder.ID
		}
		return []string{strconv.Itoa(wt.Position), name, holder, ago(wt.WaitingSince, now)}
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (k tagLimitKind) resetCmd(env Env, g *globals) *cobra.Command {
	var override []string
	cmd := &cobra.Command{
		Use:   "reset " + k.upper(),
		Short: "Revoke every lease on the limit of a " + k.noun(),
		Long: `Revoke every lease on the limit of a ` + k.noun() + `: the runs holding its slots lose
them (they are Crashed) and the runs waiting in line take them. Each
--slot-override run id then gets a slot while one is free.`,
		Example: "  allot " + k.cmd + " reset " + k.example + `
  allot ` + k.cmd + " reset " + k.example + " --slot-override 3c90c3cc-0d44-4b50-8888-8dd25736052a",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.kind.LimitPrefix()),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := k.api(c).Reset(cmd.Context(), key, override)
			if err != nil {
				return k.notFound(key, err)
			}
			fmt.Fprintf(env.Stdout, "Reset concurrency limit set on the %s: %s\n", k.noun(), key)
			if res.Revoked > 0 {
				fmt.Fprintf(env.Stderr, "Revoked %d lease(s) holding it.\n", res.Revoked)
			}
			for _, id := range res.Granted {
				fmt.Fprintf(env.Stdout, "Granted a slot to %s.\n", id)
			}
			for _, id := range res.Refused {
				fmt.Fprintf(env.Stderr, "No free slot for %s.\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&override, "slot-override", nil, "give this run id a slot after the reset, if one is free (repeatable)")
	return cmd
}

func (k tagLimitKind) deleteCmd(env Env, g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:               "delete " + k.upper(),
		Short:             "Delete the limit of a " + k.noun(),
		Long:              "Delete the limit of a " + k.noun() + ", after asking (unless --yes).",
		Example:           "  allot " + k.cmd + " delete " + k.example + " --yes",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.kind.LimitPrefix()),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if !yes && !confirm(env, "Are you sure you want to delete concurrency limit with "+k.noun()+" '"+key+"'?") {
				return fail("Aborted.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := k.api(c).Delete(cmd.Context(), key); err != nil {
				return k.notFound(key, err)
			}
			fmt.Fprintf(env.Stdout, "Deleted concurrency limit set on the %s: %s\n", k.noun(), key)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
