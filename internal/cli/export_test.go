package cli

// Thousands is thousands, for the tests of package cli_test.
var Thousands = thousands
