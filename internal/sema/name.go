package sema

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLength is the longest limit name accepted, in bytes.
const MaxNameLength = 512

// ValidateName reports why name cannot name a limit, or nil. A name is
// non-empty valid UTF-8 of at most MaxNameLength bytes without '/', '%', '&',
// '>', '<' or control characters, and not "." or ".." (Prefect's rule,
// plus what a URL path cannot carry).
func ValidateName(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case name == "." || name == "..":
		return "must not be . or .. (they cannot appear in a URL path)"
	case len(name) > MaxNameLength:
		return "must be at most 512 bytes"
	case !utf8.ValidString(name):
		return "must be valid UTF-8"
	case strings.ContainsAny(name, "/%&><"):
		return "must not contain any of / % & > <"
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "must not contain control characters"
	}
	return ""
}

func isPattern(name string) bool { return strings.IndexByte(name, '*') >= 0 }

// MatchPattern reports whether a template named pattern gives its settings
// to name: '*' stands for any run of characters, the empty one included.
// It is the rule the Machine applies; clients that explain a missing limit
// use it too.
func MatchPattern(pattern, name string) bool {
	return isPattern(pattern) && matchPattern(pattern, name)
}

// matchPattern reports whether name matches pattern, where '*' stands for
// any run of characters, the empty one included.
func matchPattern(pattern, name string) bool {
	// Iterative glob match with backtracking to the last star.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// specificity orders templates: more literal characters first.
func specificity(pattern string) int { return len(pattern) - strings.Count(pattern, "*") }
