package postgres_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: a Term's renewals
// end with Resign, a pool's with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
