package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

func newWatchCmd(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "watch [NAME…]",
		Short: "Print grants, releases, expiries, revocations, limit changes and run state changes live",
		Long: `Print the server's events as they happen, one line each, until interrupted:
leases granted, released, expired and revoked, limits created, changed and
deleted, and runs created or changing state. With NAMEs, only the events of
those limits and of the runs that take them (or have that name or id).
With -o json, one JSON object per line, its kind in "event".

If the stream breaks (the server stopped), watch exits 1: events may have
been missed.`,
		Example: `  allot watch
  allot watch db tag:etl
  allot watch -o json | jq .`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			// Ctrl-C (or SIGTERM) ends the watch, not an error.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opened := func() {
				what := "all events"
				if len(args) > 0 {
					what = "the events of " + strings.Join(args, ", ")
				}
				fmt.Fprintf(env.Stderr, "Watching %s (Ctrl-C to stop).\n", what)
			}
			err = c.Watch(ctx, allot.WatchOptions{Names: args, Opened: opened}, func(e allot.Event) error {
				if asJSON {
					return writeEventJSON(env.Stdout, e)
				}
				_, err := fmt.Fprintln(env.Stdout, eventLine(e))
				return err
			})
			if err != nil {
				return fail("%v", err)
			}
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func writeEventJSON(w io.Writer, e allot.Event) error {
	type event = allot.Event
	b, err := json.Marshal(struct {
		Kind string `json:"event"`
		event
	}{e.Kind, e})
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// eventLine is one event as watch prints it for people.
func eventLine(e allot.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-8s", e.At.UTC().Format("15:04:05.000"), e.Kind)
	switch e.Kind {
	case "limit":
		what := "changed"
		if e.Deleted {
			what = "deleted"
		}
		fmt.Fprintf(&b, "  %s %s", strings.Join(e.Limits, ", "), what)
	case "run":
		if r := e.Run; r != nil {
			name := r.Name
			if name == "" {
				name = "-"
			}
			fmt.Fprintf(&b, "  %s run %s %s → %s", r.Kind, name, r.ID, r.State)
			if len(e.Limits) > 0 {
				fmt.Fprintf(&b, "  [%s]", strings.Join(e.Limits, ", "))
			}
			if r.Message != "" {
				fmt.Fprintf(&b, "  (%s)", r.Message)
			}
		}
	default:
		fmt.Fprintf(&b, "  %s  lease %s  %s  %d slot(s)", strings.Join(e.Limits, ", "), e.LeaseID, holderName(e.Holder), e.Slots)
		if e.FencingToken > 0 {
			fmt.Fprintf(&b, "  fence %d", e.FencingToken)
		}
		if e.Reason != "" {
			fmt.Fprintf(&b, "  (%s)", e.Reason)
		}
	}
	return b.String()
}
