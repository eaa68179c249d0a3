#!/usr/bin/env python3
"""What running flood's shards on Dask costs: `flood --workers 2` vs `flood --cluster local:2`.

Starts one `socktools serve --mode echo` and runs, against it, alternately
(A B A B ..., so both paths meet the same machine load):

* A: ``socktools flood --port P --workers 2 ...``        -- two local worker processes;
* B: ``socktools flood --port P --cluster local:2 ...``  -- two shards on a LocalCluster.

Each run's throughput is its traffic phase's answered requests per second
(the JSON result's ``requests.per_second``: LocalCluster's start-up is not in
it).  Printed: every run, the median of each path, and the ratio B / A.
Target (issue 13): the cluster path costs at most 10 % throughput (ratio >= 0.90).

Usage:
  python benchmarks/bench_flood_cluster.py                     # 3 rounds of 5 s, 100 connections
  python benchmarks/bench_flood_cluster.py --rounds 1 --duration 2

Needs Dask: ``pip install 'dask[distributed]'``.  Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Issue 13: the cluster path keeps at least this share of the local path's throughput.
TARGET_RATIO = 0.90


def flood(port: int, path: list, args) -> dict:
    cmd = [sys.executable, "-m", "socktools", "flood", "--port", str(port), "--conns", str(args.conns),
           "--size", str(args.size), "--duration", f"{args.duration}s", "--json", *path]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.duration + 180)
    if run.returncode != 0 or not run.stdout.strip():
        sys.exit(f"flood failed ({run.returncode}): {' '.join(cmd[2:])}\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="traffic phase of each run, seconds")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--server-workers", type=int, default=1)
    args = ap.parse_args()
    try:
        import distributed  # noqa: F401
    except ImportError:
        sys.exit("needs Dask: pip install 'dask[distributed]'")

    serve = subprocess.Popen([sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0",
                              "--workers", str(args.server_workers), "--json", "--stats-interval", "0", "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = json.loads(serve.stdout.readline())["port"]
        paths = {"flood --workers 2": ["--workers", "2"], "flood --cluster local:2": ["--cluster", "local:2"]}
        rates: dict = {name: [] for name in paths}
        print(f"echo server on 127.0.0.1:{port} ({args.server_workers} worker); {args.conns} connections, "
              f"{args.size}-byte payloads, {args.duration:g} s per run, {args.rounds} round(s), alternating")
        for r in range(args.rounds):
            for name, path in paths.items():
                doc = flood(port, path, args)
                rps = doc["requests"]["per_second"]
                fails = doc["connections"]["failed"] + doc["errors_total"]
                rates[name].append(rps)
                p99 = (doc.get("latency_us") or {}).get("p99")
                print(f"  round {r + 1}  {name:26} {rps:>12,.0f} req/s  p99 {p99:,.0f} µs  "
                      f"failures {fails}  wall {doc['elapsed']:.1f} s")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate()
    (local_name, local), (cluster_name, cluster) = rates.items()
    a, b = statistics.median(local), statistics.median(cluster)
    ratio = b / a if a else 0.0
    print(f"median  {local_name}: {a:,.0f} req/s · {cluster_name}: {b:,.0f} req/s · ratio {ratio:.3f}")
    print(f"target (cluster path costs <= {1 - TARGET_RATIO:.0%} throughput, ratio >= {TARGET_RATIO}): "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}")


if __name__ == "__main__":
    main()
