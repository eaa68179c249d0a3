"""Pre-flight check of the limits that decide how many sockets this machine can hold.

Each check reads one limit (a resource limit, a sysctl under /proc/sys, a
capability bit), compares it with what N connections between a client and a
server *on this machine* need, and says which command raises it.  The
arithmetic, per connection: two sockets (client end and server end), so two
file descriptors and two slices of socket memory machine-wide, one descriptor
in each process, one ephemeral port on the client side and one conntrack
entry when netfilter tracks loopback.

Statuses: ``ok`` (enough), ``low`` (N connections will fail on this),
``warn`` (may bite under bursts, or an optional feature is missing), ``info``
(no judgement possible) and ``absent`` (not on this machine: no limit).
Pure reads; nothing here changes a setting or prints.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
from dataclasses import dataclass, asdict, field
from typing import Optional

from socktools.kernel.check import Check, round_up
from socktools.kernel.sysctl import read_sysctl, sysctl_ints  # noqa: F401 (read_sysctl: public name)

__all__ = ["DoctorConfig", "Check", "DoctorReport", "run_doctor", "read_sysctl",
           "net_raw_privilege", "FD_SLACK"]

#: Descriptors a process needs besides its sockets: stdio, the selector, a
#: listening socket, pipes to workers, imported modules' files... 64 is roomy.
FD_SLACK = 64
#: Page-sized buffer a socket holds while a small message sits in a queue;
#: tcp_mem counts pages, so 2 per connection (both ends) is the floor under traffic.
PAGES_PER_CONNECTION = 2
#: A listen backlog larger than this is never needed to check N: 4096 is the
#: Linux default for somaxconn since 5.4 and plenty for a server that accepts promptly.
BACKLOG_ENOUGH = 4096
CAP_NET_RAW = 13   # bit in /proc/self/status CapEff (include/uapi/linux/capability.h)
#: Loopback source addresses flood spreads over (127.0.0.1-127.0.0.254).
LOOPBACK_SOURCES = 254
#: Share of a port range a source address should use at most (flood.limits.PORT_FILL: connect()
#: searches the range for a free port and slows down sharply as it fills).
PORT_FILL = 1 / 3


@dataclass(frozen=True)
class DoctorConfig:
    """``conns``: connections the user means to open between a client and a server here."""

    conns: int = 1000


@dataclass(frozen=True)
class DoctorReport:
    conns: int
    checks: tuple[Check, ...]
    platform: str = field(default_factory=lambda: sys.platform)

    @property
    def ok(self) -> bool:
        """False when any limit is too low for ``conns`` connections."""
        return all(c.status != "low" for c in self.checks)

    def to_dict(self) -> dict:
        return {"conns": self.conns, "platform": self.platform, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


def net_raw_privilege() -> tuple[bool, str]:
    """``(has_it, how)``: may this process open raw/packet sockets (capture, ICMP)?

    True for root or when CAP_NET_RAW is in the effective capability set.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return True, "running as root"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    if int(line.split()[1], 16) >> CAP_NET_RAW & 1:
                        return True, "CAP_NET_RAW in the effective capabilities"
                    break
    except OSError:
        pass
    return False, "not root and no CAP_NET_RAW"


