package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/allot-dev/allot"
)

// globals are the flags every command shares, and the SDK client made
// from them on first use.
type globals struct {
	env    Env
	apiURL string
	apiKey string
	// keyGiven reports whether --api-key was given: then it wins over
	// ALLOT_API_KEY, even empty.
	keyGiven func() bool

	mu sync.Mutex
	c  *allot.Client
}

// client returns the SDK client for --api-url and --api-key. Its warnings
// (a missing limit, a failed renewal) go to stderr, one line each.
func (g *globals) client() (*allot.Client, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c != nil {
		return g.c, nil
	}
	key := g.apiKey
	if !g.keyGiven() {
		key = g.env.Getenv(allot.EnvAPIKey)
	}
	c, err := allot.NewClient(allot.WithURL(g.apiURL), allot.WithAPIKey(key), allot.WithCAFile(g.env.Getenv(allot.EnvCAFile)),
		allot.WithLogger(slog.New(&lineHandler{w: g.env.Stderr, mu: new(sync.Mutex)})))
	if err != nil {
		return nil, usagef("--api-url %q: must be http:// or https:// with a host", g.apiURL)
	}
	g.c = c
	return c, nil
}

// close closes the client's idle connections, if there is a client.
func (g *globals) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c != nil {
		g.c.CloseIdleConnections()
	}
}

// completeLimits completes the first argument with the names of limits
// that start with prefix, shown without it (prefix "tag:" completes tags).
func (g *globals) completeLimits(prefix string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return g.limitNames(cmd, prefix, toComplete)
	}
}

func (g *globals) limitNames(cmd *cobra.Command, prefix, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := g.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []cobra.Completion
	for l, err := range c.AllLimits(ctx) {
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		name, ok := strings.CutPrefix(l.Name, prefix)
		if ok && strings.HasPrefix(name, toComplete) {
			out = append(out, name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// lineHandler prints the SDK's warnings and errors on w, one line each:
// the message, then the error if the record has one; but not the SDK's
// word of a lost lease or run, which allot run reports itself.
type lineHandler struct {
	w  io.Writer
	mu *sync.Mutex
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	if strings.HasPrefix(msg, "allot: lease lost;") || strings.HasPrefix(msg, "allot: run is over on the server;") {
		// The SDK's word of a lost lease or run: allot run says it
		// itself, in one line, with what it did about it.
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg += ": " + a.Value.String()
			return false
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintln(h.w, msg)
	return err
}

func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }
