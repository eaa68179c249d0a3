#!/usr/bin/env python3
"""flood against real servers, side by side with each server's own load tool.

Pairs, each on one server started here, the server pinned to one CPU and the
load (either tool) to the other, runs alternating A, B, A, B...:

  redis      flood --mode redis (PING / SET)  vs  redis-benchmark -t ping_inline,set -c 100 -P 1
  http       flood --mode http --path /        vs  wrk -t1 -c100          (nginx, one worker)
  raw        flood --mode raw --reply-bytes 64 vs  flood --mode echo      (socktools serve --mode echo)
  memcached  the plug-in (examples/)           vs  the same bytes in raw mode (get, reply until END)
  postgres   the plug-in (SELECT 1, SCRAM login) vs  pgbench -n -f select1.sql -c 100 -j 1 (PostgreSQL)
  auth       flood --mode redis --setup 'AUTH s3cret' PING  vs  redis-benchmark -a s3cret (requirepass)
  unix       flood --unix redis.sock --mode redis PING      vs  redis-benchmark -s redis.sock
  churn      flood --mode http --churn 1 (a connection per request)  vs  wrk -H 'Connection: close'

Every flood run uses 100 connections and one worker process (one CPU).  It
prints requests/s per run, the best of each side, and the ratio against the
target (flood/redis-benchmark >= 0.95, flood/wrk >= 0.9, raw/echo >= 0.95,
plug-in/raw >= 0.7, plug-in/pgbench >= 0.9; auth and unix >= 0.95, churn >= 0.9).  The best
run is the least disturbed one on a shared machine; say so when quoting the figures.

With ``--before DIR`` (a checkout of an earlier socktools, e.g. ``git worktree add
/tmp/before <commit>``) every flood side also runs from that code, alternating with the
others, and a third row and ratio say how today's flood compares with it in the same run.

Usage:
  python benchmarks/bench_flood_peers.py --seconds 2 --rounds 1
  python benchmarks/bench_flood_peers.py --pairs redis,http --seconds 5 --rounds 3
  python benchmarks/bench_flood_peers.py --pairs http --before /tmp/before --rounds 5 --seconds 4
  python benchmarks/bench_flood_peers.py --pairs auth,unix,churn --rounds 3

Needs 2 CPUs, redis-server, redis-benchmark, nginx, wrk, memcached, postgresql (its pgbench).
Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from peers import Memcached, Nginx, Postgres, Redis, which  # noqa: E402

SERVER_CPU, LOAD_CPU = 0, 1
TARGETS = {"redis": 0.95, "http": 0.9, "raw": 0.95, "memcached": 0.7, "postgres": 0.9, "auth": 0.95,
           "unix": 0.95, "churn": 0.9}


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


class PinnedPeer:
    """Wrap a peer so that its server process runs on SERVER_CPU."""

    def __init__(self, peer) -> None:
        peer.preexec = pinned(SERVER_CPU)
        self.peer = peer

    def __enter__(self):
        return self.peer.start()

    def __exit__(self, *exc):
        self.peer.stop()


def flood(port, seconds: float, *args: str, code: Path = ROOT) -> float:
    """One flood run from the socktools in ``code`` (this checkout by default); ``port`` None:
    the target is in ``args`` (--unix PATH)."""
    target = ["--port", str(port)] if port is not None else []
    cmd = [sys.executable, "-m", "socktools", "flood", *target, "--conns", "100",
           "--workers", "1", "--duration", f"{seconds}s", "--json", *args]
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env,
                         preexec_fn=pinned(LOAD_CPU), timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"flood failed: {out.stderr[-400:]}")
    doc = json.loads(out.stdout)
    if doc["errors_total"] or doc["reply_failures_total"]:
        raise RuntimeError(f"flood saw failures: {doc['errors']} {doc['reply_failures']}")
    # CPU per request: far steadier than the rate on a busy machine (other processes take
    # turns on the CPUs; they do not add to our own CPU time as much as to our wall time).
    share = doc["workers"][0]["cpu_share"] or 0.0
    answered = doc["requests"]["traffic_answered"] or 1
    label = " ".join(args) + ("" if code == ROOT else f"  [before: {code}]")
    CPU_US.setdefault(label, []).append(share * doc["phases"].get("traffic", 0) / answered * 1e6)
    return doc["requests"]["per_second"]


#: flood's CPU microseconds per request, by its arguments (printed at the end).
CPU_US: dict = {}


def redis_benchmark(port, seconds: float, test: str, *extra: str) -> float:
    """``port`` None: the target is in ``extra`` (-s PATH)."""
    n = max(20_000, int(60_000 * seconds))   # redis-benchmark counts requests, not time
    target = ["-p", str(port)] if port is not None else []
    out = subprocess.run([which("redis-benchmark"), *target, *extra, "-t", test, "-c", "100", "-P", "1",
                          "-n", str(n), "--csv"], capture_output=True, text=True,
                         preexec_fn=pinned(LOAD_CPU), timeout=300)
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0].upper().startswith(test.upper().replace("_", "_")) and len(cells) > 1:
            try:
                return float(cells[1])
            except ValueError:
                continue
    raise RuntimeError(f"no figure from redis-benchmark: {out.stdout[-300:]} {out.stderr[-300:]}")


def wrk(port: int, seconds: float, *extra: str, scheme: str = "http") -> float:
    out = subprocess.run([which("wrk"), "-t1", "-c100", f"-d{max(1, round(seconds))}s", *extra,
                          f"{scheme}://127.0.0.1:{port}/"], capture_output=True, text=True,
                         preexec_fn=pinned(LOAD_CPU), timeout=120)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"no figure from wrk: {out.stdout[-300:]} {out.stderr[-300:]}")
    return float(m.group(1))


def pgbench(pg: Postgres, seconds: float, script: Path) -> float:
    """pgbench's transactions per second: one ``SELECT 1`` each, 100 clients on one thread (as
    flood's one worker), no vacuum (no pgbench tables), logging in as bob (SCRAM)."""
    out = subprocess.run([str(pg.bin / "pgbench"), "-n", "-f", str(script), "-c", "100", "-j", "1",
                          "-T", str(max(1, round(seconds)))], capture_output=True, text=True,
                         env=pg.pgbench_env("bob", "s3cret"), preexec_fn=pinned(LOAD_CPU), timeout=120)
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    if not m or out.returncode != 0:
        raise RuntimeError(f"no figure from pgbench: {out.stdout[-300:]} {out.stderr[-300:]}")
    return float(m.group(1))


