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
const tagPrefix = "tag:"

// labelPrefix starts the name of the limit of a flow run's label.
const labelPrefix = "label:"

// tagLimitRow is a tag's or a label's limit as the commands show it; v is
// the SDK's value, printed by -o json.
type tagLimitRow struct {
	id, key          string
	concurrencyLimit int
	activeSlots      []string
	active           bool
	waiting          int
	holders          []allot.Holding
	created, updated time.Time
	v                any
}

func fromTag(l *allot.TagLimit) tagLimitRow {
	return tagLimitRow{id: l.ID, key: l.Tag, concurrencyLimit: l.ConcurrencyLimit, activeSlots: l.ActiveSlots,
		active: l.Active, waiting: l.Waiting, holders: l.Holders, created: l.Created, updated: l.Updated, v: l}
}

func fromLabel(l *allot.LabelLimit) tagLimitRow {
	return tagLimitRow{id: l.ID, key: l.Label, concurrencyLimit: l.ConcurrencyLimit, activeSlots: l.ActiveSlots,
		active: l.Active, waiting: l.Waiting, holders: l.Holders, created: l.Created, updated: l.Updated, v: l}
}

// tagLimitKind is what differs between the commands of tags' limits (allot
// concurrency-limit) and labels' limits (allot label-limit): names, texts
// and the SDK calls.
type tagLimitKind struct {
	cmd     string // the command's name
	noun    string // "tag" or "label"
	prefix  string // the prefix of the limit's name: "tag:" or "label:"
	holder  string // the holder type of the runs that hold it
	runs    string // "Task Run" or "Flow Run"
	example string // an example key

	// The SDK's calls, as method expressions: the client comes first.
	create func(c *allot.Client, ctx context.Context, key string, n int) (tagLimitRow, error)
	get    func(c *allot.Client, ctx context.Context, key string) (tagLimitRow, error)
	list   func(c *allot.Client, ctx context.Context, offset, n int) ([]tagLimitRow, error)
	reset  func(c *allot.Client, ctx context.Context, key string, override []string) (*allot.ResetResult, error)
	delete func(c *allot.Client, ctx context.Context, key string) error
}

// pageSize is the most limits one list call asks for.
const pageSize = 200

func tagKind() tagLimitKind {
	k := tagLimitKind{cmd: "concurrency-limit", noun: "tag", prefix: tagPrefix, holder: "task_run", runs: "Task Run", example: "database",
		reset: (*allot.Client).ResetTagLimit, delete: (*allot.Client).DeleteTagLimit}
	k.create, k.get, k.list = sdkCalls((*allot.Client).CreateTagLimit, (*allot.Client).GetTagLimit, (*allot.Client).ListTagLimits, fromTag)
	return k
}

func labelKind() tagLimitKind {
	k := tagLimitKind{cmd: "label-limit", noun: "label", prefix: labelPrefix, holder: "flow_run", runs: "Flow Run", example: "gpu",
		reset: (*allot.Client).ResetLabelLimit, delete: (*allot.Client).DeleteLabelLimit}
	k.create, k.get, k.list = sdkCalls((*allot.Client).CreateLabelLimit, (*allot.Client).GetLabelLimit, (*allot.Client).ListLabelLimits, fromLabel)
	return k
}

