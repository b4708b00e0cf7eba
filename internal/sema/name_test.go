package sema

import "testing"

// refMatch is the obvious recursive definition of matchPattern, memoised so
// that runs of stars stay cheap.
func refMatch(pattern, name string) bool {
	memo := map[[2]int]bool{}
	var match func(p, n int) bool
	match = func(p, n int) bool {
		k := [2]int{p, n}
		if v, ok := memo[k]; ok {
			return v
		}
		var v bool
		switch {
		case p == len(pattern):
			v = n == len(name)
		case pattern[p] == '*':
			v = match(p+1, n) || (n < len(name) && match(p, n+1))
		default:
			v = n < len(name) && pattern[p] == name[n] && match(p+1, n+1)
		}
		memo[k] = v
		return v
	}
	return match(0, 0)
}

func TestMatchPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything", true},
		{"resource:*", "resource:42", true},
		{"resource:*", "resource:", true},
		{"resource:*", "resource", false},
		{"resource:*", "other:resource:42", false},
		{"*:db", "tenant:7:db", true},
		{"*:db", "tenant:7:dbx", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYcZ", false},
		{"**", "x", true},
		{"a*a*a", "aaaa", true},
		{"a*a*a", "aa", false},
		{"tag:*", "TAG:x", false},
	}
	for _, tt := range tests {
		if got := matchPattern(tt.pattern, tt.name); got != tt.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
		if got := refMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v (the reference is wrong)", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func FuzzMatchPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"resource:*", "resource:42"}, {"*", ""}, {"a*b*c", "aXbYbZc"}, {"a*a*a", "aaaa"},
		{"*x*", "yyxyy"}, {"**a", "ba"}, {"é*", "éé"}, {"", "a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if got, want := matchPattern(pattern, name), refMatch(pattern, name); got != want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", pattern, name, got, want)
		}
	})
}

func TestSpecificity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		want    int
	}{
		{"*", 0},
		{"resource:*", 9},
		{"a**b", 2},
	}
	for _, tt := range tests {
		if got := specificity(tt.pattern); got != tt.want {
			t.Errorf("specificity(%q) = %d, want %d", tt.pattern, got, tt.want)
		}
	}
}

func TestDotNamesRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{".", ".."} {
		if why := ValidateName(name); why == "" {
			t.Errorf("ValidateName(%q) accepted it; want it refused (a URL path cannot carry it)", name)
		}
	}
	for _, name := range []string{"...", ".x", "a.b"} {
		if why := ValidateName(name); why != "" {
			t.Errorf("ValidateName(%q) = %q, want accepted", name, why)
		}
	}
}
