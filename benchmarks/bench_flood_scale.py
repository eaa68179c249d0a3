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

Targets (issue 13): 1,000,000 held with zero failures, >= 15,000 connections/s,
<= 1 KB of Python memory per connection on each side.

Limits: it prints what ``socktools doctor --conns N`` says first, raises its own
open-file limit as far as the process may (root: up to fs.nr_open; said), and
picks enough loopback source addresses.  It never changes a sysctl unasked:
``--sysctl NAME=VALUE`` sets one for the run, prints it, and restores it.

Usage:
  python benchmarks/bench_flood_scale.py                      # 100k connections, ~1-2 min
  python benchmarks/bench_flood_scale.py --conns 20000        # smaller
  python benchmarks/bench_flood_scale.py --conns 100000 --sources 127.0.0.2-127.0.0.9 --hold 5
  sudo python benchmarks/bench_flood_scale.py --conns 1000000 --workers 1 --hold 10   # ~10 GB

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

import resource  # noqa: E402

from socktools.flood import limits  # noqa: E402
from socktools.kernel import capacity  # noqa: E402
from socktools.kernel.doctor import FD_SLACK  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")

#: Issue 13's targets at one million connections.
TARGET_RATE = 15_000
TARGET_BYTES = 1024


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


def cpu_seconds(pids: list) -> float:
    """utime + stime of these processes (children already reaped not included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])


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


def sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def apply_sysctls(pairs: list) -> list:
    """Set NAME=VALUE sysctls the user asked for, loudly; return [(name, old)] to restore."""
    undo = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        path = sysctl_path(name.strip())
        with open(path) as f:
            old = f.read().strip()
        with open(path, "w") as f:
            f.write(value.strip())
        undo.append((name.strip(), old))
        print(f"sysctl: set {name.strip()} = {value.strip()!r} (was {old!r}; restored afterwards)")
    return undo


def restore_sysctls(undo: list) -> None:
    for name, old in reversed(undo):
        with open(sysctl_path(name), "w") as f:
            f.write(old)
        print(f"sysctl: restored {name} = {old!r}")


def print_doctor(conns: int) -> None:
    """What `socktools doctor --conns N` says about this run's limits (only what is not ok)."""
    from socktools.kernel.doctor import DoctorConfig, run_doctor
    report = run_doctor(DoctorConfig(conns=conns))
    shown = [c for c in report.checks if c.status in ("low", "warn") and c.key not in
             ("capture_privilege", "libpcap")]
    print(f"doctor --conns {conns:,}: " + ("nothing in the way" if not shown else
                                           f"{len(shown)} limit(s) to look at:"))
    for c in shown:
        print(f"  [{c.status:>4}] {c.title}: {c.value}; needs {c.need}" + (f"; fix: {c.fix}" if c.fix else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--sources", default="auto",
                    help="flood --source, or 'auto' (default): enough loopback addresses that each "
                         "port range stays under a third full")
    ap.add_argument("--workers", type=int, default=0,
                    help="flood workers (default: enough for the fd limit, at least 1)")
    ap.add_argument("--server-workers", type=int, default=0,
                    help="serve workers (default: enough for the fd limit with a tenth spare)")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds to hold them all (default 5)")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s in total while holding")
    ap.add_argument("--connect-rate", type=float, default=None, help="flood --connect-rate")
    ap.add_argument("--connect-timeout", default="20s")
    ap.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                    help="set this sysctl for the run (printed, restored afterwards); never done unasked")
    args = ap.parse_args()

    print_doctor(args.conns)
    # The one limit this benchmark changes by itself: its own RLIMIT_NOFILE, as far as a process
    # may (root: up to fs.nr_open); serve and flood inherit it.  Said, like flood and serve say it.
    change = capacity.raise_nofile(args.conns + FD_SLACK)
    if change is not None:
        print(f"rlimit: {change.line}")
    fd_limit, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_process = fd_limit - limits.FD_RESERVE
    need = math.ceil(args.conns / per_process)
    workers = args.workers or need
    # serve's workers share the port by SO_REUSEPORT, which spreads connections by a hash, not
    # evenly: leave each a tenth of its descriptors spare (1M over 51 workers would put the
    # busiest a few hundred past 20,000).
    server_workers = args.server_workers or math.ceil(args.conns / (per_process * 0.9))
    rng = limits.port_range()
    ports = rng[1] - rng[0] + 1
    sources = args.sources
    if sources == "auto":
        k = min(254, max(1, math.ceil(args.conns / (ports * limits.PORT_FILL))))
        sources = f"127.0.0.2-127.0.0.{k + 1}"
    print(f"target {args.conns:,} connections; fd limit {fd_limit:,} per process (hard {hard:,}) "
          f"-> flood {workers} + serve {server_workers} processes; ephemeral ports "
          f"{rng[0]}-{rng[1]} ({ports:,} per source address); --source {sources}")
    undo = apply_sysctls(args.sysctl)
    try:
        run(args, workers, server_workers, sources)
    finally:
        restore_sysctls(undo)