// sdkCalls adapts the SDK's calls for one kind of limit (T is
// allot.TagLimit or allot.LabelLimit) to tagLimitRow.
func sdkCalls[T any](
	create func(*allot.Client, context.Context, string, int) (*T, error),
	get func(*allot.Client, context.Context, string) (*T, error),
	list func(*allot.Client, context.Context, int, int) ([]*T, error),
	from func(*T) tagLimitRow,
) (
	func(*allot.Client, context.Context, string, int) (tagLimitRow, error),
	func(*allot.Client, context.Context, string) (tagLimitRow, error),
	func(*allot.Client, context.Context, int, int) ([]tagLimitRow, error),
) {
	one := func(l *T, err error) (tagLimitRow, error) {
		if err != nil {
			return tagLimitRow{}, err
		}
		return from(l), nil
	}
	return func(c *allot.Client, ctx context.Context, key string, n int) (tagLimitRow, error) {
			return one(create(c, ctx, key, n))
		},
		func(c *allot.Client, ctx context.Context, key string) (tagLimitRow, error) {
			return one(get(c, ctx, key))
		},
		func(c *allot.Client, ctx context.Context, offset, n int) ([]tagLimitRow, error) {
			ls, err := list(c, ctx, offset, n)
			out := make([]tagLimitRow, len(ls))
			for i, l := range ls {
				out[i] = from(l)
			}
			return out, err
		}
}

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
	cmd.AddCommand(k.createCmd(env, g), k.listCmd(env, g), k.inspectCmd(env, g), k.deleteCmd(env, g))
	return cmd
}

// notFound maps a limit not found to Prefect's message.
func (k tagLimitKind) notFound(key string, err error) error {
	if errors.Is(err, allot.ErrLimitNotFound) {
		return fail("No concurrency limit found for the %s: %s", k.noun, key)
	}
	return err
}

func (k tagLimitKind) upper() string { return strings.ToUpper(k.noun) }

func (k tagLimitKind) createCmd(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create " + k.upper() + " LIMIT",
		Short: "Create the limit of a " + k.noun + ", or change its number of slots",
		Long: `Create the limit of a ` + k.noun + `, or, if the ` + k.noun + ` has one, change its number of
slots. This limit controls how many ` + strings.ToLower(k.runs) + `s with that ` + k.noun + ` may run at once.`,
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
			if _, err := k.create(c, cmd.Context(), key, n); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, `Created concurrency limit with properties:
    %[3]s - '%[1]s'
    concurrency_limit - %[2]d

Delete the concurrency limit:
    allot %[4]s delete '%[1]s'

Inspect the concurrency limit:
    allot %[4]s inspect '%[1]s'
`, key, n, k.noun, k.cmd)
			return nil
		},
	}
}

