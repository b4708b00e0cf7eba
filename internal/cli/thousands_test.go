package cli_test

import (
	"testing"

	"github.com/allot-dev/allot/internal/cli"
)

// TestThousands pins the count in "Delete 2,000 limits matching …?".
func TestThousands(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 2000: "2,000", 65536: "65,536", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := cli.Thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