def run(args, workers: int, server_workers: int, sources: str) -> None:
    base_sock = sockstat()
    base_slab = slab_bytes()
    serve = subprocess.Popen([sys.executable, "-m", "socktools", "serve", "--mode", "echo", "--port", "0",
                              "--workers", str(server_workers), "--json", "--stats-interval", "0",
                              "--backlog", "4096", "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    port = json.loads(serve.stdout.readline())["port"]
    deadline = time.monotonic() + 60          # every worker up before the baseline is read
    while len(children(serve.pid)) < server_workers and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    server_pids = children(serve.pid) or [serve.pid]
    server_rss0 = sum(rss(p) for p in server_pids)
    server_cpu0 = cpu_seconds(server_pids)
    load0 = os.getloadavg()[0]
    busy0 = machine_busy()

    flood_cmd = [sys.executable, "-m", "socktools", "flood", "--port", str(port), "--conns", str(args.conns),
                 "--workers", str(workers), "--source", sources, "--rate", str(args.rate),
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
                flood_pids = [flood.pid] + children(flood.pid)
                peak = {"open": event["open"], "sockstat": sockstat(), "slab": slab_bytes(),
                        "server_rss": sum(rss(p) for p in server_pids), "t": event["t"],
                        "cpu": cpu_seconds(flood_pids) + cpu_seconds(server_pids) - server_cpu0,
                        "busy": machine_busy(), "wall": time.monotonic() - started}
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

    for line in stderr_lines:             # flood's own notes: what it raised, chose, could not fit
        if line.strip():
            print(f"flood said    {line.rstrip()}")
    c = result["connections"]
    n = c["established"]
    print(f"\nestablished   {n:,} of {args.conns:,} ({c['failed']:,} failed), held {args.hold:g} s; "
          f"max open in one snapshot {peak['open']:,}")
    print(f"connect rate  {c['per_second']:,.0f} connections/s (connect phase "
          f"{result['phases'].get('connect', 0):.2f} s, each confirmed by an echo round trip)")
    if n and peak.get("cpu"):
        (b0, t0), (b1, t1) = busy0, peak["busy"]
        cores = peak["cpu"] / peak["wall"]
        print(f"cpu           flood + serve used {peak['cpu']:,.1f} CPU-seconds until all were held "
              f"({peak['wall']:,.1f} s: {cores:.2f} of {limits.cpu_count()} cores) = "
              f"{n / peak['cpu']:,.0f} connections per CPU-second; the machine was "
              f"{(b1 - b0) / max(1, t1 - t0):.0%} busy meanwhile (load average {load0:.1f} at the start, "
              f"shared with other jobs)")
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
    sv_per = (peak["server_rss"] - server_rss0) / n if n and "server_rss" in peak else None
    checks = [(f"{args.conns:,} held, 0 failed", n == args.conns and c["failed"] == 0),
              (f"connect phase >= {TARGET_RATE:,} connections/s", c["per_second"] >= TARGET_RATE),
              (f"Python memory <= {TARGET_BYTES:,} bytes per connection on each side",
               bool(n) and fl_grow / n <= TARGET_BYTES and sv_per is not None and sv_per <= TARGET_BYTES)]
    for what, ok in checks:
        print(f"target {what}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
