"""What N connections cost on this machine beyond descriptors and ports: doctor's scale checks.

* memory -- every connection is two kernel sockets (slab objects: the TCP
  socket, its inode, file, dentry and epoll entry) plus a Python object graph
  on each side (flood's and serve's);
* epoll registrations -- ``fs.epoll.max_user_watches`` caps them per user,
  and flood and serve running as one user register both ends;
* connection tracking -- ``nf_conntrack_max`` matters only when netfilter
  actually tracks loopback connections: a loaded module with no rule that
  needs it tracks nothing.  :func:`conntrack_tracks_loopback` finds out by
  opening one loopback connection and looking for it in the count.

Each returns a :class:`~socktools.kernel.check.Check`.  Nothing here changes a
setting; the loopback probe opens and closes one connection.
"""

from __future__ import annotations

import socket
from typing import Optional

from socktools.kernel.check import Check, round_up as _round_up
from socktools.kernel.sysctl import sysctl_ints

__all__ = ["KERNEL_BYTES_PER_CONNECTION", "PYTHON_BYTES_PER_SIDE", "check_memory", "check_epoll",
           "check_conntrack", "conntrack_tracks_loopback", "check_ehash"]

#: Sockets per bucket of the TCP established hash table past which every packet's lookup
#: walks a long chain: the kernel sizes the table for about one socket per bucket.
EHASH_CHAIN_WARN = 2

#: Kernel memory per connection, both ends, while idle: measured 7,862-7,884 bytes of the
#: TCP, sock_inode_cache, filp, dentry and eventpoll_epi slabs per connection at 100,000
#: connections (Linux 6.18, benchmarks/bench_flood_scale.py); rounded up.
KERNEL_BYTES_PER_CONNECTION = 8 * 1024
#: Python memory per connection on each side (flood's Connection, socket and slot; serve's
#: the same): measured ~700 bytes; the target is at most 1 KB.
PYTHON_BYTES_PER_SIDE = 1024
#: Each Python worker process costs this much before it holds anything (interpreter, modules).
PROCESS_BYTES = 24 * 2 ** 20


def _meminfo() -> dict:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def check_memory(n: int, processes: int = 2) -> Check:
    info = _meminfo()
    avail = info.get("MemAvailable")
    title = "memory for the connections (MemAvailable)"
    need = n * (KERNEL_BYTES_PER_CONNECTION + 2 * PYTHON_BYTES_PER_SIDE) + processes * PROCESS_BYTES
    gib = lambda b: f"{b / 2 ** 30:,.1f} GiB"  # noqa: E731
    need_text = (f">= {gib(need)} ({KERNEL_BYTES_PER_CONNECTION:,} B of kernel sockets + "
                 f"2 x {PYTHON_BYTES_PER_SIDE:,} B of Python per connection)")
    if avail is None:
        return Check("memory", title, "not readable", "info", need_text, "", None)
    status = "ok" if avail >= need else "low"
    return Check("memory", title, f"{gib(avail)} available of {gib(info.get('MemTotal', 0))}", status,
                 need_text, "socket structures live in unswappable kernel memory; past it the OOM "
                 "killer picks a process", None if status == "ok" else
                 "fewer connections per machine (flood --cluster spreads them over load hosts)",
                 {"available": avail, "total": info.get("MemTotal"), "need": need})


def check_epoll(n: int) -> Check:
    val = sysctl_ints("fs.epoll.max_user_watches")
    title = "epoll registrations per user (fs.epoll.max_user_watches)"
    need = 2 * n
    if not val:
        return Check("epoll_watches", title, "not readable", "absent", f">= {need:,}", "", None)
    status = "ok" if val[0] >= need else "low"
    return Check("epoll_watches", title, f"{val[0]:,}", status,
                 f">= {need:,} (both ends, when client and server run as one user)",
                 "every socket in an event loop is one epoll watch; past the cap epoll_ctl fails "
                 "with ENOSPC", None if status == "ok" else
                 f"sudo sysctl -w fs.epoll.max_user_watches={_round_up(need * 2)}", val[0])


def conntrack_tracks_loopback() -> Optional[bool]:
    """Does netfilter track loopback TCP here?  None when conntrack is not loaded.

    Opens one loopback connection and sees whether ``nf_conntrack_count`` grew:
    with the module loaded but no rule that needs tracking, nothing is tracked.
    """
    def count() -> Optional[int]:
        v = sysctl_ints("net.netfilter.nf_conntrack_count")
        return v[0] if v else None

    before = count()
    if before is None:
        return None
    try:
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            with socket.create_connection(srv.getsockname(), timeout=2):
                conn, _ = srv.accept()
                during = count()
                conn.close()
    except OSError:
        return before > 0
    return during is not None and during > before


def check_conntrack(n: int) -> Check:
    title = "connection tracking table (net.netfilter.nf_conntrack_max)"
    val = sysctl_ints("net.netfilter.nf_conntrack_max")
    if not val:
        return Check("nf_conntrack_max", title, "conntrack not loaded", "absent", "",
                     "no netfilter connection tracking here, so no limit from it", None)
    count = sysctl_ints("net.netfilter.nf_conntrack_count")
    used = count[0] if count else 0
    tracks = conntrack_tracks_loopback()
    raw = {"max": val[0], "count": used, "tracks_loopback": tracks}
    if tracks is False:
        return Check("nf_conntrack_max", title, f"{val[0]:,} ({used:,} tracked now)", "ok",
                     "nothing: loopback connections are not tracked here",
                     "the module is loaded but no netfilter rule needs tracking: a test loopback "
                     "connection did not enter the table", None, raw)
    need = used + n
    status = "ok" if val[0] >= need else "low"
    return Check("nf_conntrack_max", title, f"{val[0]:,} ({used:,} tracked now, loopback tracked)",
                 status, f">= {need:,} (tracked + 1 per connection)",
                 "netfilter tracks loopback connections here; a full table drops new SYNs "
                 "('nf_conntrack: table full' in dmesg)",
                 None if status == "ok" else f"sudo sysctl -w net.netfilter.nf_conntrack_max={_round_up(need)}",
                 raw)


def check_ehash(n: int) -> Check:
    """The TCP established hash table: not a limit, a cost -- every packet looks its socket up."""
    val = sysctl_ints("net.ipv4.tcp_ehash_entries")
    title = "TCP established hash table (net.ipv4.tcp_ehash_entries)"
    if not val:
        return Check("tcp_ehash", title, "not readable", "absent", "", "", None)
    buckets = abs(val[0])            # negative: this network namespace shares the global table
    chain = 2 * n / max(1, buckets)
    status = "ok" if chain <= EHASH_CHAIN_WARN else "warn"
    return Check("tcp_ehash", title, f"{buckets:,} buckets", status,
                 f"about {2 * n:,} sockets (both ends): {chain:,.1f} per bucket",
                 "every segment's socket is found by a walk along its bucket's chain: past a few "
                 "per bucket, connects and round trips cost more CPU (sized at boot from memory)",
                 None if status == "ok" else
                 f"boot with thash_entries={_round_up(2 * n)} on the kernel command line, or run in "
                 f"a new network namespace after sysctl -w net.ipv4.tcp_child_ehash_entries="
                 f"{_round_up(2 * n)}", {"buckets": val[0], "per_bucket": round(chain, 2)})
