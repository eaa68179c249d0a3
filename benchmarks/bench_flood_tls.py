#!/usr/bin/env python3
"""flood and serve over TLS, side by side with the tools people compare them with.

Pairs, each on one server started here, the server pinned to one CPU and the load
(either side) to the other, runs alternating A, B, A, B...:

  https      flood --mode http --tls              vs  wrk https:// -t1 -c100       (nginx ssl, one worker)
  handshake  flood --mode http --tls --churn 1    vs  wrk -H 'Connection: close' https://
  redis      flood --mode redis --tls PING        vs  redis-benchmark --tls -t ping_inline
  serve      socktools serve --tls --mode echo    vs  asyncio+uvloop TLS echo, both under flood --tls echo
  cpu        flood's CPU per request: --tls echo  vs  plaintext echo (each against socktools serve)

wrk (Debian's 4.1) negotiates TLS 1.2 and resumes its sessions: nginx's ``$ssl_session_reused``
said "r" for 17,786 of 17,796 of its connections with ``Connection: close``.  So flood runs
with ``--tls-max 1.2`` against it, and ``--tls-resume`` in the handshake pair: the same work.
Targets: https >= 0.9x wrk, handshakes/s >= 0.9x wrk's, redis >= 0.95x redis-benchmark,
serve >= 1.0x uvloop, and TLS CPU per request <= 1.6x plaintext.  Every flood run uses 100
connections and one worker process; certificates are made here (trustme) for 127.0.0.1,
and flood verifies them (--cafile).  The best run of each side is the least disturbed one
on a shared machine: quote it as such, with the means beside it.

Usage:
  python benchmarks/bench_flood_tls.py --seconds 3 --rounds 3
  python benchmarks/bench_flood_tls.py --pairs https,handshake --rounds 5

Needs 2 CPUs, nginx, wrk, redis-server, redis-benchmark, trustme, uvloop (for the serve pair).
Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from bench_flood_peers import (CPU_US, LOAD_CPU, SERVER_CPU, PinnedPeer, alternate, flood,  # noqa: E402
                               line, pinned, wrk)
from peers import Certs, Nginx, Redis, which  # noqa: E402

TARGETS = {"https": 0.9, "handshake": 0.9, "redis": 0.95, "serve": 1.0}
#: TLS may cost flood this much more CPU per request than plaintext (the issue's bound).
CPU_TARGET = 1.6


def redis_benchmark_tls(port: int, seconds: float, ca: Path) -> float:
    n = max(20_000, int(40_000 * seconds))   # redis-benchmark counts requests, not time
    out = subprocess.run([which("redis-benchmark"), "-p", str(port), "--tls", "--cacert", str(ca),
                          "-t", "ping_inline", "-c", "100", "-P", "1", "-n", str(n), "--csv"],
                         capture_output=True, text=True, preexec_fn=pinned(LOAD_CPU), timeout=300)
    for row in out.stdout.splitlines():
        cells = [c.strip('"') for c in row.split(",")]
        if cells and cells[0].upper().startswith("PING_INLINE") and len(cells) > 1:
            return float(cells[1])
    raise RuntimeError(f"no figure from redis-benchmark: {out.stdout[-300:]} {out.stderr[-300:]}")


class Server:
    """A server process pinned to SERVER_CPU whose first stdout line says its port."""

    def __init__(self, cmd: list, port_of) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     preexec_fn=pinned(SERVER_CPU))
        self.port = port_of(self.proc.stdout.readline())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def serve(certs: Certs, tls: bool) -> Server:
    cmd = [sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0", "--json",
           "--stats-interval", "0", "--workers", "1"]
    if tls:
        cmd += ["--tls", "--cert", str(certs.cert), "--key", str(certs.key)]
    return Server(cmd, lambda first: json.loads(first)["port"])


def uvloop_tls(certs: Certs) -> Server:
    cmd = [sys.executable, str(HERE / "servers" / "uvloop_echo.py"), "--port", "0",
           "--cert", str(certs.cert), "--key", str(certs.key)]
    return Server(cmd, lambda first: int(first.rsplit(":", 1)[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--pairs", default="https,handshake,redis,serve,cpu")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_flood_tls: needs 2 CPUs (server and load on different ones)")
    pairs = args.pairs.split(",")
    s, r = args.seconds, args.rounds
    print(f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; {r} round(s) of {s:g}s; 100 connections; TLS verified")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        certs = Certs(tmp)
        tls = ("--tls", "--cafile", str(certs.ca))
        if "https" in pairs or "handshake" in pairs:
            (tmp / "nginx").mkdir()
            with PinnedPeer(Nginx(tmp / "nginx", tls=certs)) as nginx:
                like_wrk = (*tls, "--tls-max", "1.2")
                if "https" in pairs:
                    ra, rb = alternate(r, lambda code=ROOT: flood(nginx.port, s, "--mode", "http", *like_wrk,
                                                                  code=code),
                                       lambda: wrk(nginx.port, s, scheme="https"))
                    print(line("https", "flood --mode http --tls (1.2)", ra, "wrk https:// -t1 -c100", rb,
                               TARGETS["https"]))
                if "handshake" in pairs:
                    ra, rb = alternate(r, lambda code=ROOT: flood(nginx.port, s, "--mode", "http", "--churn", "1",
                                                                  *like_wrk, "--tls-resume", code=code),
                                       lambda: wrk(nginx.port, s, "-H", "Connection: close", scheme="https"))
                    print(line("handshake", "flood --tls --churn 1 --tls-resume (1.2)", ra,
                               "wrk -H 'Connection: close' https://", rb, TARGETS["handshake"]))
        if "redis" in pairs:
            (tmp / "redis").mkdir()
            with PinnedPeer(Redis(tmp / "redis", tls=certs)) as redis:
                ra, rb = alternate(r, lambda code=ROOT: flood(redis.port, s, "--mode", "redis", "--command", "PING",
                                                              *tls, code=code),
                                   lambda: redis_benchmark_tls(redis.port, s, certs.ca))
                print(line("redis", "flood --mode redis --tls PING", ra, "redis-benchmark --tls ping_inline", rb,
                           TARGETS["redis"]))
        if "serve" in pairs:
            echo = ("--mode", "echo", "--size", "64", *tls)
            with serve(certs, tls=True) as ours, uvloop_tls(certs) as theirs:
                ra, rb = alternate(r, lambda code=ROOT: flood(ours.port, s, *echo, code=code),
                                   lambda: flood(theirs.port, s, *echo))
            print(line("serve", "socktools serve --tls (echo)", ra, "asyncio+uvloop TLS echo", rb, TARGETS["serve"]))
        if "cpu" in pairs:
            with serve(certs, tls=True) as secure, serve(certs, tls=False) as plain:
                def run_tls(code=ROOT):
                    return flood(secure.port, s, "--mode", "echo", "--size", "64", *tls, code=code)

                def run_plain():
                    return flood(plain.port, s, "--mode", "echo", "--size", "64")
                alternate(r, run_tls, run_plain)
            key_tls = " ".join(("--mode", "echo", "--size", "64", *tls))
            key_plain = " ".join(("--mode", "echo", "--size", "64"))
            ratio = min(CPU_US[key_tls]) / min(CPU_US[key_plain])
            print(f"cpu        flood's CPU per request: TLS {min(CPU_US[key_tls]):.2f} us, plaintext "
                  f"{min(CPU_US[key_plain]):.2f} us: {ratio:.2f}x (target <= {CPU_TARGET}: "
                  f"{'meets' if ratio <= CPU_TARGET else 'ABOVE'})")
    print("\nflood's own CPU per request (best run; steadier than the rates on a shared machine):")
    for what, values in CPU_US.items():
        print(f"  {min(values):7.2f} us  flood {what}")


if __name__ == "__main__":
    main()
