#!/usr/bin/env python3
"""How many concurrent connections flood + serve hold on this machine, and what each costs.

Starts ``socktools serve --mode echo`` with enough worker processes for the
file-descriptor limit, then ``socktools flood`` with ``--source`` spreading
the connections over several loopback addresses (each has its own ephemeral
port range), holds them for a while under a light open-loop rate, and prints:

* connections established (and failures, by phase and errno), connect rate;
* Python memory per connection on each side: the growth of the processes'
  RSS from before connecting to while all connections are held, divided by
  the connections (flood's workers report their own; the server's are read
  from /proc);
* kernel socket memory: ``/proc/net/sockstat`` (TCP ``mem`` pages) while
  held, minus before, per connection (two sockets each: both ends);
* which limits were met: fds per process, local ports per source address.

Target (issue 3): 100,000 held with zero failures, >= 15,000 connections/s,
<= 2 KB of Python memory per connection on each side.

Usage:
  python benchmarks/bench_flood_scale.py                      # 100k connections, ~1-2 min
  python benchmarks/bench_flood_scale.py --conns 20000        # smaller
  python benchmarks/bench_flood_scale.py --conns 100000 --sources 127.0.0.2-127.0.0.9 --hold 5

Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from socktools.flood import limits  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def sockstat() -> dict:
    """TCP line of /proc/net/sockstat: inuse, orphan, tw, alloc, mem (pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    return {}


#: Slab caches that grow with each TCP socket: the socket itself, its inode,
#: its file and dentry, and its epoll registration.
SLABS = ("TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")


def slab_bytes() -> int:
    """Bytes in use in :data:`SLABS` (needs read access to /proc/slabinfo, i.e. root); -1 if unknown."""
    try:
        with open("/proc/slabinfo") as f:
            total = 0
            for line in f:
                parts = line.split()
                if parts and parts[0] in SLABS:
                    total += int(parts[1]) * int(parts[3])
            return total
    except (OSError, ValueError, IndexError):
        return -1


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def children(pid: int) -> list:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--sources", default="127.0.0.2-127.0.0.17",
                    help="flood --source (default 16 addresses: each port range stays under a quarter full)")
    ap.add_argument("--workers", type=int, default=0, help="flood workers (default: enough for the fd limit)")
    ap.add_argument("--server-workers", type=int, default=0, help="serve workers (default: enough)")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds to hold them all (default 5)")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s in total while holding")
    ap.add_argument("--connect-rate", type=float, default=None, help="flood --connect-rate")
    ap.add_argument("--connect-timeout", default="20s")
    args = ap.parse_args()

    before, fd_limit, hard = limits.raise_nofile()  # children inherit it
    per_process = fd_limit - limits.FD_RESERVE
    need = math.ceil(args.conns / per_process)
    workers = args.workers or need
    server_workers = args.server_workers or need
    rng = limits.port_range()
    print(f"target {args.conns:,} connections; fd limit {fd_limit:,} per process (hard {hard:,}) "
          f"-> flood {workers} + serve {server_workers} processes; ephemeral ports "
          f"{rng[0]}-{rng[1]} ({rng[1] - rng[0] + 1:,} per source address); --source {args.sources}")

    base_sock = sockstat()
    base_slab = slab_bytes()
    serve = subprocess.Popen([sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0",
                              "--workers", str(server_workers), "--json", "--stats-interval", "0",
                              "--backlog", "4096", "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    port = json.loads(serve.stdout.readline())["port"]
    time.sleep(0.5)
    server_pids = children(serve.pid) or [serve.pid]
    server_rss0 = sum(rss(p) for p in server_pids)

    flood_cmd = [sys.executable, "-m", "socktools", "flood", "--port", str(port), "--conns", str(args.conns),
                 "--workers", str(workers), "--source", args.sources, "--rate", str(args.rate),
                 "--duration", f"{args.hold}s", "--connect-timeout", args.connect_timeout,
                 "--interval", "0.5s", "--json"]
    if args.connect_rate:
        flood_cmd += ["--connect-rate", str(args.connect_rate)]
    print("running:", " ".join(flood_cmd[2:]))
    started = time.monotonic()
    flood = subprocess.Popen(flood_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = {"open": 0}
    stderr_lines: list = []
    threading.Thread(target=lambda: stderr_lines.extend(flood.stderr), daemon=True).start()
    result = None
    for line in flood.stdout:
        event = json.loads(line)
        if event["event"] == "interval":
            if event["phase"] == "traffic" and event["open"] > peak["open"]:
                # All connected and held: sample the kernel and the server now.
                peak = {"open": event["open"], "sockstat": sockstat(), "slab": slab_bytes(),
                        "server_rss": sum(rss(p) for p in server_pids), "t": event["t"]}
        elif event["event"] == "result":
            result = event
    flood.wait()
    serve.send_signal(signal.SIGTERM)
    try:
        serve.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        serve.kill()
    elapsed = time.monotonic() - started
    if result is None:
        sys.exit("flood gave no result: " + "".join(stderr_lines[-5:]))

    c = result["connections"]
    n = c["established"]
    print(f"\nestablished   {n:,} of {args.conns:,} ({c['failed']:,} failed), held {args.hold:g} s; "
          f"max open in one snapshot {peak['open']:,}")
    print(f"connect rate  {c['per_second']:,.0f} connections/s (connect phase "
          f"{result['phases'].get('connect', 0):.2f} s, each confirmed by an echo round trip)")
    if result["errors"]:
        for e in result["errors"]:
            print(f"  failure: {e['phase']} {e['error']} x{e['count']:,}: {e['meaning']}")
    fl_grow = sum(w["rss_connected"] - w["rss_start"] for w in result["workers"])
    if n:
        print(f"flood memory  {fl_grow / n:,.0f} bytes of Python RSS per connection "
              f"({fl_grow / 2**20:,.1f} MiB over {len(result['workers'])} workers)")
    if n and "server_rss" in peak:
        sv_grow = peak["server_rss"] - server_rss0
        print(f"serve memory  {sv_grow / n:,.0f} bytes of Python RSS per connection "
              f"({sv_grow / 2**20:,.1f} MiB over {len(server_pids)} workers)")
        mem_pages = peak["sockstat"].get("mem", 0) - base_sock.get("mem", 0)
        print(f"kernel        TCP sockets in use {peak['sockstat'].get('inuse', 0):,}; socket buffers "
              f"{mem_pages * PAGE / 2**20:,.1f} MiB = {mem_pages * PAGE / n:,.0f} bytes per connection "
              f"(both ends; /proc/net/sockstat 'mem')")
        if base_slab >= 0 and peak.get("slab", -1) >= 0:
            grow = peak["slab"] - base_slab
            print(f"              socket structures {grow / 2**20:,.1f} MiB = {grow / n:,.0f} bytes per "
                  f"connection (both ends; slabs {', '.join(SLABS)} in /proc/slabinfo)")
    lim = result["limits"]
    print(f"limits        fd {lim['fd_limit']:,} per process (hard {lim['fd_hard']:,}): busiest flood worker "
          f"needed {lim['fds_per_worker']:,}; ports: {lim['conns_per_source']:,} connections per source "
          f"address of {lim['ports_per_source']:,}")
    for p in lim["problems"]:
        print(f"  limit met: {p}")
    for w in result["warnings"]:
        print(f"  warning: {w}")
    print(f"total wall time {elapsed:.1f} s")


if __name__ == "__main__":
    main()
