package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/coord"
)

// The authentication modes.
const (
	AuthOff  = "off"
	AuthKeys = "keys"
)

// BootstrapKeyFile is the file in the data directory where the first start
// with --auth keys writes the admin key it makes.
const BootstrapKeyFile = "bootstrap.key"

// ErrProtectedMode is returned by Run for a non-loopback address with
// authentication off and Insecure unset.
var ErrProtectedMode = errors.New("protected mode")

// checkProtected refuses to serve anything but loopback without
// authentication, unless insecure says so.
func checkProtected(cfg Config) error {
	if cfg.Auth == AuthKeys || cfg.Insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", cfg.Addr, err)
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("%w: refusing to listen on %s with authentication off: anyone who can reach it could delete every limit and revoke every lease. "+
		"Start with --auth keys (API keys), or --insecure to serve without authentication anyway, or listen on 127.0.0.1", ErrProtectedMode, cfg.Addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// openKeyring loads the keys and, with none, makes the first admin key:
// the one cfg.BootstrapKey gives, or a new one printed once to
// cfg.BootstrapOut and written 0600 to the data directory.
func openKeyring(ctx context.Context, cfg Config, c *coord.Coordinator) (*auth.Keyring, error) {
	kr, err := auth.NewKeyring(ctx, c, nil)
	if err != nil {
		return nil, err
	}
	admin := auth.NewKey{Name: "bootstrap", Scopes: []string{"admin"}}
	if cfg.BootstrapKey != "" {
		tok, ok := auth.ParseToken(cfg.BootstrapKey)
		if !ok {
			return nil, errors.New("ALLOT_BOOTSTRAP_KEY is not a key of the form allot_<12 hex digits>_<64 hex digits>; make one with: allot key generate")
		}
		if _, err := kr.Import(ctx, tok, admin); err != nil {
			return nil, fmt.Errorf("bootstrap key: %w", err)
		}
		return kr, nil
	}
	if kr.Len() > 0 {
		return kr, nil
	}
	tok, _, err := kr.Create(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("bootstrap key: %w", err)
	}
	path := filepath.Join(cfg.DataDir, BootstrapKeyFile)
	if err := os.WriteFile(path, []byte(tok.String()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write bootstrap key: %w", err)
	}
	if cfg.BootstrapOut != nil {
		fmt.Fprintf(cfg.BootstrapOut, "allot: made the first admin key (shown once, also in %s, mode 0600):\n%s\n", path, tok)
	}
	return kr, nil
}
