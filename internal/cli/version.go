package cli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// buildInfo is what allot version prints: what the Go toolchain recorded in
// the binary.
type buildInfo struct {
	// Version is the module's version: a tag, a pseudo-version, or
	// "(devel)" for a build from a work tree.
	Version string `json:"version"`
	// Revision, Time and Modified are the version control state the binary
	// was built from, when the build recorded it.
	Revision  string `json:"vcs_revision,omitempty"`
	Time      string `json:"vcs_time,omitempty"`
	Modified  bool   `json:"vcs_modified"`
	GoVersion string `json:"go_version"`
}

// readBuildInfo reads the build information of the running binary.
func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return buildInfo{Version: "unknown", GoVersion: "unknown"}
	}
	out := buildInfo{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if out.Version == "" {
		out.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			out.Revision = s.Value
		case "vcs.time":
			out.Time = s.Value
		case "vcs.modified":
			out.Modified = s.Value == "true"
		}
	}
	return out
}

// String is the build information for people, one line per fact.
func (b buildInfo) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "allot %s\n", b.Version)
	if b.Revision != "" {
		rev := b.Revision
		if b.Modified {
			rev += " (modified)"
		}
		fmt.Fprintf(&s, "revision: %s\n", rev)
	}
	if b.Time != "" {
		fmt.Fprintf(&s, "commit time: %s\n", b.Time)
	}
	fmt.Fprintf(&s, "go: %s\n", b.GoVersion)
	return s.String()
}

func newVersionCmd(env Env) *cobra.Command {
	var outFl string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print allot's version and how it was built",
		Long: `Print allot's module version, the version control revision and commit time it
was built from (and whether the work tree had changes), and the Go version,
as the Go toolchain recorded them in the binary. 'allot --version' prints
the same.`,
		Args: noArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			asJSON, err := wantJSON(outFl)
			if err != nil {
				return err
			}
			bi := readBuildInfo()
			if asJSON {
				return printJSON(env.Stdout, bi)
			}
			_, err = fmt.Fprint(env.Stdout, bi.String())
			return err
		},
	}
	outputFlag(cmd, &outFl)
	return cmd
}
