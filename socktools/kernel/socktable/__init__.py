"""The machine's sockets, read from the kernel by Python (what ``ss -tuxan`` shows).

Strategy: ask the kernel over NETLINK_SOCK_DIAG (``inet_diag`` and
``unix_diag``, the interfaces ``ss`` itself uses): one SOCK_DIAG_BY_FAMILY
dump per family and address family (:mod:`.netlink`).  It gives the state,
both queues, uid, inode, cookie, the pending timer and, on request, each TCP
socket's ``tcp_info`` (decoded by :mod:`socktools.kernel.tcpinfo`, the same
decoder ``stall`` uses on its own socket) and its memory.  For a LISTEN socket
it reports the accept queue as Recv-Q and the backlog as Send-Q, as ``ss``
prints them.  Where netlink is not available the fallback reads /proc/net
(:mod:`.proc`): same states and queues, without the backlog and extensions.

Owning processes are found the way ``ss -p`` finds them (:mod:`.owners`), only
when asked (``processes=True``).  Filters (:mod:`.filters`) are pure.

No I/O other than reading the kernel; nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import ipaddress
import socket
import sys
from typing import Iterable, Optional

from . import bytecode as _bytecode, netlink, owners, proc
from .entry import (FAMILIES, STATE_GROUPS, STATES, Owner, SkMem, SocketEntry,
                    SocketTableUnavailable, Timer, normalize_state, state_mask)
from .filters import SocketFilter, parse_address

__all__ = ["SocketEntry", "Owner", "Timer", "SkMem", "TcpInfo", "SocketTableUnavailable",
           "SocketFilter", "parse_address", "read_sockets", "find_socket", "normalize_state",
           "state_mask", "resolve_source", "paused_gc", "STATES", "STATE_GROUPS", "FAMILIES"]

# A missing diag module (udp_diag, unix_diag not built) answers ENOENT; no IPv6, EAFNOSUPPORT.
def __getattr__(name: str):
    # ``socktable.TcpInfo`` stays importable without loading the decoder for every table.
    if name == "TcpInfo":
        from socktools.kernel.tcpinfo import TcpInfo
        return TcpInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ABSENT = (errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP)


def _check_platform() -> None:
    if not sys.platform.startswith("linux"):
        raise SocketTableUnavailable(
            f"reading the socket table needs Linux (NETLINK_SOCK_DIAG or /proc/net/tcp); "
            f"this is {sys.platform} - use `netstat -an -p tcp` there")


def resolve_source(source: str = "auto") -> str:
    """Which source ``read_sockets(source=...)`` would use: ``"netlink"`` or ``"proc"``.

    Raises ``SocketTableUnavailable`` when there is none.
    """
    if source not in ("auto", "netlink", "proc"):
        raise ValueError(f"source must be 'auto', 'netlink' or 'proc', not {source!r}")
    _check_platform()
    if source == "auto":
        if netlink.available():
            return "netlink"
        if proc.available():
            return "proc"
        raise SocketTableUnavailable(
            "neither NETLINK_SOCK_DIAG nor /proc/net/tcp is readable here (is /proc mounted?)")
    if source == "netlink" and not netlink.available():
        raise SocketTableUnavailable("NETLINK_SOCK_DIAG is not available (kernel without inet_diag?)")
    if source == "proc" and not proc.available():
        raise SocketTableUnavailable("/proc/net/tcp is not readable (is /proc mounted?)")
    return source


def _netlink_family(family: str, states: int, tcp_info: bool, memory: bool,
                    bytecode: bytes = b"") -> list[SocketEntry]:
    if family == "unix":
        flags = (netlink.UDIAG_SHOW_NAME | netlink.UDIAG_SHOW_PEER | netlink.UDIAG_SHOW_RQLEN
                 | netlink.UDIAG_SHOW_UID | (netlink.UDIAG_SHOW_MEMINFO if memory else 0))
        return netlink.dump(netlink.unix_request(states=states, show=flags), netlink.parse_unix)
    protocol = socket.IPPROTO_TCP if family == "tcp" else socket.IPPROTO_UDP
    ext = (netlink.EXT_INFO if tcp_info and family == "tcp" else 0) | \
        (netlink.EXT_SKMEMINFO if memory else 0)
    extensions = bool(ext) or tcp_info
    out: list[SocketEntry] = []
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            try:
                out.extend(netlink.dump(netlink.inet_request(af, protocol, states=states, ext=ext,
                                                             bytecode=bytecode),
                                        netlink.inet_parser(protocol, extensions=extensions)))
            except OSError as exc:
                # A kernel whose audit refuses our filter: read unfiltered (read_sockets
                # filters in Python anyway).
                if not bytecode or exc.errno != errno.EINVAL:
                    raise
                out.extend(netlink.dump(netlink.inet_request(af, protocol, states=states, ext=ext),
                                        netlink.inet_parser(protocol, extensions=extensions)))
        except OSError as exc:
            if af == socket.AF_INET6 and exc.errno in _ABSENT:
                continue        # no IPv6 in this kernel: the AF_INET6 handler is not there
            raise
    return out


def read_sockets(*, port: Optional[int] = None, state: "str | Iterable[str] | None" = None,
                 listening: bool = False, processes: bool = False, source: str = "auto",
                 tcp_info: bool = False, memory: bool = False,
                 families: Iterable[str] = ("tcp",), match: Optional[SocketFilter] = None,
                 sort: bool = True) -> list[SocketEntry]:
    """The sockets of this network namespace, filtered.

    ``families``: any of ``"tcp"``, ``"udp"``, ``"unix"`` (IPv4 and IPv6 both).
    ``port`` keeps sockets whose local *or* remote port is ``port``; ``state``
    keeps one state or several, or ss groups (``connected``...; names as in
    ``STATES``, case-insensitive, ``estab``/``time_wait`` accepted);
    ``listening`` is ``state="LISTEN"``; ``match`` is a :class:`SocketFilter`
    (addresses, ports, states) applied as well.  ``processes`` fills
    ``owners`` (walks every process's descriptors).  ``tcp_info`` fills
    ``tcp_info`` and ``timer``, ``memory`` fills ``skmem`` (netlink only).
    ``source``: netlink or /proc (``auto``: netlink when the kernel offers it,
    /proc for a family whose netlink dump is refused).  Sorted by family,
    local port, then peer port, unless ``sort=False`` (kernel order).

    Raises ``SocketTableUnavailable`` when no source exists on this platform,
    ``ValueError`` for an unknown state name or family.
    """
    with paused_gc():
        return _read_sockets(port, state, listening, processes, source, tcp_info, memory,
                             tuple(families), match, sort)


@contextlib.contextmanager
def paused_gc():
    """No cyclic garbage collection while a table is built.

    A dump allocates a few tuples per socket, none of them in a cycle, yet every
    700 allocations CPython runs a collection that walks the young objects (and
    now and then all of them): a quarter of the time of a 10,000-socket read.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_sockets(port, state, listening, processes, source, tcp_info, memory, families, match,
                  sort) -> list[SocketEntry]:
    chosen = resolve_source(source)
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"unknown family {fam!r} (one of: {', '.join(FAMILIES)})")
    # Each of listening, state and match.states narrows the set: their intersection is wanted.
    masks = []
    if listening:
        masks.append(frozenset({10}))
    if state is not None:
        masks.append(state_mask([state] if isinstance(state, str) else list(state)))
    if match is not None and match.states:
        masks.append(state_mask(match.states))
    wanted = frozenset.intersection(*masks) if masks else None
    mask = 0xFFFFFFFF if wanted is None else sum(1 << n for n in wanted)
    # Ports and addresses are filtered by the kernel (inet only), and again in Python below:
    # /proc needs it, and ``port`` and ``match.port`` may both be given.
    kernel_filter = match or SocketFilter()
    if port is not None and kernel_filter.port is None:
        kernel_filter = dataclasses.replace(kernel_filter, port=port)
    bytecode = _bytecode.filter_bytecode(kernel_filter)
    entries: list[SocketEntry] = []
    for fam in families:
        got = None
        if chosen == "netlink":
            try:
                got = _netlink_family(fam, mask, tcp_info, memory, bytecode)
            except OSError as exc:
                # A sandbox may allow the netlink socket but refuse the dump, a kernel may lack
                # udp_diag/unix_diag: /proc still answers.
                if source != "auto" or not (proc.available() or exc.errno in _ABSENT):
                    raise
        if got is None:
            got = proc.read(fam, wanted)
        if sort:
            # One int per socket is the cheapest key (a 10,000-row sort in a few ms): local
            # port, then peer port; IPv4 and IPv6 interleave, ties keep the kernel's order.
            got.sort(key=_unix_key if fam == "unix" else _inet_key)
        entries.extend(got)
    entries = kernel_filter.apply(entries)
    if port is not None and match is not None and match.port not in (None, port):
        entries = SocketFilter(port=port).apply(entries)
    if processes:
        found = owners.scan({e.inode for e in entries if e.inode})
        if found:
            # Rebuilt as tuples: SocketEntry._replace costs ~10x more per row than this.
            new, get = tuple.__new__, found.get
            entries = [new(SocketEntry, e[:8] + (o,) + e[9:]) if (o := get(e.inode)) else e
                       for e in entries]
    return entries


