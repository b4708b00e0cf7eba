package cli

import (
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// child is the command allot run runs. How it is started, signalled and
// tied to allot's life is the platform's (child_linux.go, child_other.go):
// on Linux it runs in a process group of its own that dies with allot.
type child struct {
	cmd *exec.Cmd
	// sys is the platform's part.
	sys childSys
}

// startChild starts cmd. self is the allot executable, to start a guard
// with (see child_linux.go); "" starts none. grace is how long a guard
// waits between SIGTERM and SIGKILL.
func startChild(cmd *exec.Cmd, env Env, self string, grace time.Duration) (*child, error) {
	c := &child{cmd: cmd}
	if err := c.sys.start(c, env, self, grace); err != nil {
		return nil, err
	}
	return c, nil
}

// signal sends s to the command (on Linux, to its whole process group).
func (c *child) signal(s os.Signal) { c.sys.signal(c, s) }

// exited is called once the command has exited: it stops the guard and
// gives the terminal back.
func (c *child) exited() { c.sys.exited(c) }

// newGuardCmd is the hidden 'allot __guard PARENT GRACE' (see runGuard).
func newGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:    guardCmd + " PARENT GRACE",
		Hidden: true,
		Args:   exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			parent, err := strconv.Atoi(args[0])
			if err != nil {
				return usagef("PARENT: %v", err)
			}
			grace, err := time.ParseDuration(args[1])
			if err != nil {
				return usagef("GRACE: %v", err)
			}
			return runGuard(parent, grace)
		},
	}
}
