//go:build !linux

package cli

import (
	"os"
	"time"
)

// childSys elsewhere than on Linux: the command runs in allot's process
// group and is signalled alone. If allot is killed with SIGKILL its command
// runs on; its slots come back when the lease expires.
type childSys struct{}

func (childSys) start(c *child, _ Env, _ string, _ time.Duration) error { return c.cmd.Start() }

func (childSys) signal(c *child, s os.Signal) { _ = c.cmd.Process.Signal(s) }

func (childSys) exited(*child) {}

// guardCmd is the hidden subcommand of a guard, which only Linux starts.
const guardCmd = "__guard"

// runGuard is not used elsewhere than on Linux.
func runGuard(_ int, _ time.Duration) error { return nil }
