// Package jsonbody reads a request's JSON object member by member, with
// field-level problems: Parse splits the object, and Body's readers (Str,
// Int, Number, Strs, Object, …) take each member, check its type and
// bounds, and record the first problem as an *Error naming the member at
// fault ("holder.type"); Finish reports it, and in strict mode the members
// no reader asked for.
//
// # The one-pass scanner
//
// Parse splits an object with a scanner of its own (scan.go) that makes one
// pass over the text, without reflection, and slices plain ASCII strings
// instead of decoding them. Whatever it does not take (broken JSON, deep
// nesting, escapes, very many members) goes to encoding/json, whose
// answers and error texts users see; FuzzScanObject and FuzzDecodeString
// check that both read every input alike, so the scanner can only cost
// speed, never change an answer.
//
// It earns its place on the request clients send for every unit of work,
// increment-with-lease. BenchmarkIncrementWithLeaseBody reads that body as
// a handler does:
//
//	go test ./internal/jsonbody -run '^$' -bench IncrementWithLeaseBody -benchtime 200000x -count 4
//
//	scanner                  ~0.8 µs/op   1440 B/op    9 allocs/op
//	encoding_json_members    ~4.0 µs/op   2480 B/op   49 allocs/op
//	encoding_json (struct)   ~2.0 µs/op   1168 B/op   17 allocs/op
//
// (2 shared cores, December 2026.) Without the scanner Body would split
// the object with encoding/json (encoding_json_members): the scanner saves
// about 3 µs per increment-with-lease, some 3 to 4 % of the server's CPU
// for it (about 90 µs per request, the README's Performance section; the
// saving is larger on bodies with more members). A struct decode
// (encoding_json) would cost about 1 µs more than the scanner but gives
// neither the member at fault nor the unknown members of a strict body.
package jsonbody
