// Package docblock finds the fenced code blocks of the repository's
// documentation (README.md, CONTRIBUTING.md and docs/*.md) and hands the
// shell blocks to the tests that run them, so that what the docs tell a
// user to type is what the tests type.
//
// Every fenced block names its language. A shell block (```sh, ```console,
// ```bash, ```shell) is either run by a test or marked as an illustration,
// on the line just before its fence:
//
//	<!-- test: e2e/TestDocShellBlocks -->      run by that test (package directory/test name)
//	<!-- illustration -->                       shown, not run (a long-running server, an install, …)
//
// Non-runnable text (output, messages, synopses) is fenced as ```text.
// The test of this package enumerates every block and fails on a shell
// block that is neither, on a claim whose test does not exist, and on a
// claimed test that does not call Claimed; Claimed, called by the claimed
// test, fails that test if it runs no block or leaves one unrun.
package docblock

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Block is one fenced code block of a document.
type Block struct {
	File   string // the document, relative to the repository root, with slashes
	Line   int    // the line of the opening fence, from 1
	Lang   string // the fence's info string (sh, console, go, text, …); "" if none
	Marker string // the marker comment on the line before the fence, without <!-- -->; "" if none
	Body   string // the lines between the fences, each ending in a newline
}

// String is the block's place, FILE:LINE.
func (b Block) String() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

// Shell reports whether the block is a shell block, one that must be run
// or marked as an illustration.
func (b Block) Shell() bool {
	switch b.Lang {
	case "sh", "console", "bash", "shell":
		return true
	}
	return false
}

// Claim is the test a "test:" marker names (package directory/TestName),
// or "" if the block's marker is not a claim.
func (b Block) Claim() string {
	if c, ok := strings.CutPrefix(b.Marker, "test:"); ok {
		return strings.TrimSpace(c)
	}
	return ""
}

// Illustration reports whether the block is marked as an illustration.
func (b Block) Illustration() bool { return b.Marker == "illustration" }

// Documents are the documents whose blocks are checked, relative to the
// repository root.
func Documents(root string) ([]string, error) {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, top := range []string{"README.md", "CONTRIBUTING.md"} {
		if _, err := os.Stat(filepath.Join(root, top)); err == nil {
			out = append(out, top)
		}
	}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			return nil, err
		}
		out = append(out, filepath.ToSlash(rel))
	}
	return out, nil
}

var (
	fence  = regexp.MustCompile("^( {0,3})(```+|~~~+)\\s*([^`\\s]*)")
	marker = regexp.MustCompile(`^\s*<!--\s*(.*?)\s*-->\s*$`)
)

// Parse returns the fenced blocks of the document doc (its path relative to
// the repository root, for Block.File) with the contents src.
func Parse(doc string, src []byte) ([]Block, error) {
	var (
		blocks []Block
		cur    *Block
		close  string
		prev   string
		body   strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if cur != nil {
			if t := strings.TrimSpace(line); strings.HasPrefix(t, close) && strings.Trim(t, close[:1]) == "" {
				cur.Body = body.String()
				blocks = append(blocks, *cur)
				cur, prev = nil, line
				continue
			}
			body.WriteString(line)
			body.WriteByte('\n')
			continue
		}
		// An opening backtick fence has no backtick after it (CommonMark).
		if m := fence.FindStringSubmatch(line); m != nil && !(m[2][0] == '`' && strings.Contains(line[len(m[0]):], "`")) {
			cur = &Block{File: doc, Line: n, Lang: m[3]}
			if mm := marker.FindStringSubmatch(prev); mm != nil {
				cur.Marker = mm[1]
			}
			close = m[2]
			body.Reset()
			continue
		}
		prev = line
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("%s: the block opened at line %d is never closed", doc, cur.Line)
	}
	return blocks, nil
}

// All returns every fenced block of every document under root.
func All(root string) ([]Block, error) {
	docs, err := Documents(root)
	if err != nil {
		return nil, err
	}
	var all []Block
	for _, d := range docs {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(d)))
		if err != nil {
			return nil, err
		}
		bs, err := Parse(d, src)
		if err != nil {
			return nil, err
		}
		all = append(all, bs...)
	}
	return all, nil
}

// Root is the repository root: the nearest directory at or above the
// working directory that holds go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// Claimed returns the shell blocks whose marker claims the calling test:
// "test: DIR/NAME" where DIR is the test's package directory relative to
// the repository root and NAME is t.Name() (a top-level test). It fails t
// if there are none, and, when t ends, if the test did not call Ran for
// each of them: a claim is a promise that the block runs.
func Claimed(t *testing.T) []*Run {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := filepath.Rel(root, wd)
	if err != nil {
		t.Fatal(err)
	}
	claim := filepath.ToSlash(pkg) + "/" + t.Name()
	all, err := All(root)
	if err != nil {
		t.Fatal(err)
	}
	var runs []*Run
	for _, b := range all {
		if b.Claim() == claim {
			if !b.Shell() {
				t.Fatalf("%s claims %s but is a %q block, not a shell block", b, claim, b.Lang)
			}
			runs = append(runs, &Run{Block: b})
		}
	}
	if len(runs) == 0 {
		t.Fatalf("no block of the docs is marked <!-- test: %s -->", claim)
	}
	t.Cleanup(func() {
		for _, r := range runs {
			if !r.ran() {
				t.Errorf("%s is marked as run by %s, which did not run it", r.Block, claim)
			}
		}
	})
	return runs
}

// Run is a block handed to the test that claims it.
type Run struct {
	Block
	mu   sync.Mutex
	done bool
}

// Ran records that the test ran the block.
func (r *Run) Ran() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
}

func (r *Run) ran() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}
