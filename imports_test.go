package allot_test

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
)

const modulePath = "github.com/allot-dev/allot"

// TestImportsOnlyStandardLibrary checks that the SDK, and any package of
// this module it imports, imports nothing outside the standard library, so
// that users of the SDK take on no dependency.
func TestImportsOnlyStandardLibrary(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	var visit func(dir, importPath string)
	visit = func(dir, importPath string) {
		if seen[importPath] {
			return
		}
		seen[importPath] = true
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("read package %s: %v", importPath, err)
		}
		for _, imp := range pkg.Imports {
			switch {
			case imp == modulePath || strings.HasPrefix(imp, modulePath+"/"):
				visit(filepath.Join(".", strings.TrimPrefix(strings.TrimPrefix(imp, modulePath), "/")), imp)
			case !isStandard(imp):
				t.Errorf("%s imports %s, which is not in the standard library", importPath, imp)
			}
		}
	}
	visit(".", modulePath)
	if len(seen) == 0 {
		t.Fatal("read no package")
	}
}

// isStandard reports whether path is a standard library package: one the
// go tool finds in GOROOT.
func isStandard(path string) bool {
	p, err := build.Default.Import(path, "", build.FindOnly)
	return err == nil && p.Goroot
}
