package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/allot-dev/allot/internal/docblock"
)

// TestDocConsoleBlocks runs each ```console block of the docs that is
// marked as run by it (the README's CLI tour, docs/cli.md's tours, …),
// verbatim, as one sh script in an empty directory, with the allot binary
// first on PATH and a server of its own in ALLOT_API_URL (and API). Every
// command must exit 0. When the block shows output, each command's output
// (stdout and stderr) must be what it shows, with ids, times and ages
// taken as any id, time or age, and … as any text. The ./NAME.sh scripts a
// block runs are made as scripts that exit 0.
func TestDocConsoleBlocks(t *testing.T) {
	t.Parallel()
	for _, b := range docblock.Claimed(t) {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			b.Ran()
			cmds, showsOutput := parseConsole(b.Body)
			if len(cmds) == 0 {
				t.Fatal("the block has no $ command")
			}
			srv := newServer(t)
			dir := t.TempDir()
			for _, m := range regexp.MustCompile(`\./([\w.-]+\.sh)\b`).FindAllStringSubmatch(b.Body, -1) {
				if err := os.WriteFile(filepath.Join(dir, m[1]), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var script strings.Builder
			for _, c := range cmds {
				script.WriteString(c.line + "\nprintf '\\n" + endMark + " %s\\n' \"$?\"\n")
			}
			cmd := exec.CommandContext(t.Context(), "sh", "-c", script.String())
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "ALLOT_API_URL="+srv.url, "ALLOT_API_KEY=", "API="+srv.url, goRace,
				"PATH="+filepath.Dir(binary)+string(filepath.ListSeparator)+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("the block's script failed: %v\n%s", err, out)
			}
			parts := endRE.FindAllStringSubmatchIndex(string(out), -1)
			start := 0
			for i, c := range cmds {
				if i >= len(parts) {
					t.Fatalf("$ %s: never finished (the script stopped); output:\n%s", c.line, out)
				}
				got := string(out[start:parts[i][0]])
				code, _ := strconv.Atoi(string(out[parts[i][2]:parts[i][3]]))
				start = parts[i][1]
				if code != 0 {
					t.Errorf("$ %s: exit %d, want 0; output:\n%s", c.line, code, got)
				}
				if showsOutput && !outputMatches(c.output, got) {
					t.Errorf("$ %s: output\n%s\nwant (as the docs show it)\n%s", c.line, got, c.output)
				}
			}
		})
	}
}

const endMark = "@@allot-doc-end"

var endRE = regexp.MustCompile(`\n` + endMark + ` (\d+)\n`)

// consoleCmd is one "$ " command of a console block and the output the
// block shows for it.
type consoleCmd struct {
	line   string // the command, with its continuation lines
	output string
}

// parseConsole splits a console block into its commands: a line "$ CMD"
// (continued on the next lines while it ends in a backslash) and the lines
// after it up to the next command, its output. Lines starting with # that
// are not output of a command are comments. showsOutput reports whether
// any command shows output.
func parseConsole(body string) (cmds []consoleCmd, showsOutput bool) {
	cont := false
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		switch {
		case cont:
			cmds[len(cmds)-1].line += "\n" + line
			cont = strings.HasSuffix(line, `\`)
		case strings.HasPrefix(line, "$ "):
			cmds = append(cmds, consoleCmd{line: strings.TrimPrefix(line, "$ ")})
			cont = strings.HasSuffix(line, `\`)
		case strings.HasPrefix(line, "#"), len(cmds) == 0 && strings.TrimSpace(line) == "":
		case len(cmds) == 0:
			cmds = append(cmds, consoleCmd{}) // output before any command: never matches
			fallthrough
		default:
			c := &cmds[len(cmds)-1]
			if c.output != "" || line != "" {
				c.output += line + "\n"
				showsOutput = true
			}
		}
	}
	return cmds, showsOutput
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	agoRE  = regexp.MustCompile(`\b\d[0-9hmsµ.]*s ago\b`)
	inRE   = regexp.MustCompile(`\bin \d[0-9hmsµ.]*s\b`)
)

// normalize replaces what differs from run to run (ids, times, ages) by
// placeholders and trims trailing blanks.
func normalize(s string) string {
	s = uuidRE.ReplaceAllString(s, "<id>")
	s = timeRE.ReplaceAllString(s, "<time>")
	s = agoRE.ReplaceAllString(s, "<age> ago")
	s = inRE.ReplaceAllString(s, "in <age>")
	lines := strings.Split(strings.TrimRight(s, "\n "), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// outputMatches reports whether got is the output want shows, … standing
// for any text.
func outputMatches(want, got string) bool {
	parts := strings.Split(normalize(want), "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	re, err := regexp.Compile(`^(?s:` + strings.Join(parts, ".*?") + `)$`)
	return err == nil && re.MatchString(normalize(got))
}
