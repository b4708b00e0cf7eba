#!/usr/bin/env python3
"""Benchmark of the Python client: acquire+release pairs per second of
``--workers`` threads over ``--limits`` one-slot limits, each pair
``with client.concurrency(random limit): pass`` (waiting in line on the
server), and the client's own CPU time per call; next to the Go figure of
``allot-bench -workload throughput`` against the same server, when
``--go-bench`` names it.

    python3 clients/python/bench.py --url http://127.0.0.1:4200/api
    python3 clients/python/bench.py --server ./allot --go-bench ./allot-bench   # make bench-python

Standard library only; run it from the repository or with the package installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import allot  # noqa: E402


def start_server(binary: str, tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/api"
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen([binary, "server", "--addr", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(tmp, "data"), "--sync", os.environ.get("ALLOT_BENCH_SYNC", "full"),
                             "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"bench: server {binary} did not start")
            time.sleep(0.05)


def throughput(client: allot.Client, names: list[str], workers: int, warmup: float, duration: float
               ) -> tuple[int, float, float, list[float]]:
    """Runs the load; returns pairs, seconds and process CPU seconds of the
    measured window, and the pairs' latencies in seconds."""
    stop = threading.Event()
    measuring = threading.Event()
    counts = [0] * workers
    lat: list[list[float]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        rnd = random.Random(i)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                with client.concurrency(rnd.choice(names), timeout_seconds=30, lease_duration=60, strict=True):
                    pass
                if measuring.is_set():
                    counts[i] += 1
                    lat[i].append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    measuring.set()
    time.sleep(duration)
    measuring.clear()
    cpu1, t1 = time.process_time(), time.perf_counter()
    stop.set()
    for t in threads:
        t.join(60)
    if errors:
        raise SystemExit(f"bench: {len(errors)} workers failed, first: {errors[0]!r}")
    return sum(counts), t1 - t0, cpu1 - cpu0, [x for xs in lat for x in xs]


def go_figure(go_bench: str, url: str, workers: int, limits: int, duration: float) -> dict[str, object]:
    out = subprocess.run([go_bench, "-url", url, "-workload", "throughput", "-nethttp", "-workers", str(workers),
                          "-limits", str(limits), "-duration", f"{duration}s", "-json", "-cleanup"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("{"):
            d = json.loads(line)
            if d.get("workload") == "throughput":
                return d  # type: ignore[no-any-return]
    raise SystemExit(f"bench: no throughput line from {go_bench}: {out!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("ALLOT_API_URL", "http://127.0.0.1:4200/api"))
    ap.add_argument("--server", help="an allot binary to start on a free port (with a temporary data directory)")
    ap.add_argument("--go-bench", help="allot-bench, run against the same server for the Go figure")
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--limits", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = a.url
        if a.server:
            proc, url = start_server(a.server, tmp)
        try:
            client = allot.Client(url)
            prefix = f"pybench-{uuid.uuid4().hex[:8]}"
            names = [f"{prefix}-{i}" for i in range(a.limits)]
            for n in names:
                client.create_limit(n, 1)
            try:
                # One thread alone: the latency of a pair and its CPU cost.
                n1, s1, c1, lat1 = throughput(client, names, 1, a.warmup / 2, a.duration / 2)
                pairs, secs, cpu, lat = throughput(client, names, a.workers, a.warmup, a.duration)
            finally:
                for n in names:
                    client.delete_limit(n)
                client.close()
            res: dict[str, object] = {
                "workload": "python-throughput",
                "python": sys.version.split()[0],
                "workers": a.workers,
                "limits": a.limits,
                "seconds": round(secs, 3),
                "pairs": pairs,
                "pairs_per_second": round(pairs / secs, 1),
                "pair_p50_ms": round(statistics.median(lat) * 1e3, 3) if lat else None,
                "client_cpu_us_per_call": round(cpu / max(pairs, 1) / 2 * 1e6, 1),
                "single_thread_pair_p50_ms": round(statistics.median(lat1) * 1e3, 3) if lat1 else None,
                "single_thread_client_cpu_us_per_call": round(c1 / max(n1, 1) / 2 * 1e6, 1),
            }
            if a.go_bench:
                g = go_figure(a.go_bench, url, a.workers, a.limits, a.duration)
                res["go_pairs_per_second"] = g.get("pairs_per_second")
                gps = g.get("pairs_per_second")
                if isinstance(gps, (int, float)) and gps:
                    res["python_to_go"] = round(pairs / secs / gps, 3)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    if a.json:
        print(json.dumps(res))
    else:
        line = (f"python {res['python']}: {res['pairs_per_second']} pairs/s ({a.workers} threads, {a.limits} limits, "
                f"pair p50 {res['pair_p50_ms']} ms); client CPU {res['client_cpu_us_per_call']} µs per call "
                f"({res['single_thread_client_cpu_us_per_call']} µs alone, one-thread pair p50 "
                f"{res['single_thread_pair_p50_ms']} ms)")
        if "go_pairs_per_second" in res:
            line += f"; Go (allot-bench -nethttp): {res['go_pairs_per_second']} pairs/s, python/go {res.get('python_to_go')}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
