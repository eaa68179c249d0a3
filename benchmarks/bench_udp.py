#!/usr/bin/env python3
"""flood --udp and serve --udp, side by side with sockperf and socat.

Pairs, the server pinned to one CPU and the load to the other, runs alternating A, B, A, B:

  pingpong   flood --udp --conns 1 (closed loop, 64-byte datagrams) against socat's UDP echo
             vs  sockperf ping-pong -m 64 against sockperf's own server
  serve      socktools serve --udp --mode echo  vs  socat UDP4-LISTEN,fork PIPE,
             both under the same flood --udp load (--conns 1, closed loop)
  serve20    the same with --conns 20: 20 datagrams in flight, so the server's own cost shows
             (with one in flight both sides wait on the other CPU's wake-up: a latency test);
             socat's fork mode misroutes some first datagrams of concurrent peers (docs/flood.md)

Targets: flood >= 0.8x sockperf's round trips/s; serve >= 1.0x socat.  Each side is a round
trip per datagram, one in flight: the rate is 1 / (the round-trip time), so the ratio says
how much of each round trip the Python side costs.  The best run of each side is the least
disturbed on a shared machine; the means are printed beside it.

Usage:
  python benchmarks/bench_udp.py --seconds 3 --rounds 3
  python benchmarks/bench_udp.py --pairs pingpong --rounds 5

Needs 2 CPUs, socat, sockperf (Debian: apt-get install socat sockperf).  Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from peers import free_port  # noqa: E402

SERVER_CPU, LOAD_CPU = 0, 1
TARGETS = {"pingpong": 0.8, "serve": 1.0, "serve20": 1.0}


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        sys.exit(f"bench_udp: {binary} is not installed (Debian: apt-get install {binary})")
    return path


class Server:
    """A UDP server pinned to SERVER_CPU, ready once its port is bound (ss says so)."""

    def __init__(self, cmd: list, port: int) -> None:
        self.port = port
        # Its own process group: socat's fork mode leaves a child per peer, stopped with it.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.PIPE, preexec_fn=pinned(SERVER_CPU),
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._bound():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} did not bind port {port}")
            time.sleep(0.02)

    def _bound(self) -> bool:
        out = subprocess.run(["ss", "-Huan", f"sport = :{self.port}"], capture_output=True, text=True).stdout
        return bool(out.strip())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)    # the server and any child it forked
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def socat() -> Server:
    port = free_port()
    # -T2: a child idle for 2 s exits by itself too
    return Server([need("socat"), "-T2", f"UDP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"], port)


def sockperf_server() -> Server:
    port = free_port()
    return Server([need("sockperf"), "server", "-i", "127.0.0.1", "-p", str(port)], port)


def serve_udp() -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "socktools", "serve", "--udp", "--mode", "echo", "--port", str(port),
                   "--workers", "1", "--stats-interval", "0"], port)


def flood(port: int, seconds: float, conns: int = 1) -> float:
    out = subprocess.run([sys.executable, "-m", "socktools", "flood", "--udp", "--port", str(port),
                          "--conns", str(conns), "--workers", "1", "--size", "64", "--duration", f"{seconds}s",
                          "--json"], capture_output=True, text=True, cwd=ROOT, preexec_fn=pinned(LOAD_CPU),
                         timeout=120)
    doc = json.loads(out.stdout)
    d = doc["datagrams"]
    if d["lost"] or d["foreign"]:
        print(f"  (flood: {d['lost']} lost, {d['foreign']} unplaced of {d['sent']})")
    return doc["requests"]["per_second"]


def sockperf_pp(port: int, seconds: float) -> float:
    out = subprocess.run([need("sockperf"), "ping-pong", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
                          "-t", str(max(1, round(seconds)))], capture_output=True, text=True,
                         preexec_fn=pinned(LOAD_CPU), timeout=120)
    m = re.search(r"RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", out.stdout + out.stderr)
    if not m:
        raise RuntimeError(f"no figure from sockperf: {(out.stdout + out.stderr)[-400:]}")
    return int(m.group(3)) / float(m.group(1))


def alternate(rounds: int, a, b) -> tuple:
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(a())
        rb.append(b())
    return ra, rb


def line(name: str, what_a: str, ra: list, what_b: str, rb: list, target: float) -> str:
    ratio = max(ra) / max(rb)
    mean = (sum(ra) / len(ra)) / (sum(rb) / len(rb))
    return (f"{name:9} {what_a}: {', '.join(f'{x:,.0f}' for x in ra)} round trips/s (best {max(ra):,.0f})\n"
            f"{'':9} {what_b}: {', '.join(f'{x:,.0f}' for x in rb)} round trips/s (best {max(rb):,.0f})\n"
            f"{'':9} ratio {ratio:.2f} (target >= {target}: {'meets' if ratio >= target else 'BELOW'}); "
            f"means {mean:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--pairs", default="pingpong,serve,serve20")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_udp: needs 2 CPUs (server and load on different ones)")
    pairs = args.pairs.split(",")
    s, r = args.seconds, args.rounds
    print(f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; {r} round(s) of {s:g}s; "
          f"64-byte datagrams, one socket and one in flight unless the pair says otherwise")
    if "pingpong" in pairs:
        with socat() as echo, sockperf_server() as sp:
            ra, rb = alternate(r, lambda: flood(echo.port, s), lambda: sockperf_pp(sp.port, s))
        print(line("pingpong", "flood --udp (vs socat echo)", ra, "sockperf ping-pong (vs its server)", rb,
                   TARGETS["pingpong"]))
    if "serve" in pairs:
        with serve_udp() as ours, socat() as theirs:
            ra, rb = alternate(r, lambda: flood(ours.port, s), lambda: flood(theirs.port, s))
        print(line("serve", "socktools serve --udp", ra, "socat UDP4-LISTEN,fork PIPE", rb, TARGETS["serve"]))
    if "serve20" in pairs:
        with serve_udp() as ours, socat() as theirs:
            ra, rb = alternate(r, lambda: flood(ours.port, s, 20), lambda: flood(theirs.port, s, 20))
        print(line("serve20", "socktools serve --udp, 20 in flight", ra, "socat, 20 in flight", rb,
                   TARGETS["serve20"]))


if __name__ == "__main__":
    main()