def _inet_key(e: SocketEntry) -> int:
    return (e[1][1] << 16) | e[2][1]


def _unix_key(e: SocketEntry) -> tuple:
    return e[1]                                 # (path, inode)


def _host_key(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%")[0]))
    except ValueError:
        return host


def find_socket(local, remote, *, processes: bool = False, tcp_info: bool = True,
                source: str = "auto") -> Optional[SocketEntry]:
    """The one TCP socket whose (local, remote) 4-tuple is exactly this, or ``None``.

    ``local`` and ``remote`` are ``(host, port)`` as ``getsockname()`` /
    ``getpeername()`` return them (IPv6 4-tuples are fine).  With netlink this
    is a direct kernel lookup (no dump) and includes ``tcp_info``; so, given
    the two ends of a connection, ``find_socket(a, b)`` and
    ``find_socket(b, a)`` are its two sockets, queues included.
    """
    chosen = resolve_source(source)
    lhost, lport = _host_key(local[0]), int(local[1])
    rhost, rport = _host_key(remote[0]), int(remote[1])

    def exact(e: SocketEntry) -> bool:
        return ((_host_key(e.local[0]), e.local[1]) == (lhost, lport)
                and (_host_key(e.remote[0]), e.remote[1]) == (rhost, rport))
    match = None
    if chosen == "netlink":
        family = socket.AF_INET6 if ":" in lhost else socket.AF_INET
        request = netlink.inet_request(family, socket.IPPROTO_TCP,
                                       ext=netlink.EXT_INFO if tcp_info else 0, dump=False,
                                       local=(lhost, lport), remote=(rhost, rport))
        try:
            found = netlink.dump(request, netlink.inet_parser(socket.IPPROTO_TCP, extensions=tcp_info),
                                 single=True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            found = []
        # The exact lookup may also return a wildcard listener; keep only an exact match.
        match = next((e for e in found if exact(e)), None)
    else:
        match = next((e for e in proc.read("tcp") if exact(e)), None)
    if match is not None and processes and match.inode:
        match = match._replace(owners=owners.scan({match.inode}).get(match.inode, ()))
    return match
