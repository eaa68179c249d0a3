"""Pre-flight: will N connections fit?  Checked before a single socket is opened.

Three limits stop a load generator long before CPU does:

* file descriptors per process (``RLIMIT_NOFILE``, ``ulimit -n``): every
  socket is one.  The soft limit may be raised up to the hard one without
  privilege: :func:`socktools.flood.runner.run_flood` does that first
  (:func:`socktools.kernel.capacity.raise_nofile`), and the plan reads the result;
* local ports: a (source address, destination address:port) pair has one
  ephemeral port range (``net.ipv4.ip_local_port_range``, ~28,000 ports by
  default), so more connections to one server port need more source
  addresses (``--source``);
* file descriptors system-wide (``fs.file-max``).

Two more make a run meaningless rather than impossible: far more processes
than CPUs (when the fd limit forces many workers), and more memory than the
machine has available.

:func:`plan` fills in what the user left to us (workers, server workers,
source addresses) and returns a :class:`Plan` whose ``problems`` say plainly
what will not fit and whose ``refusals`` are the ones that stop the run
before any connection unless the user insists (``flood --yes``).  Nothing
here prints.
"""

from __future__ import annotations

import ipaddress
import math
import resource
import socket
from dataclasses import dataclass, replace
from typing import Optional

from socktools.flood.config import FloodConfig
from socktools.kernel.sysctl import port_range, sysctl_int
from socktools.runinfo import usable_cpus

__all__ = ["FD_RESERVE", "Plan", "fd_limits", "port_range", "plan", "cpu_count", "mem_available"]

#: Descriptors a process needs besides its connections: stdio, the poller,
#: pipes to the runner, the interpreter's own files.  Generous on purpose.
FD_RESERVE = 32

#: The runner's own descriptors per worker process: its end of the pipe and the
#: process sentinel (multiprocessing keeps both open while the worker lives).
RUNNER_FDS_PER_WORKER = 2

#: Processes per CPU beyond which a run measures the scheduler, not the server:
#: each process would get a quarter of a CPU at best, and its timers fire late.
#: (The issue-12 run: 51 flood + 51 server processes on 2 CPUs.)
CPU_OVERSUBSCRIPTION = 4

#: Memory per connection and end, measured on loopback (Linux 6.18): kernel slab
#: grew 90 MB for 10,000 connections (20,000 sockets: ~4.5 KiB each, tcp_sock,
#: file, inode, dentry); flood's RSS 0.6 KiB per connection, serve's about 1 KiB.
#: Rounded up: buffers hold more when data is queued.
CONN_MEMORY = 6 * 1024
#: A socktools worker process at start (RSS: the interpreter, hdrhistogram...).
PROCESS_MEMORY = 24 << 20

#: Aim for at most this share of a port range per (source, destination) pair.
#: connect() searches the range for a free port, and the search slows down as
#: the range fills: measured on loopback (Linux 6.18, 2 CPUs), 150,000
#: connections over 8 source addresses (66 % full) came up at 2,900/s, over
#: 32 addresses (17 % full) at 21,800/s; 100,000 over 8 (44 %) at 22,900/s.
#: TIME_WAIT leftovers hold ports too.
PORT_FILL = 1 / 3


def cpu_count() -> int:
    """CPUs flood may use (the affinity mask): :func:`socktools.runinfo.usable_cpus`."""
    return usable_cpus()


def fd_limits() -> tuple:
    """This process's open-file limit, ``(soft, hard)``, as it is (the planner changes
    nothing); unlimited reads as ``fs.nr_open``, the most any process may open."""
    from socktools.kernel.capacity import nr_open
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return (nr_open() if soft == inf else soft), (nr_open() if hard == inf else hard)