def serve_echo():
    cmd = [sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0", "--json",
           "--stats-interval", "0", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=pinned(SERVER_CPU))
    return proc, json.loads(proc.stdout.readline())["port"]


BEFORE: list = []      # --before DIR, when given


def plugin(plug: tuple, code: Path) -> tuple:
    """The memcached plug-in's options for the code in ``code`` (before it shipped in the
    package it was ``examples/memcached_plugin.py`` of the checkout)."""
    if (code / "socktools" / "examples" / "memcached.py").is_file():
        return plug
    return ("--protocol", "examples.memcached_plugin:Memcached", *plug[2:])


def alternate(rounds: int, a, b) -> tuple:
    """``rounds`` runs of each side, alternating; with --before, flood side ``a`` from the
    earlier code too, in the same rotation (a, b, a-before, a, b, a-before...)."""
    ra, rb, rc = [], [], []
    for _ in range(rounds):
        ra.append(a())
        rb.append(b())
        if BEFORE:
            rc.append(a(BEFORE[0]))
    ALT_BEFORE[:] = rc
    return ra, rb


ALT_BEFORE: list = []  # the last alternate()'s runs of the earlier code


def mean(xs: list) -> float:
    return sum(xs) / len(xs)


def line(name: str, what_a: str, ra: list, what_b: str, rb: list, target: float) -> str:
    ratio = max(ra) / max(rb) if max(rb) else 0.0
    verdict = "meets" if ratio >= target else "BELOW"
    out = (f"{name:10} {what_a}: {', '.join(f'{x:,.0f}' for x in ra)} req/s (best {max(ra):,.0f})\n"
           f"{'':10} {what_b}: {', '.join(f'{x:,.0f}' for x in rb)} req/s (best {max(rb):,.0f})\n"
           f"{'':10} ratio {ratio:.2f} (target >= {target}: {verdict}); "
           f"means {mean(ra):,.0f} / {mean(rb):,.0f} = {mean(ra) / mean(rb):.2f}")
    if ALT_BEFORE:
        rc = ALT_BEFORE
        out += (f"\n{'':10} the same flood from {BEFORE[0]}: {', '.join(f'{x:,.0f}' for x in rc)} req/s "
                f"(best {max(rc):,.0f})\n{'':10} today / before: best {max(ra) / max(rc):.2f}, "
                f"means {mean(ra) / mean(rc):.2f}; before / {what_b.split()[0]}: best {max(rc) / max(rb):.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--pairs", default="redis,http,raw,memcached,postgres,auth,unix,churn")
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="a checkout of an earlier socktools: its flood runs too, alternating")
    args = ap.parse_args()
    if args.before:
        if not (args.before / "socktools" / "__main__.py").is_file():
            sys.exit(f"bench_flood_peers: --before {args.before}: no socktools package there")
        BEFORE.append(args.before.resolve())
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_flood_peers: needs 2 CPUs (server and load on different ones)")
    pairs = args.pairs.split(",")
    s, r = args.seconds, args.rounds
    print(f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; {r} round(s) of {s:g}s; 100 connections")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "redis" in pairs:
            (tmp / "redis").mkdir()
            with PinnedPeer(Redis(tmp / "redis")) as redis:
                ra, rb = alternate(r, lambda code=ROOT: flood(redis.port, s, "--mode", "redis", "--command",
                                                              "PING", code=code),
                                   lambda: redis_benchmark(redis.port, s, "ping_inline"))
                print(line("redis", "flood --mode redis PING", ra, "redis-benchmark ping_inline", rb,
                           TARGETS["redis"]))
                ra, rb = alternate(r, lambda code=ROOT: flood(redis.port, s, "--mode", "redis", "--command",
                                                              "SET key:{seq} xxx", code=code),
                                   lambda: redis_benchmark(redis.port, s, "set"))
                print(line("redis", "flood --mode redis SET", ra, "redis-benchmark set", rb, TARGETS["redis"]))
        if "http" in pairs:
            (tmp / "nginx").mkdir()
            with PinnedPeer(Nginx(tmp / "nginx")) as nginx:
                ra, rb = alternate(r, lambda code=ROOT: flood(nginx.port, s, "--mode", "http", "--path", "/",
                                                              code=code),
                                   lambda: wrk(nginx.port, s))
                print(line("http", "flood --mode http", ra, "wrk -t1 -c100", rb, TARGETS["http"]))
        if "raw" in pairs:
            proc, port = serve_echo()
            try:
                payload = "x" * 64
                ra, rb = alternate(r, lambda code=ROOT: flood(port, s, "--mode", "raw", "--send", payload,
                                                              "--reply-bytes", "64", code=code),
                                   lambda: flood(port, s, "--mode", "echo", "--size", "64"))
                print(line("raw", "flood --mode raw --reply-bytes 64", ra, "flood --mode echo", rb,
                           TARGETS["raw"]))
            finally:
                proc.stdin.close()
                proc.terminate()
                proc.wait(10)
        if "memcached" in pairs:
            (tmp / "memcached").mkdir()
            with PinnedPeer(Memcached(tmp / "memcached")) as mc:
                plug = ("--protocol", "socktools.examples.memcached:Memcached", "--command", "get k")
                subprocess.run([sys.executable, "-m", "socktools", "request", "--port", str(mc.port), *plug[:2],
                                "--command", "set k hello"], cwd=ROOT, capture_output=True, check=True)
                ra, rb = alternate(r, lambda code=ROOT: flood(mc.port, s, *plugin(plug, code), code=code),
                                   lambda: flood(mc.port, s, "--mode", "raw", "--send", "get k\\r\\n",
                                                 "--reply-until", "END\\r\\n"))
                print(line("memcached", "plug-in (socktools/examples/memcached.py)", ra, "raw --reply-until END",
                           rb, TARGETS["memcached"]))
        if "postgres" in pairs:
            (tmp / "postgres").mkdir()
            with PinnedPeer(Postgres(tmp / "postgres")) as pg:
                script = tmp / "select1.sql"
                script.write_text("SELECT 1;\n")
                plug = ("--protocol", "socktools.examples.postgres:Postgres", "--protocol-option", "user=bob",
                        "--protocol-option", "password=s3cret", "--command", "SELECT 1")
                ra, rb = alternate(r, lambda code=ROOT: flood(pg.port, s, *plug, code=code),
                                   lambda: pgbench(pg, s, script))
                print(line("postgres", "plug-in (socktools/examples/postgres.py)", ra,
                           "pgbench -n -f select1.sql -c 100 -j 1", rb, TARGETS["postgres"]))
        if "auth" in pairs:
            (tmp / "auth").mkdir()
            with PinnedPeer(Redis(tmp / "auth", password="s3cret")) as redis:
                ra, rb = alternate(r, lambda code=ROOT: flood(redis.port, s, "--mode", "redis", "--setup",
                                                              "AUTH s3cret", "--command", "PING", code=code),
                                   lambda: redis_benchmark(redis.port, s, "ping_inline", "-a", "s3cret"))
                print(line("auth", "flood --setup 'AUTH s3cret' PING", ra, "redis-benchmark -a ping_inline", rb,
                           TARGETS["auth"]))
        if "unix" in pairs:
            (tmp / "unix").mkdir()
            with PinnedPeer(Redis(tmp / "unix", unix=True)) as redis:
                sock = str(redis.unix)
                ra, rb = alternate(r, lambda code=ROOT: flood(None, s, "--unix", sock, "--mode", "redis",
                                                              "--command", "PING", code=code),
                                   lambda: redis_benchmark(None, s, "ping_inline", "-s", sock))
                print(line("unix", "flood --unix --mode redis PING", ra, "redis-benchmark -s ping_inline", rb,
                           TARGETS["unix"]))
        if "churn" in pairs:
            (tmp / "churn").mkdir()
            with PinnedPeer(Nginx(tmp / "churn")) as nginx:
                ra, rb = alternate(r, lambda code=ROOT: flood(nginx.port, s, "--mode", "http", "--path", "/",
                                                              "--churn", "1", code=code),
                                   lambda: wrk(nginx.port, s, "-H", "Connection: close"))
                print(line("churn", "flood --mode http --churn 1", ra, "wrk -H 'Connection: close'", rb,
                           TARGETS["churn"]))
    print("\nflood's own CPU per request (best run; steadier than the rates on a shared machine):")
    for what, values in CPU_US.items():
        print(f"  {min(values):7.2f} us  flood {what}")


if __name__ == "__main__":
    main()
