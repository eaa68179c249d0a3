#!/usr/bin/env python3
"""flood's echo mode against a minimal C epoll client: round trips/s, side by side.

Both clients run the same closed loop -- 100 connections, 64-byte payloads,
one request in flight per connection -- against the same server, with the
load pinned to one CPU and the server to the other.  Runs alternate (C,
flood, C, flood, ...) so that drifting background load hits both alike; the
medians (and the best runs: the least disturbed on a shared machine) are
compared.  Besides round trips/s the script prints the client's
CPU time per round trip (user + system: for C the kernel's accounting of the
child process, for flood its worker's own process_time() over the traffic
phase), which is far less sensitive to other processes than the rate: the
difference between the two clients is the Python overhead.

A third client, ``benchmarks/clients/mapbatch_echo_client.py`` (``--no-ceiling``
skips it), is a yardstick: the least Python per round trip a latency-measuring
client can run (reads and writes of one poll as ``map()`` loops), i.e. the
ceiling for any Python client on this machine.

Servers (``--servers``):
  c      benchmarks/c/flood_echo_server.c, single-threaded epoll: never the
         bottleneck, so the rate measures the client (the fair comparison);
  serve  ``socktools serve --mode echo`` (1 worker): what users will run;
         usually the server is then the limit for both clients.

With ``--before DIR`` (a checkout of an earlier socktools: ``git worktree add /tmp/before
<commit>``) flood from that code runs too, in the same rotation, as "flood (before)".

Usage:
  python benchmarks/bench_flood_throughput.py                 # ~40 s
  python benchmarks/bench_flood_throughput.py --servers c --before /tmp/before --no-ceiling
  python benchmarks/bench_flood_throughput.py --rounds 5 --seconds 5 --servers c

Needs gcc and 2 CPUs.  Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAPBATCH = os.path.join(HERE, "clients", "mapbatch_echo_client.py")
CEILING = "map() ceiling"
BEFORE = "flood (before)"


def compile_c(workdir: str) -> tuple:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        sys.exit("bench_flood_throughput: needs gcc (apt-get install gcc)")
    out = []
    for name in ("flood_echo_client", "flood_echo_server"):
        exe = os.path.join(workdir, name)
        subprocess.run([gcc, "-O2", "-Wall", "-o", exe, os.path.join(HERE, "c", f"{name}.c")], check=True)
        out.append(exe)
    return tuple(out)


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(kind: str, server_exe: str, cpu: int) -> tuple:
    if kind == "c":
        proc = subprocess.Popen([server_exe, "127.0.0.1", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, preexec_fn=pinned(cpu))
        port = int(proc.stdout.readline().split()[1])
        return proc, port, "flood_echo_server.c (epoll, 1 thread)"
    cmd = [sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0", "--json",
           "--stats-interval", "0", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=pinned(cpu))
    port = json.loads(proc.stdout.readline())["port"]
    return proc, port, "socktools serve --mode echo (1 worker)"


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_c(client_exe, port: int, args, cpu: int) -> dict:
    """Run a client that prints {"per_second", "round_trips"} (the C client, the map() yardstick)."""
    before = children_cpu()
    argv = list(client_exe) if isinstance(client_exe, (list, tuple)) else [client_exe]
    out = subprocess.run([*argv, "127.0.0.1", str(port), str(args.conns), str(args.size),
                          str(args.seconds)], capture_output=True, text=True, check=True,
                         preexec_fn=pinned(cpu), timeout=args.seconds + 60)
    cpu_s = children_cpu() - before
    doc = json.loads(out.stdout)
    return {"rate": doc["per_second"], "cpu_us_per_rt": 1e6 * cpu_s / max(1, doc["round_trips"]),
            "round_trips": doc["round_trips"]}


def run_flood(port: int, args, cpu: int, code: str = ROOT) -> dict:
    """One flood run from the socktools in ``code`` (this checkout by default)."""
    cmd = [sys.executable, "-m", "socktools", "flood", "--port", str(port), "--conns", str(args.conns),
           "--workers", "1", "--size", str(args.size), "--duration", f"{args.seconds}s", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=code, preexec_fn=pinned(cpu),
                         env={**os.environ, "PYTHONPATH": code}, timeout=args.seconds + 60)
    if out.returncode != 0:
        sys.exit(f"flood failed: {out.stderr.strip()}")
    doc = json.loads(out.stdout)
    n = doc["requests"]["traffic_answered"]
    # The worker's own CPU time in the traffic phase (process_time, user + system): the
    # interpreter's start-up and the connect phase are not round trips.
    cpu_s = sum(w["cpu_share"] or 0 for w in doc["workers"]) * doc["phases"].get("traffic", 0)
    return {"rate": doc["requests"]["per_second"], "cpu_us_per_rt": 1e6 * cpu_s / max(1, n),
            "round_trips": n, "errors": doc["errors_total"],
            "p99_us": (doc["latency_us"] or {}).get("p99")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each client (default 3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="traffic seconds per run (default 3)")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--servers", default="c,serve", help="comma list of: c, serve (default both)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with everything")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the map() yardstick client (benchmarks/clients/mapbatch_echo_client.py)")
    ap.add_argument("--before", metavar="DIR", help="a checkout of an earlier socktools: its flood runs too")
    args = ap.parse_args()
    if args.before:
        args.before = os.path.abspath(args.before)
        if not os.path.isfile(os.path.join(args.before, "socktools", "__main__.py")):
            sys.exit(f"bench_flood_throughput: --before {args.before}: no socktools package there")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench_flood_throughput: needs 2 CPUs (load on one, server on the other)")
    load_cpu, server_cpu = cpus[0], cpus[1]
    print(f"closed loop, {args.conns} connections, {args.size}-byte echo, {args.seconds:g} s per run, "
          f"{args.rounds} alternating rounds; load on CPU {load_cpu}, server on CPU {server_cpu}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        client_exe, server_exe = compile_c(tmp)
        for kind in args.servers.split(","):
            proc, port, label = start_server(kind.strip(), server_exe, server_cpu)
            runs = {"C epoll client": [], "socktools flood": []}
            if args.ceiling:
                runs[CEILING] = []
            if args.before:
                runs[BEFORE] = []
            try:
                for _ in range(args.rounds):
                    runs["C epoll client"].append(run_c(client_exe, port, args, load_cpu))
                    runs["socktools flood"].append(run_flood(port, args, load_cpu))
                    if args.before:
                        runs[BEFORE].append(run_flood(port, args, load_cpu, args.before))
                    if args.ceiling:
                        runs[CEILING].append(run_c([sys.executable, MAPBATCH], port, args, load_cpu))
            finally:
                stop_server(proc)
            print(f"\nserver: {label}")
            print(f"  {'client':16}{'round trips/s: median':>22}{'best':>10}   {'runs':<30}"
                  f"{'CPU µs/rt (best)':>17}")
            med = {}
            for name, rs in runs.items():
                rates = [r["rate"] for r in rs]
                cpu = min(r["cpu_us_per_rt"] for r in rs)
                med[name] = (statistics.median(rates), max(rates), cpu)
                shown = " ".join(f"{x / 1000:.0f}k" for x in rates)
                print(f"  {name:16}{med[name][0]:>22,.0f}{med[name][1]:>10,.0f}   {shown:<30}{cpu:>17.2f}")
            flood, c = med["socktools flood"], med["C epoll client"]
            ratio, best_ratio, cpu_ratio = flood[0] / c[0], flood[1] / c[1], c[2] / flood[2]
            print(f"  flood / C: {ratio:.2f}x median round trips/s, {best_ratio:.2f}x best; {cpu_ratio:.2f}x by "
                  f"CPU time per round trip (flood +{flood[2] - c[2]:.2f} µs per round trip)")
            if args.before:
                old = med[BEFORE]
                print(f"  flood / flood (before): {flood[0] / old[0]:.2f}x median, {flood[1] / old[1]:.2f}x best, "
                      f"{old[2] / flood[2]:.2f}x by CPU per round trip; before / C: {old[0] / c[0]:.2f}x median, "
                      f"{old[1] / c[1]:.2f}x best")
            if args.ceiling:
                top = med[CEILING]
                print(f"  map() ceiling / C: {top[0] / c[0]:.2f}x median, {top[1] / c[1]:.2f}x best; "
                      f"flood / ceiling: {flood[0] / top[0]:.2f}x median, {flood[1] / top[1]:.2f}x best")
            results[kind] = {"server": label, "runs": runs, "ratio_median": round(ratio, 3),
                             "ratio_best": round(best_ratio, 3), "ratio_cpu": round(cpu_ratio, 3)}
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