func (k tagLimitKind) listCmd(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the limits of " + k.noun + "s with the number of runs holding them",
		Example: "  allot " + k.cmd + " ls",
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
			var ls []tagLimitRow
			for offset := 0; ; offset += pageSize {
				page, err := k.list(c, cmd.Context(), offset, pageSize)
				if err != nil {
					return err
				}
				ls = append(ls, page...)
				if len(page) < pageSize {
					break
				}
			}
			if asJSON {
				out := make([]any, len(ls))
				for i, l := range ls {
					out[i] = l.v
				}
				return printJSON(env.Stdout, out)
			}
			if len(ls) == 0 {
				fmt.Fprintln(env.Stdout, "No concurrency limits found.")
				return nil
			}
			rows := make([][]string, len(ls))
			for i, l := range ls {
				rows[i] = []string{l.key, l.id, strconv.Itoa(l.concurrencyLimit), strconv.Itoa(len(l.activeSlots))}
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
		Short: "Show the limit of a " + k.noun + ", the " + strings.ToLower(k.runs) + "s holding it and those waiting",
		Example: "  allot " + k.cmd + " inspect " + k.example + `
  allot ` + k.cmd + " inspect " + k.example + " -o json",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.prefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			l, err := k.get(c, cmd.Context(), key)
			if err != nil {
				return k.notFound(key, err)
			}
			if asJSON {
				return printJSON(env.Stdout, l.v)
			}
			// The line is an allot extension the v1 route only counts;
			// the limit's v2 view lists it.
			var waiters []allot.Waiter
			if l.waiting > 0 {
				v2, err := c.GetLimit(cmd.Context(), k.prefix+key)
				if err != nil && !errors.Is(err, allot.ErrLimitNotFound) {
					return err
				}
				if v2 != nil {
					waiters = v2.Waiters
				}
			}
			return k.detail(env.Stdout, l, waiters, k.runNames(cmd.Context(), c, l, waiters), time.Now())
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
func (k tagLimitKind) runNames(ctx context.Context, c *allot.Client, l tagLimitRow, waiters []allot.Waiter) map[string]string {
	names := map[string]string{}
	look := func(h *allot.Identity) {
		if h == nil || h.Kind != k.holder || len(names) >= maxNamed {
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
	for _, h := range l.holders {
		look(h.Holder)
	}
	for _, wt := range waiters {
		look(wt.Holder)
	}
	return names
}

func (k tagLimitKind) detail(w io.Writer, l tagLimitRow, waiters []allot.Waiter, names map[string]string, now time.Time) error {
	held := 0
	var runs, others [][]string
	for _, h := range l.holders {
		held += h.Slots
		if h.Holder != nil && h.Holder.Kind == k.holder {
			runs = append(runs, []string{orDash(names[h.Holder.ID]), h.Holder.ID, ago(h.Since, now), until(h.Expires, now)})
			continue
		}
		others = append(others, []string{h.LeaseID, holderName(h.Holder), strconv.Itoa(h.Slots), ago(h.Since, now), until(h.Expires, now)})
	}
	tw := newFieldWriter(w)
	for _, f := range [][2]string{
		{"Concurrency limit ID", l.id},
		{strings.ToUpper(k.noun[:1]) + k.noun[1:], l.key},
		{"Concurrency limit", strconv.Itoa(l.concurrencyLimit)},
		{"Active", strconv.FormatBool(l.active)},
		{"Active slots", fmt.Sprintf("%d/%d", held, l.concurrencyLimit)},
		{"Waiting", strconv.Itoa(l.waiting)},
		{"Created", stamp(l.created, now)},
		{"Updated", stamp(l.updated, now)},
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
	if len(waiters) == 0 {
		fmt.Fprintln(w, "Waiters: none")
		return nil
	}
	fmt.Fprintln(w, "Waiters:")
	rows := make([][]string, 0, len(waiters))
	for _, wt := range waiters {
		name, holder := "-", holderName(wt.Holder)
		if wt.Holder != nil && wt.Holder.Kind == k.holder {
			name, holder = orDash(names[wt.Holder.ID]), wt.Holder.ID
		}
		rows = append(rows, []string{strconv.Itoa(wt.Position), name, holder, ago(wt.WaitingSince, now)})
	}
	return table(w, "POSITION\tNAME\t"+strings.ToUpper(k.runs)+" ID / HOLDER\tWAITING SINCE", rows)
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
		Short: "Revoke every lease on the limit of a " + k.noun,
		Long: `Revoke every lease on the limit of a ` + k.noun + `: the runs holding its slots lose
them (they are Crashed) and the runs waiting in line take them. Each
--slot-override run id then gets a slot while one is free.`,
		Example: "  allot " + k.cmd + " reset " + k.example + `
  allot ` + k.cmd + " reset " + k.example + " --slot-override 3c90c3cc-0d44-4b50-8888-8dd25736052a",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.prefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := k.reset(c, cmd.Context(), key, override)
			if err != nil {
				return k.notFound(key, err)
			}
			fmt.Fprintf(env.Stdout, "Reset concurrency limit set on the %s: %s\n", k.noun, key)
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
		Short:             "Delete the limit of a " + k.noun,
		Long:              "Delete the limit of a " + k.noun + ", after asking (unless --yes).",
		Example:           "  allot " + k.cmd + " delete " + k.example + " --yes",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeLimits(k.prefix),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if !yes && !confirm(env, "Are you sure you want to delete concurrency limit with "+k.noun+" '"+key+"'?") {
				return fail("Aborted.")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := k.delete(c, cmd.Context(), key); err != nil {
				return k.notFound(key, err)
			}
			fmt.Fprintf(env.Stdout, "Deleted concurrency limit set on the %s: %s\n", k.noun, key)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
