package docblock_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/internal/docblock"
)

// TestEveryShellBlockRunsOrIsIllustration enumerates every fenced block of
// README.md, CONTRIBUTING.md and docs/*.md: each names its language, and
// each shell block is marked as an illustration or claimed by a test that
// exists and calls docblock.Claimed (which fails that test unless it runs
// every block it claims).
func TestEveryShellBlockRunsOrIsIllustration(t *testing.T) {
	t.Parallel()
	root, err := docblock.Root()
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := docblock.All(root)
	if err != nil {
		t.Fatal(err)
	}
	shells, claimed := 0, map[string]int{}
	for _, b := range blocks {
		switch {
		case b.Lang == "":
			t.Errorf("%s: a fence without a language; name it (```text for output, messages, synopses)", b)
		case !b.Shell() && b.Marker != "":
			if b.Claim() != "" {
				t.Errorf("%s: a %q block claims %s; only shell blocks are run", b, b.Lang, b.Claim())
			}
		case !b.Shell():
		case b.Illustration():
			shells++
		case b.Claim() != "":
			shells++
			claimed[b.Claim()]++
		default:
			t.Errorf("%s: a ```%s block that no test runs: run it (<!-- test: DIR/TestName --> on the line before, and the test calls docblock.Claimed) or mark it <!-- illustration -->; marker %q",
				b, b.Lang, b.Marker)
		}
	}
	for claim, n := range claimed {
		if err := claimedTestCallsClaimed(root, claim); err != nil {
			t.Errorf("%d block(s) are marked <!-- test: %s -->, but %v", n, claim, err)
		}
	}
	if shells == 0 {
		t.Error("found no shell block at all; the enumeration is broken")
	}
	t.Logf("%d shell blocks: %d run by %d tests, the rest illustrations", shells, sum(claimed), len(claimed))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// claimedTestCallsClaimed checks that claim, DIR/TestName, is a test
// function in DIR's _test.go files whose body calls docblock.Claimed.
func claimedTestCallsClaimed(root, claim string) error {
	dir, name := filepath.Split(claim)
	if dir == "" || !strings.HasPrefix(name, "Test") {
		return &claimError{"the claim is not DIR/TestName"}
	}
	files, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*_test.go"))
	if err != nil {
		return err
	}
	fset := token.NewFileSet()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			return err
		}
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || fn.Name.Name != name || fn.Body == nil {
				continue
			}
			calls := false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if s, ok := c.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == "Claimed" {
						if id, ok := s.X.(*ast.Ident); ok && id.Name == "docblock" {
							calls = true
						}
					}
				}
				return !calls
			})
			if !calls {
				return &claimError{name + " does not call docblock.Claimed"}
			}
			return nil
		}
	}
	return &claimError{"there is no func " + name + " in " + dir + "*_test.go"}
}

type claimError struct{ msg string }

func (e *claimError) Error() string { return e.msg }

func TestParse(t *testing.T) {
	t.Parallel()
	src := "# doc\n\n<!-- illustration -->\n```sh\nmake bench\n```\n\ntext\n<!-- test: e2e/TestX -->\n```console\n$ allot gcl ls\n```\n\n```\nbare\n```\n````go\n```\n````\n  ```sh, ```console: prose\n"
	got, err := docblock.Parse("d.md", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []docblock.Block{
		{File: "d.md", Line: 4, Lang: "sh", Marker: "illustration", Body: "make bench\n"},
		{File: "d.md", Line: 10, Lang: "console", Marker: "test: e2e/TestX", Body: "$ allot gcl ls\n"},
		{File: "d.md", Line: 14, Lang: "", Body: "bare\n"},
		{File: "d.md", Line: 17, Lang: "go", Body: "```\n"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if c := got[1].Claim(); c != "e2e/TestX" {
		t.Errorf("Claim() = %q, want e2e/TestX", c)
	}
	if _, err := docblock.Parse("d.md", []byte("```sh\nopen\n")); err == nil {
		t.Error("Parse of an unclosed block: got no error")
	}
}
