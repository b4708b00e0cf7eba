package httpapi

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCodesAgree checks that the one list of codes (codes) is what the
// OpenAPI document's Problem.code enum lists, what docs/semantics.md's table
// of error codes says (code, status, meaning), and that every Code*
// constant of the SDK (the module root's errors.go) is one of them.
func TestCodesAgree(t *testing.T) {
	t.Parallel()
	var want []string
	for c, info := range codes {
		if info.name == "" || info.status == 0 || info.meaning == "" {
			t.Errorf("code %d has no name, status or meaning: %+v", c, info)
		}
		if slices.Contains(want, info.name) {
			t.Errorf("code %q is listed twice", info.name)
		}
		want = append(want, info.name)
	}

	t.Run("openapi", func(t *testing.T) {
		var doc struct {
			Components struct {
				Schemas struct {
					Problem struct {
						Properties struct {
							Code struct {
								Enum []string `json:"enum"`
							} `json:"code"`
						} `json:"properties"`
					} `json:"Problem"`
				} `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(openapiDoc, &doc); err != nil {
			t.Fatal(err)
		}
		got := doc.Components.Schemas.Problem.Properties.Code.Enum
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("OpenAPI Problem.code enum (-codes +openapi.json):\n%s", diff)
		}
	})

	t.Run("docs", func(t *testing.T) {
		data, err := os.ReadFile("../../docs/semantics.md")
		if err != nil {
			t.Fatal(err)
		}
		_, table, ok := strings.Cut(string(data), "\n## Error codes\n")
		if !ok {
			t.Fatal("docs/semantics.md has no section \"## Error codes\"")
		}
		table, _, _ = strings.Cut(table, "\n## ")
		row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([0-9]+) \\| (.*) \\|$")
		var got, wantRows []string
		for _, m := range row.FindAllStringSubmatch(table, -1) {
			got = append(got, m[1]+" "+m[2]+" "+m[3])
		}
		for _, info := range codes {
			wantRows = append(wantRows, info.name+" "+strconv.Itoa(info.status)+" "+info.meaning)
		}
		if diff := cmp.Diff(wantRows, got); diff != "" {
			t.Errorf("docs/semantics.md's table of error codes (-codes +docs):\n%s", diff)
		}
	})

	t.Run("sdk", func(t *testing.T) {
		f, err := parser.ParseFile(token.NewFileSet(), "../../errors.go", nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		sdk := map[string]string{}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						sdk[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
		if len(sdk) == 0 {
			t.Fatal("found no Code* constants in the SDK's errors.go")
		}
		var missing []string
		for name, v := range sdk {
			if !slices.Contains(want, v) {
				t.Errorf("SDK constant %s = %q is not a code of the server", name, v)
			}
		}
		for _, c := range want {
			found := false
			for _, v := range sdk {
				found = found || v == c
			}
			if !found {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			t.Logf("codes the SDK has no constant for: %s", strings.Join(missing, ", "))
		}
	})
}