def _fmt(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY or n >= 2 ** 62 else f"{n:,}"


_round_up = round_up


def _check_nofile(n: int) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + FD_SLACK
    inf = resource.RLIM_INFINITY
    enough = lambda lim: lim == inf or lim >= need  # noqa: E731
    value = f"soft {_fmt(soft)}, hard {_fmt(hard)}"
    note = ("each socket is a file descriptor; a process holding all N client sockets needs N plus a "
            "few (the server process, separately, the same); --workers W divides it by W")
    raw = {"soft": soft, "hard": hard}
    if enough(soft):
        return Check("rlimit_nofile", "open files per process (RLIMIT_NOFILE, ulimit -n)", value, "ok",
                     f">= {need:,}", note, None, raw)
    if enough(hard):
        return Check("rlimit_nofile", "open files per process (RLIMIT_NOFILE, ulimit -n)", value, "low",
                     f">= {need:,}", note + "; the soft limit can be raised up to the hard one without root",
                     f"ulimit -n {min(_round_up(need), hard) if hard != inf else _round_up(need)}", raw)
    target = _round_up(need)
    from socktools.kernel.capacity import nr_open, privileged
    per_process = max(1, (hard if hard != inf else need) - FD_SLACK)
    processes = -(-n // per_process)
    raw["processes_at_hard_limit"] = processes
    prlimit = (f"sudo prlimit --pid $$ --nofile={target}:{target}  "
               f"(for good: '* - nofile {target}' in /etc/security/limits.conf)")
    if privileged() and nr_open() >= need:
        fix = f"none for socktools: flood and serve raise it themselves (and say so); others: {prlimit}"
        why = "; this process may raise its hard limit (CAP_SYS_RESOURCE), up to fs.nr_open"
    else:
        fix = (f"{prlimit}; without CAP_SYS_RESOURCE (root in a container often lacks it) spread "
               f"the sockets: {processes} processes per side at {per_process:,} each "
               f"(flood --workers {processes}: flood picks that itself; serve --workers {processes})")
        why = "; the hard limit needs CAP_SYS_RESOURCE to raise, which this process has not"
    return Check("rlimit_nofile", "open files per process (RLIMIT_NOFILE, ulimit -n)", value, "low",
                 f">= {need:,} in one process, or {processes} processes", note + why, fix, raw)


def _check_file_max(n: int) -> Check:
    file_max = sysctl_ints("fs.file-max")
    nr = sysctl_ints("fs.file-nr")
    title = "open files system-wide (fs.file-max)"
    if not file_max:
        return Check("file_max", title, "not readable", "absent", f"{2 * n:,} more", "", None)
    used = nr[0] if nr else 0
    need = used + 2 * n
    status = "ok" if file_max[0] >= need else "low"
    return Check("file_max", title, f"{_fmt(file_max[0])} ({used:,} in use now)", status,
                 f">= {need:,} (in use + 2 per connection)",
                 "both ends of every connection are open files on this machine",
                 None if status == "ok" else f"sudo sysctl -w fs.file-max={_round_up(need * 2)}",
                 {"file_max": file_max[0], "in_use": used})


def _check_nr_open(n: int) -> Check:
    nr_open = sysctl_ints("fs.nr_open")
    title = "ceiling of the per-process limit (fs.nr_open)"
    need = n + FD_SLACK
    if not nr_open:
        return Check("nr_open", title, "not readable", "absent", f">= {need:,}", "", None)
    status = "ok" if nr_open[0] >= need else "low"
    return Check("nr_open", title, _fmt(nr_open[0]), status, f">= {need:,}",
                 "no process can raise ulimit -n above this, not even root",
                 None if status == "ok" else f"sudo sysctl -w fs.nr_open={_round_up(need)}",
                 nr_open[0])


def _check_ports(n: int) -> tuple[Check, Optional[int]]:
    rng = sysctl_ints("net.ipv4.ip_local_port_range")
    title = "ephemeral ports (net.ipv4.ip_local_port_range)"
    if not rng or len(rng) != 2:
        return Check("ip_local_port_range", title, "not readable", "absent", f">= {n:,}", "", None), None
    ports = rng[1] - rng[0] + 1
    # Loopback has 127.0.0.0/8 to spread over; each source address has its own port range,
    # and connect() slows down as a range fills, so flood keeps each under a third full.
    spread = -(-n // max(1, int(ports * PORT_FILL)))
    status = "ok" if ports >= n else ("warn" if spread <= LOOPBACK_SOURCES else "low")
    note = ("one local port per connection from one source address to one server address:port; "
            "a port stays taken for 60 s in TIME-WAIT after the client closes")
    fix = None
    if status != "ok":
        addrs = min(spread, LOOPBACK_SOURCES)
        spread_fix = f"flood --source 127.0.0.1-127.0.0.{addrs} (flood picks them itself for a loopback target)"
        widest = 65535 - 1024 + 1
        fix = (spread_fix if n > widest else
               f'sudo sysctl -w net.ipv4.ip_local_port_range="1024 65535"  (or {spread_fix})')
        if status == "low":
            fix += "; beyond 127.0.0.0/8: more server ports, or more load hosts (flood --cluster)"
    return Check("ip_local_port_range", title, f"{rng[0]}-{rng[1]} = {ports:,} ports per source address",
                 status, f">= {n:,} per source address, or {spread:,} source addresses at a third full",
                 note, fix, {"low": rng[0], "high": rng[1], "ports": ports}), ports


def _check_somaxconn(n: int) -> Check:
    val = sysctl_ints("net.core.somaxconn")
    title = "listen backlog cap (net.core.somaxconn)"
    want = min(n, BACKLOG_ENOUGH)
    if not val:
        return Check("somaxconn", title, "not readable", "absent", f">= {want:,}", "", None)
    status = "ok" if val[0] >= want else "warn"
    return Check("somaxconn", title, f"{val[0]:,}", status, f">= {want:,} for a burst of connects",
                 "listen(backlog) is silently capped to this; a full accept queue drops SYNs "
                 "(clients see slow connects or ETIMEDOUT)",
                 None if status == "ok" else f"sudo sysctl -w net.core.somaxconn={_round_up(want)}", val[0])


def _check_syn_backlog(n: int) -> Check:
    val = sysctl_ints("net.ipv4.tcp_max_syn_backlog")
    cookies = sysctl_ints("net.ipv4.tcp_syncookies")
    title = "half-open connections (net.ipv4.tcp_max_syn_backlog)"
    want = min(n, BACKLOG_ENOUGH)
    if not val:
        return Check("tcp_max_syn_backlog", title, "not readable", "absent", f">= {want:,}", "", None)
    cookies_on = bool(cookies and cookies[0])
    status = "ok" if val[0] >= want or cookies_on else "warn"
    value = f"{val[0]:,} (syncookies {'on' if cookies_on else 'off'})"
    return Check("tcp_max_syn_backlog", title, value, status, f">= {want:,}, or syncookies on",
                 "SYNs waiting for the handshake to finish; past it the kernel drops them, "
                 "or answers with syncookies when those are on",
                 None if status == "ok" else f"sudo sysctl -w net.ipv4.tcp_max_syn_backlog={_round_up(want)}",
                 {"tcp_max_syn_backlog": val[0], "tcp_syncookies": cookies[0] if cookies else None})


def _check_tw_reuse(n: int, ports: Optional[int]) -> Check:
    val = sysctl_ints("net.ipv4.tcp_tw_reuse")
    title = "TIME-WAIT port reuse (net.ipv4.tcp_tw_reuse)"
    if not val:
        return Check("tcp_tw_reuse", title, "not readable", "absent", "", "", None)
    words = {0: "off", 1: "on", 2: "on for loopback only"}.get(val[0], str(val[0]))
    # Matters when connections are opened and closed faster than ports come back out of TIME-WAIT.
    status = "ok" if val[0] else ("warn" if ports is not None and ports < 2 * n else "info")
    return Check("tcp_tw_reuse", title, f"{val[0]} ({words})", status,
                 "on (1 or 2) when reconnecting often",
                 "lets a new outgoing connection take a port still in TIME-WAIT; without it, "
                 "churning connections run out of ports (EADDRNOTAVAIL)",
                 None if val[0] else "sudo sysctl -w net.ipv4.tcp_tw_reuse=1", val[0])


def _sockstat_tcp_pages() -> Optional[int]:
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return int(parts[parts.index("mem") + 1])
    except (OSError, ValueError):
        pass
    return None


def _check_tcp_mem(n: int) -> Check:
    val = sysctl_ints("net.ipv4.tcp_mem")
    title = "TCP buffer memory (net.ipv4.tcp_mem)"
    if not val or len(val) != 3:
        return Check("tcp_mem", title, "not readable", "absent", "", "", None)
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    low, pressure, high = val
    used = _sockstat_tcp_pages()
    need = (used or 0) + PAGES_PER_CONNECTION * n
    mib = lambda pages: f"{pages * page / 2 ** 20:,.0f} MiB"  # noqa: E731
    # Idle sockets hold no buffer pages (measured: 0-10 bytes per connection at 100,000 held),
    # so this limit bites only when many connections have data queued at the same moment.
    status = "ok" if pressure >= need else "warn"
    value = (f"pressure at {mib(pressure)}, max {mib(high)} ({pressure:,}/{high:,} pages"
             + (f"; {used:,} in use now)" if used is not None else ")"))
    fits = max(0, (high - (used or 0)) // PAGES_PER_CONNECTION)
    return Check("tcp_mem", title, value, status,
                 f">= {need:,} pages ({mib(need)}) with a small message in flight on every connection "
                 f"at once; idle connections need none",
                 "all TCP sockets share this memory; under pressure the kernel shrinks buffers, "
                 f"at max it drops data and fails sends (ENOBUFS): about {fits:,} connections can "
                 "have a message queued at once (a paced --rate run has few)",
                 None if status == "ok" else
                 f'sudo sysctl -w net.ipv4.tcp_mem="{max(low, need)} {max(pressure, need * 2)} {max(high, need * 4)}"',
                 {"pages": val, "page_size": page, "in_use_pages": used})


def _check_capture() -> Check:
    has, how = net_raw_privilege()
    exe = os.path.realpath(sys.executable)
    return Check("capture_privilege", "packet capture privilege (root or CAP_NET_RAW)", how,
                 "ok" if has else "warn", "only for sniff and ping --icmp",
                 "live capture and ICMP need raw sockets; everything else runs unprivileged",
                 None if has else f"sudo socktools sniff ...  (or once: sudo setcap cap_net_raw,cap_net_admin+eip {exe})",
                 has)


def _check_libpcap() -> Check:
    import ctypes.util
    lib = ctypes.util.find_library("pcap")
    tcpdump = shutil.which("tcpdump")
    value = f"libpcap {lib or 'not found'}; tcpdump {tcpdump or 'not found'}"
    return Check("libpcap", "libpcap (BPF filter compiler for capture)", value,
                 "ok" if lib else "warn", "only for sniff with a capture filter",
                 "scapy captures without it on Linux, but uses libpcap to compile a capture filter "
                 "(BPF) for the kernel",
                 None if lib else "sudo apt-get install libpcap0.8  (Fedora: sudo dnf install libpcap)",
                 {"libpcap": lib, "tcpdump": tcpdump})


def run_doctor(config: DoctorConfig) -> DoctorReport:
    """Read every limit and judge it against ``config.conns`` connections."""
    from socktools.kernel import footprint
    n = max(1, int(config.conns))
    ports_check, ports = _check_ports(n)
    nofile = _check_nofile(n)
    checks = (
        nofile,
        _check_nr_open(n),
        _check_file_max(n),
        ports_check,
        _check_tw_reuse(n, ports),
        _check_somaxconn(n),
        _check_syn_backlog(n),
        footprint.check_epoll(n),
        footprint.check_conntrack(n),
        _check_tcp_mem(n),
        footprint.check_ehash(n),
        footprint.check_memory(n, 2 * (nofile.raw or {}).get("processes_at_hard_limit", 1)),
        _check_capture(),
        _check_libpcap(),
    )
    return DoctorReport(conns=n, checks=checks)
