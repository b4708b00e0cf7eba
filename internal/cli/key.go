package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
	"github.com/allot-dev/allot/internal/auth"
)

// newKeyCmd is allot key: API keys of a server started with --auth keys.
// Every command but generate needs an admin key in ALLOT_API_KEY.
func newKeyCmd(env Env, g *globals) *cobra.Command {
	cmd := group("key", nil, "Manage API keys (a server with --auth keys; needs an admin key)")
	cmd.AddCommand(keyCreate(env, g), keyList(env, g), keyRotate(env, g), keyRevoke(env, g), keyGenerate(env))
	return cmd
}

// parseDays is time.ParseDuration that also takes whole days: "90d".
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 || d > 36500 {
			return 0, fmt.Errorf("%q: want a number of days like 90d, or a duration like 12h", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a number of days like 90d, or a duration like 12h", s)
	}
	return d, nil
}

func printNewKey(env Env, k *allot.Key, asJSON bool) error {
	if asJSON {
		return printJSON(env.Stdout, k)
	}
	fmt.Fprintf(env.Stdout, "Created key %s (%s) with scopes %s.\n", k.ID, k.Name, strings.Join(k.Scopes, " "))
	fmt.Fprintln(env.Stdout, "The key is shown this once; keep it now:")
	fmt.Fprintln(env.Stdout, k.Secret)
	return nil
}

func keyCreate(env Env, g *globals) *cobra.Command {
	var (
		spec    allot.KeySpec
		expires string
		output  string
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --scope SCOPE...",
		Short: "Create an API key and show it once",
		Long: `Create an API key and show it once. Scopes: read (every GET, the event
stream, metrics), acquire:GLOB (take, renew and release slots of the limits
GLOB matches, and runs with those tags), manage:GLOB (create, update,
delete, reset those limits), admin (keys, revoking any lease, the audit,
everything). A glob's '*' stands for any run of characters.`,
		Example: `  allot key create --name etl-workers --scope read --scope 'acquire:warehouse*' --expires 90d
  allot key create --name ops --scope 'manage:*' --scope read`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			if spec.Name == "" || len(spec.Scopes) == 0 {
				return usagef("--name and at least one --scope are required")
			}
			if expires != "" {
				if spec.TTL, err = parseDays(expires); err != nil {
					return usagef("--expires %v", err)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.CreateKey(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return printNewKey(env, k, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Name, "name", "", "the key's name, shown in lists, logs and refusals (required)")
	f.StringArrayVar(&spec.Scopes, "scope", nil, "a scope: read, acquire:GLOB, manage:GLOB or admin (repeatable; at least one)")
	f.StringVar(&expires, "expires", "", "the key stops working after this long (90d, 12h); default never")
	outputFlag(cmd, &output)
	return cmd
}

func keyList(env Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List API keys (never their secrets)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, asJSON, err := g.jsonClient(output)
			if err != nil {
				return err
			}
			ks, err := c.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, ks)
			}
			now := time.Now()
			opt := func(t *time.Time, never string) string {
				if t == nil {
					return never
				}
				return stamp(*t, now)
			}
			rows := make([][]string, 0, len(ks))
			for _, k := range ks {
				state := "active"
				switch {
				case k.Revoked != nil:
					state = "revoked"
				case k.Expires != nil && !k.Expires.After(now):
					state = "expired"
				}
				rows = append(rows, []string{k.ID, k.Name, strings.Join(k.Scopes, " "), state,
					stamp(k.Created, now), opt(k.Expires, "never"), opt(k.LastUsed, "never")})
			}
			return table(env.Stdout, "ID\tNAME\tSCOPES\tSTATE\tCREATED\tEXPIRES\tLAST USED", rows)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func keyRotate(env Env, g *globals) *cobra.Command {
	var (
		grace  time.Duration
		output string
	)
	cmd := &cobra.Command{
		Use:     "rotate ID",
		Short:   "Make a successor of a key with the same scopes; the old one stops after --grace",
		Example: `  allot key rotate 0123456789ab --grace 24h`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			if grace < 0 {
				return usagef("--grace must not be negative")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.RotateKey(cmd.Context(), args[0], grace)
			if err != nil {
				return err
			}
			return printNewKey(env, k, asJSON)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "how long the old key keeps working (default: it stops at once)")
	outputFlag(cmd, &output)
	return cmd
}

func keyRevoke(env Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key: its next request is refused, its streams and waits end",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.RevokeKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Revoked key %s (%s).\n", k.ID, k.Name)
			return nil
		},
	}
}

func keyGenerate(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "generate",
		Short: "Print a new random key, for ALLOT_BOOTSTRAP_KEY (talks to no server)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(env.Stdout, auth.Generate().String())
			return nil
		},
	}
}

// newAuditCmd is allot audit: the server's audit log, newest first.
func newAuditCmd(env Env, g *globals) *cobra.Command {
	var (
		n      int
		keyID  string
		output string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log, newest first (a server with --auth keys; needs an admin key)",
		Example: `  allot audit
  allot audit --key 0123456789ab --limit 20 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := wantJSON(output)
			if err != nil {
				return err
			}
			if n < 1 || n > 1000 {
				return usagef("--limit must be from 1 to 1000")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			recs, err := c.Audit(cmd.Context(), keyID, n)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, recs)
			}
			now := time.Now()
			rows := make([][]string, 0, len(recs))
			for _, r := range recs {
				key := r.KeyID
				if r.KeyName != "" {
					key += " (" + r.KeyName + ")"
				}
				rows = append(rows, []string{stamp(r.Time, now), key, r.Action, r.Target, strconv.Itoa(r.Status), r.Remote})
			}
			return table(env.Stdout, "TIME\tKEY\tACTION\tTARGET\tSTATUS\tREMOTE", rows)
		},
	}
	f := cmd.Flags()
	f.IntVar(&n, "limit", 50, "how many records")
	f.StringVar(&keyID, "key", "", "only the records of this key id")
	outputFlag(cmd, &output)
	return cmd
}
