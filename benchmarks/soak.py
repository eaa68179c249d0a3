#!/usr/bin/env python3
"""Soak: a long framed flood of many connections against `socktools serve`; nothing may be lost.

    python benchmarks/soak.py                          # 60 s, 2,000 connections
    python benchmarks/soak.py --duration 15 --conns 500 --interval 5

Starts `socktools serve --mode framed --json` on a free loopback port (its own
process group, stopped at the end), then `socktools flood --mode framed
--port P --conns N --duration D --interval I --json` against it, and prints
one line per interval:

    t  flood sent / answered (running totals)  server counted  failures  server RSS

`server counted` is the server's own request count from its latest stats
event (it reports on its own schedule, so mid-run the two are sampled up to
an interval apart and differ by what was served in between); RSS is the server's, all its processes summed, from
/proc.  At the end, once both have stopped, the three totals must be equal
and failures 0; RSS should stay flat after the connect phase.  Exit status 1
if the totals differ or anything failed.

Loopback only; bounded by --duration (plus the connect phase and a stop
grace); every process it starts it stops.  On a shared machine figures are
indicative: say so when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def socktools(*args: str) -> list:
    """The CLI of this checkout (or the installed package), as a child command."""
    boot = (f"import sys; sys.path[0] = {str(ROOT)!r}; "
            "from socktools.cli import main; main(prog_name='socktools')")
    return [sys.executable, "-c", boot, *args]


def rss_of_tree(pid: int) -> int:
    """RSS in bytes of ``pid`` and its direct children (serve's workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


class Server:
    def __init__(self, workers: int, interval: float) -> None:
        self.proc = subprocess.Popen(socktools("serve", "--mode", "framed", "--port", "0", "--json",
                                               "--workers", str(workers), "--stats-interval", f"{interval}s",
                                               "--quiet"),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        first = json.loads(self.proc.stdout.readline())
        self.port = first["port"]
        self.latest: dict = {}
        self.summary: dict = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "stats":
                self.latest = ev
            elif ev.get("event") == "summary":
                self.summary = ev

    def stop(self) -> dict:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.thread.join(5)
        return self.summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    ap.add_argument("--conns", type=int, default=2000, help="concurrent connections (default 2,000)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between lines (default 10)")
    ap.add_argument("--server-workers", type=int, default=1, help="serve processes (default 1)")
    ap.add_argument("--flood-workers", type=int, default=1, help="flood processes (default 1)")
    args = ap.parse_args(argv)

    server = Server(args.server_workers, args.interval)
    print(f"soak: serve --mode framed on 127.0.0.1:{server.port} ({args.server_workers} worker(s)); "
          f"flood {args.conns:,} connections for {args.duration:g} s ({args.flood_workers} worker(s)); "
          f"{os.cpu_count()} CPUs, shared machine: figures are indicative", flush=True)
    print(f"{'t':>6}  {'sent':>11}  {'answered':>11}  {'server':>11}  {'failures':>8}  {'server RSS':>10}", flush=True)
    rss_start = rss_of_tree(server.proc.pid)
    flood = subprocess.Popen(socktools("flood", "--mode", "framed", "--port", str(server.port),
                                       "--conns", str(args.conns), "--workers", str(args.flood_workers),
                                       "--duration", f"{args.duration}s", "--interval", f"{args.interval}s",
                                       "--json"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sent = answered = 0
    result: dict = {}
    rss_seen = []
    try:
        for line in flood.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "interval":
                sent += ev["requests"]
                answered += ev["responses"]
                rss = rss_of_tree(server.proc.pid)
                rss_seen.append(rss)
                print(f"{ev['t']:6.0f}  {sent:>11,}  {answered:>11,}  {server.latest.get('requests', 0):>11,}  "
                      f"{ev['failed'] + ev['errors']:>8,}  {rss / 2**20:>7.1f} MiB", flush=True)
            elif ev.get("event") == "result":
                result = ev
        flood.wait(timeout=args.duration + 120)
    finally:
        if flood.poll() is None:
            os.killpg(flood.pid, signal.SIGKILL)
            flood.wait()
        summary = server.stop()
    if not result:
        print("soak: flood gave no result: " + flood.stderr.read()[-2000:])
        return 1
    req = result["requests"]
    failures = result["errors_total"] + result["connections"]["failed"] + result["connections"]["lost"]
    counted = summary.get("requests")
    equal = req["sent"] == req["answered"] == counted
    print(f"total   sent {req['sent']:,}  answered {req['answered']:,}  counted by the server {counted:,}: "
          f"{'equal' if equal else 'DIFFERENT'}; failures {failures:,}; "
          f"{req['traffic_answered'] / max(1e-9, args.duration):,.0f} requests/s in traffic")
    if rss_seen:
        print(f"server RSS  {rss_start / 2**20:.1f} MiB idle; {rss_seen[0] / 2**20:.1f} MiB at the first interval; "
              f"{max(rss_seen) / 2**20:.1f} MiB max; {rss_seen[-1] / 2**20:.1f} MiB at the last")
    return 0 if equal and failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
