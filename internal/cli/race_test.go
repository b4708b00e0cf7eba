//go:build race

package cli_test

// raceEnabled says the tests run with -race, so the allot binary they
// start is built with it too.
const raceEnabled = true
