// Command allot is allot's one binary: the server, the command line client
// and the run wrapper. Run 'allot --help'.
package main

import (
	"context"
	"os"

	"github.com/allot-dev/allot/internal/cli"
)

func main() {
	self, _ := os.Executable() // "": no guard for allot run's command
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.Env{
		Self:  self,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Environ: os.Environ,
		StderrIsTerminal: func() bool {
			fi, err := os.Stderr.Stat()
			return err == nil && fi.Mode()&os.ModeCharDevice != 0
		},
	}))
}
