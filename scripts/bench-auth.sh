#!/bin/bash
# The cost of authentication: alternates allot-bench's throughput workload
# against a server without auth and one with --auth keys, same build, 3
# rounds, and prints pairs/s and server CPU per pair of each run (take the
# medians). Run from the repository root; builds into a temporary directory.
set -euo pipefail
B=$(mktemp -d)
trap 'rm -rf "$B"' EXIT
go build -o "$B/allot" ./cmd/allot
go build -o "$B/allot-bench" ./cmd/allot-bench
KEY="allot_0123456789ab_$(printf 'ab%.0s' {1..32})"
start() { # $1 = data dir, rest = flags; prints the API's URL
  local dir=$1; shift
  ALLOT_BOOTSTRAP_KEY=$KEY "$B/allot" server --addr 127.0.0.1:0 --data-dir "$dir" --sync normal --log-level error "$@" > "$dir.out" 2>&1 &
  echo $! > "$dir.pid"
  for _ in $(seq 100); do
    if grep -q "listening on" "$dir.out" 2>/dev/null; then break; fi; sleep 0.1
  done
  sed -n 's/.*listening on \(http:[^ ]*\)/\1/p' "$dir.out"
}
for round in 1 2 3; do
  for mode in off keys; do
    dir=$B/data-$mode-$round
    if [ "$mode" = keys ]; then url=$(start "$dir" --auth keys); k=$KEY; else url=$(start "$dir"); k=""; fi
    res=$("$B/allot-bench" --url "$url" --api-key "$k" --workload throughput --duration 8s --warmup 2s --json | tail -1)
    kill "$(cat "$dir.pid")"; wait "$(cat "$dir.pid")" 2>/dev/null || true
    echo "round $round auth=$mode $res"
  done
done
