#!/usr/bin/env bash
# Starts a durable allot server (--sync full) in a temporary directory, runs
# the benchmark workloads against it over loopback HTTP, then compares it in
# the same run (allot-bench -compare) with three allot replicas over
# PostgreSQL (through the leader and through a follower), Prefect's
# conditional UPDATE on the same PostgreSQL, and a Redis Lua semaphore.
# What does not answer (PostgreSQL, Redis) is skipped with a line saying so.
# Usage: scripts/bench.sh [allot-bench flags...]   (default: -workload all)
# Environment: ALLOT_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test?sslmode=disable),
# ALLOT_BENCH_REDIS_ADDR (default 127.0.0.1:6379), ALLOT_BENCH_COMPARE=0 to skip the comparison.
# The workloads are cmd/allot-bench's (cmd/allot-bench/internal/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./allot ] && [ -x ./allot-bench ] || { go build -o allot ./cmd/allot && go build -o allot-bench ./cmd/allot-bench; }
dir=$(mktemp -d)
port=${ALLOT_BENCH_PORT:-4290}
pg=${ALLOT_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
export ALLOT_BENCH_PG_URL=$pg
schema=allot_bench_replicas_$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${replicas:-}" ]; then psql "$pg" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
wait_up() {
  for _ in $(seq 100); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
./allot server --addr "127.0.0.1:$port" --data-dir "$dir/data" --sync "${ALLOT_BENCH_SYNC:-full}" --log-level warn >"$dir/server.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$port/api/health"
./allot-bench -url "http://127.0.0.1:$port/api" "$@"
[ "${ALLOT_BENCH_COMPARE:-1}" = 0 ] && exit 0

also=()
if command -v psql >/dev/null && psql "$pg" -qc "CREATE SCHEMA $schema" >/dev/null 2>&1; then
  replicas=1
  sep='?'; case $pg in *\?*) sep='&' ;; esac
  for i in 1 2 3; do
    ./allot server --addr "127.0.0.1:$((port + i))" --data-dir "$dir/r$i" --database "$pg${sep}search_path=$schema" \
      --log-level warn >"$dir/replica$i.log" 2>&1 &
    pids+=($!)
  done
  leader='' follower=''
  for _ in $(seq 100); do
    for i in 1 2 3; do
      if curl -fs "http://127.0.0.1:$((port + i))/api/ready?role=leader" >/dev/null 2>&1; then leader=$((port + i)); fi
    done
    [ -n "$leader" ] && break
    sleep 0.1
  done
  for i in 1 2 3; do
    [ "$((port + i))" != "$leader" ] && follower=$((port + i)) && break
  done
  if [ -n "$leader" ]; then
    also=(-also "replicas-leader=http://127.0.0.1:$leader/api" -also "replicas-follower=http://127.0.0.1:$follower/api")
  else
    echo "allot-bench: replicas skipped: none took the lead within 10 s (logs in $dir)"
  fi
else
  echo "allot-bench: replicas skipped: PostgreSQL does not answer at $pg (or psql is missing)"
fi
./allot-bench -url "http://127.0.0.1:$port/api" -compare "${also[@]}" "$@"