def mem_available() -> Optional[int]:
    """MemAvailable from /proc/meminfo in bytes (the kernel's estimate of what can be used
    without swapping), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):,.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):,.0f} MiB"


@dataclass(frozen=True)
class Plan:
    """The config to run (workers, sources filled in) and what the limits say about it."""

    config: FloodConfig
    fd_soft_before: int
    fd_limit: int               # soft limit after raising it
    fd_hard: int
    fds_per_worker: int         # the busiest worker's need
    server_fds_per_worker: int  # embedded server (0 when not embedded)
    port_range: Optional[tuple]
    conns_per_source: int
    notes: tuple = ()           # what we chose and why
    problems: tuple = ()        # what will not fit, in words, with the fix
    refusals: tuple = ()        # what stops the run before it starts (unless --yes), one line each
    processes: int = 0          # flood workers + embedded server workers
    memory: int = 0             # estimated bytes the run needs
    memory_available: Optional[int] = None

    def to_dict(self) -> dict:
        lo_hi = self.port_range
        return {"fd_limit": self.fd_limit, "fd_limit_before": self.fd_soft_before, "fd_hard": self.fd_hard,
                "fds_per_worker": self.fds_per_worker, "server_fds_per_worker": self.server_fds_per_worker,
                "port_range": list(lo_hi) if lo_hi else None,
                "ports_per_source": (lo_hi[1] - lo_hi[0] + 1) if lo_hi else None,
                "conns_per_source": self.conns_per_source, "processes": self.processes,
                "memory_estimate": self.memory, "memory_available": self.memory_available,
                "notes": list(self.notes), "problems": list(self.problems),
                "refusals": list(self.refusals)}


def _is_ipv4_loopback(address: Optional[tuple], host: str) -> bool:
    try:
        ip = ipaddress.ip_address((address[0] if address else host).strip("[]"))
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


def plan(config: FloodConfig, *, fd_before: Optional[int] = None) -> Plan:
    """Fill in workers/server workers/sources, and check what fits (nothing is changed).

    What the user did not choose (``config.workers_chosen``, ``config.sources_chosen``) is
    picked to fit, and said in ``notes``.  ``fd_before``: the soft fd limit before the
    caller raised it (the report shows both).
    """
    workers_given, sources_given = config.workers_chosen, config.sources_chosen
    fd_limit, hard = fd_limits()
    before = fd_limit if fd_before is None else fd_before
    per_process = max(1, fd_limit - FD_RESERVE)
    n = config.conns
    cpus = cpu_count()
    notes: list = []
    problems: list = []
    refusals: list = []
    if fd_limit <= FD_RESERVE + 1:
        refusals.append(f"the file-descriptor limit is {fd_limit:,} (hard limit {hard:,}) and each process "
                        f"needs about {FD_RESERVE} for itself: no room for connections; raise it "
                        f"(`ulimit -n 4096`)")

    # --- workers: one per CPU (half when the server shares the machine), more if fds demand.
    need = math.ceil(n / per_process)
    workers = config.workers
    if not workers_given or workers < 1:
        base = max(1, cpus // 2) if config.embedded else cpus
        workers = min(max(base, need), n)
        if need > base:
            notes.append(f"using {workers} worker processes: {n:,} connections at "
                         f"{per_process:,} descriptors per process (ulimit -n {fd_limit:,})")
    server_workers = config.server_workers
    if config.embedded and server_workers < 1:
        server_workers = max(need, max(1, cpus // 2))

    # --- source addresses: one port range per (source, destination).  A Unix socket (--unix)
    # takes no local port: nothing to say about the range.
    rng = port_range() if config.family != socket.AF_UNIX else None
    ports = (rng[1] - rng[0] + 1) if rng else None
    sources = tuple(config.sources)
    if (not sources_given and not sources and ports and n > ports * PORT_FILL
            and config.family == socket.AF_INET and _is_ipv4_loopback(config.address, config.host)):
        k = min(254, math.ceil(n / (ports * PORT_FILL)))
        sources = tuple(f"127.0.0.{i}" for i in range(1, k + 1))
        notes.append(f"spreading connections over source addresses 127.0.0.1-127.0.0.{k}: "
                     f"each has its own {ports:,} local ports, and connect() is fastest when "
                     f"they stay mostly free")
    cfg = replace(config, workers=workers, server_workers=server_workers, sources=sources)

    fds = cfg.conns_of(0) + FD_RESERVE
    if fds > fd_limit:
        fix = (f"raise it (`ulimit -n {fds:,}`, up to the hard limit {hard:,})" if fds <= hard
               else f"use --workers {math.ceil(n / per_process)} or more")
        problems.append(f"each worker needs up to {fds:,} file descriptors for {cfg.conns_of(0):,} "
                        f"connections but the limit is {fd_limit:,} (hard limit {hard:,}): "
                        f"expect EMFILE; {fix}")
    server_fds = 0
    if cfg.embedded:
        server_fds = math.ceil(n / server_workers) + FD_RESERVE
        if server_fds > fd_limit:
            problems.append(f"the embedded server needs {server_fds:,} descriptors per worker "
                            f"but the limit is {fd_limit:,}: use --server-workers "
                            f"{math.ceil(n / per_process)} or more")
    per_source = math.ceil(n / max(1, len(sources)))
    spread = f"127.0.0.2-127.0.0.{min(255, 1 + math.ceil(n / (ports * PORT_FILL)))}" if ports else ""
    if ports and per_source > ports:
        problems.append(f"{per_source:,} connections from one source address to one server port "
                        f"need {per_source:,} local ports but the range {rng[0]}-{rng[1]} has "
                        f"{ports:,}: expect EADDRNOTAVAIL; spread them with --source "
                        f"(e.g. --source {spread}) or widen net.ipv4.ip_local_port_range")
    elif ports and per_source > ports * 0.5:
        notes.append(f"{per_source:,} connections per source address fill {per_source / ports:.0%} of "
                     f"its {ports:,} local ports: connect() slows down as the range fills; "
                     f"more addresses help (e.g. --source {spread})")
    file_max = sysctl_int("fs.file-max")
    total_fds = n * (2 if cfg.embedded else 1)
    if file_max and total_fds > file_max:
        problems.append(f"{total_fds:,} sockets exceed the system-wide limit fs.file-max = {file_max:,}: "
                        f"expect ENFILE; raise it with `sysctl -w fs.file-max={total_fds * 2}`")
    # --- the runner's own descriptors, processes per CPU, memory.
    runner_fds = FD_RESERVE + RUNNER_FDS_PER_WORKER * cfg.active_workers + (3 if cfg.embedded else 0)
    if runner_fds > fd_limit and not refusals:
        refusals.append(f"flood itself needs {runner_fds:,} file descriptors to supervise "
                        f"{cfg.active_workers:,} worker processes, but the limit is {fd_limit:,} (hard limit "
                        f"{hard:,}): raise it (`ulimit -n {max(4096, runner_fds * 2)}`) or use fewer --conns")
    processes = cfg.active_workers + (server_workers if cfg.embedded else 0)
    # The processes flood chose itself (a low fd limit is then the cause): only those are refused.
    chosen = ((0 if workers_given else cfg.active_workers)
              + (server_workers if cfg.embedded and config.server_workers < 1 else 0))
    if processes > CPU_OVERSUBSCRIPTION * cpus and not refusals:
        who = (f"{cfg.active_workers:,} flood worker processes"
               + (f" and {server_workers:,} server processes" if cfg.embedded else ""))
        if chosen > CPU_OVERSUBSCRIPTION * cpus:
            refusals.append(
                f"{who} on {cpus} CPU(s) ({n:,} connections, at most {per_process:,} per process "
                f"under the descriptor limit): they would spend the run waiting for each other, and "
                f"the figures would measure the scheduler; raise the descriptor limit so fewer "
                f"processes suffice, or use fewer --conns")
        else:   # the user asked for this many (docs/flood.md: a note, not a refusal)
            asked = [o for o, given in (("--workers", workers_given),
                                        ("--server-workers", cfg.embedded and config.server_workers > 0))
                     if given]
            notes.append(f"{who} on {cpus} CPU(s), more than {CPU_OVERSUBSCRIPTION} per CPU: they will "
                         f"spend part of the run waiting for each other, and the figures may measure "
                         f"the scheduler; fewer {' or '.join(asked)} would avoid that")
    memory = processes * PROCESS_MEMORY + n * CONN_MEMORY * (2 if cfg.embedded else 1)
    available = mem_available()
    if available is not None and memory > available and not refusals:
        refusals.append(f"{n:,} connections{' (both ends: flood and its server)' if cfg.embedded else ''} "
                        f"over {processes:,} processes need about {_gib(memory)} but {_gib(available)} is "
                        f"available: expect swapping or the OOM killer; use fewer --conns")
    if config.mode == "connect" and sysctl_int("net.ipv4.tcp_tw_reuse") == 0 and ports:
        notes.append(f"connect mode leaves each closed port in TIME_WAIT for 60 s and tcp_tw_reuse is off: "
                     f"at most ~{ports * max(1, len(sources)) // 60:,} connections/s can be sustained")
    return Plan(config=cfg, fd_soft_before=before, fd_limit=fd_limit, fd_hard=hard,
                fds_per_worker=fds, server_fds_per_worker=server_fds, port_range=rng,
                conns_per_source=per_source, notes=tuple(notes), problems=tuple(problems),
                refusals=tuple(refusals), processes=processes, memory=memory, memory_available=available)
