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
// of error codes says (code, status, meaning), and what the SDK's Code*
// constants (the module root's errors.go) name: one constant for every
// code, and no other.
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
		var sdk []string
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
						v, _ := strconv.Unquote(lit.Value)
						sdk = append(sdk, v)
					}
				}
			}
		}
		// Every code of the list has its constant, and every constant is a
		// code of the list, once.
		got, wantSorted := slices.Sorted(slices.Values(sdk)), slices.Sorted(slices.Values(want))
		if diff := cmp.Diff(wantSorted, got); diff != "" {
			t.Errorf("the SDK's Code* constants in errors.go (-codes +sdk):\n%s", diff)
		}
	})
}
