#!/usr/bin/env bash
# Starts a durable allot server (--sync full) in a temporary directory, runs
# the benchmark workloads against it over loopback HTTP, and stops it.
# Usage: scripts/bench.sh [allot-bench flags...]   (default: -workload all)
# The workloads are cmd/allot-bench's (cmd/allot-bench/internal/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./allot ] && [ -x ./allot-bench ] || { go build -o allot ./cmd/allot && go build -o allot-bench ./cmd/allot-bench; }
dir=$(mktemp -d)
port=${ALLOT_BENCH_PORT:-4290}
./allot server --addr "127.0.0.1:$port" --data-dir "$dir/data" --sync "${ALLOT_BENCH_SYNC:-full}" --log-level warn >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1 && break
  sleep 0.1
done
./allot-bench -url "http://127.0.0.1:$port/api" "$@"
