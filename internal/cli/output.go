package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// outputFlag adds --output/-o to a command that reads.
func outputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "", "output format: json (default: tables for people)")
}

// wantJSON reports whether --output asks for JSON; any other value is a
// usage error.
// jsonClient is what a command with -o reads first: whether it answers
// in JSON (the flag checked before any request), and the client.
func (g *globals) jsonClient(output string) (*allot.Client, bool, error) {
	asJSON, err := wantJSON(output)
	if err != nil {
		return nil, false, err
	}
	c, err := g.client()
	return c, asJSON, err
}

// collect reads a paginated listing to its end.
func collect[T any](seq iter.Seq2[T, error]) ([]T, error) {
	all := []T{}
	for v, err := range seq {
		if err != nil {
			return nil, err
		}
		all = append(all, v)
	}
	return all, nil
}

func wantJSON(out string) (bool, error) {
	switch strings.ToLower(out) {
	case "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usagef("Only 'json' output format is supported.")
}

// printJSON writes v as indented JSON, its times in UTC with millisecond
// precision, as the server writes them (2026-11-23T10:40:24.123Z).
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = jsonTime.ReplaceAllFunc(b, func(m []byte) []byte {
		key, val, _ := strings.Cut(string(m), ":")
		t, err := time.Parse(time.RFC3339Nano, strings.Trim(val, `"`))
		if err != nil {
			return m
		}
		return []byte(key + `:"` + t.UTC().Format(jsonTimeLayout) + `"`)
	})
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// jsonTimeLayout is how times are written in JSON output.
const jsonTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// jsonTime matches, in compact JSON, the members whose values are times.
// A string value cannot match: inside it the quotes are escaped.
var jsonTime = regexp.MustCompile(`"(created|updated|since|expires|waiting_since|timestamp|revoked|last_used|time)":"[0-9]{4}-[^"]*"`)

// table writes tab-separated rows as aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// limitsTable prints limits with their usage; first is the first column's
// header ("NAME", or "TAG" with the "tag:" prefix cut from the names).
func limitsTable(w io.Writer, first string, ls []*allot.Limit, cut string, now time.Time) error {
	rows := make([][]string, 0, len(ls))
	for _, l := range ls {
		rows = append(rows, []string{
			strings.TrimPrefix(l.Name, cut),
			strconv.Itoa(l.Limit),
			fmt.Sprintf("%d/%d", l.ActiveSlots, l.Limit),
			strconv.FormatBool(l.Active),
			formatFloat(l.SlotDecayPerSecond),
			strconv.Itoa(l.Waiting),
			ago(l.Updated, now),
		})
	}
	return table(w, first+"\tLIMIT\tACTIVE SLOTS\tACTIVE\tDECAY/S\tWAITING\tUPDATED", rows)
}

// limitDetail prints a limit's fields, its holders and its waiters.
func limitDetail(w io.Writer, fields [][2]string, l *allot.Limit, now time.Time) error {
	tw := newFieldWriter(w)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(l.Holders) == 0 {
		fmt.Fprintln(w, "Holders: none")
	} else {
		fmt.Fprintln(w, "Holders:")
		rows := make([][]string, 0, len(l.Holders))
		for _, h := range l.Holders {
			rows = append(rows, []string{h.LeaseID, holderName(h.Holder), strconv.Itoa(h.Slots),
				ago(h.Since, now), until(h.Expires, now), strconv.FormatUint(h.FencingToken, 10)})
		}
		if err := table(w, "LEASE ID\tHOLDER\tSLOTS\tSINCE\tEXPIRES\tFENCING TOKEN", rows); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if l.WhyWaiting != "" {
		fmt.Fprintf(w, "Why the first in line waits: %s.\n\n", l.WhyWaiting)
	}
	return waitersTable(w, l.Waiters, "POSITION\tSLOTS\tMODE\tHOLDER\tWAITING SINCE", func(wt allot.Waiter) []string {
		return []string{strconv.Itoa(wt.Position), strconv.Itoa(wt.Slots), wt.Mode,
			holderName(wt.Holder), ago(wt.WaitingSince, now)}
	})
}

// waitersTable prints the requests in line for a limit, first first: a
// table of header's columns, a row from row for each, or "Waiters: none".
func waitersTable(w io.Writer, waiters []allot.Waiter, header string, row func(allot.Waiter) []string) error {
	if len(waiters) == 0 {
		fmt.Fprintln(w, "Waiters: none")
		return nil
	}
	fmt.Fprintln(w, "Waiters:")
	rows := make([][]string, 0, len(waiters))
	for _, wt := range waiters {
		rows = append(rows, row(wt))
	}
	return table(w, header, rows)
}

// newFieldWriter aligns "Field:\tvalue" lines.
func newFieldWriter(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 1, ' ', 0) }

// limitFields are the lines of a limit's detail, after the caller's own.
func limitFields(l *allot.Limit, now time.Time) [][2]string {
	f := [][2]string{
		{"Active", strconv.FormatBool(l.Active)},
		{"Limit", strconv.Itoa(l.Limit)},
		{"Active slots", fmt.Sprintf("%d/%d", l.ActiveSlots, l.Limit)},
		{"Denied slots", strconv.Itoa(l.DeniedSlots)},
		{"Slot decay per second", formatFloat(l.SlotDecayPerSecond)},
		{"Avg slot occupancy", formatFloat(l.AvgSlotOccupancySeconds) + "s"},
		{"Fencing token", strconv.FormatUint(l.FencingToken, 10)},
		{"Waiting", strconv.Itoa(l.Waiting)},
		{"Created", stamp(l.Created, now)},
		{"Updated", stamp(l.Updated, now)},
	}
	if l.Template {
		f = append(f, [2]string{"Template", "true (new names it matches take its settings)"})
	}
	if l.FromTemplate {
		f = append(f, [2]string{"From template", "true (removed when idle)"})
	}
	if l.IdleSeconds != nil {
		f = append(f, [2]string{"Idle seconds", idleText(*l.IdleSeconds)})
	}
	return f
}

// holderName is "type:id", or "-" for a lease taken without a holder.
func holderName(h *allot.Identity) string {
	if h == nil {
		return "-"
	}
	return h.Kind + ":" + h.ID
}

// idleText is an idle time, or what 0 means.
func idleText(seconds float64) string {
	if seconds == 0 {
		return "0 (never removed)"
	}
	return formatFloat(seconds)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// stamp is a time in UTC and how long ago it was.
func stamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + ")"
}

// ago is "12s ago", "3m4s ago", ...
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + human(-d)
	}
	return human(d) + " ago"
}

// until is "in 4m48s", or "12s ago" for a time past.
func until(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d < 0 {
		return human(-d) + " ago"
	}
	return "in " + human(d)
}

// human is a duration in at most two units: 0s, 12s, 3m4s, 5h2m, 3d4h.
func human(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// confirm asks a yes/no question on stderr and reads the answer from
// stdin. Only "y" or "yes" is yes; an empty line, end of input or no
// stdin at all is no.
func confirm(env Env, question string) bool {
	fmt.Fprintf(env.Stderr, "%s [y/N]: ", question)
	if env.Stdin == nil {
		fmt.Fprintln(env.Stderr)
		return false
	}
	line, err := bufio.NewReader(env.Stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(env.Stderr)
		return false
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}
