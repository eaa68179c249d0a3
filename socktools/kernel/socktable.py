"""The machine's TCP sockets, read from the kernel by Python (what ``ss -tan`` shows).

Strategy: ask the kernel over NETLINK_SOCK_DIAG (``inet_diag``, the interface
``ss`` itself uses) with one SOCK_DIAG_BY_FAMILY dump per address family.  It
gives the state, both queues, uid, inode and, on request, the socket's
``tcp_info``; for a LISTEN socket it reports the accept queue as Recv-Q and
the backlog as Send-Q, exactly as ``ss`` prints them.  Where netlink is not
available (a kernel without ``inet_diag``, a sandbox that forbids it) the
fallback reads ``/proc/net/tcp`` and ``/proc/net/tcp6``: same states and
queues, except that a listener's backlog is not exported there (``None``).

Owning processes are found the way ``ss -p`` finds them, by matching socket
inodes against the ``/proc/<pid>/fd`` links.  That walks every descriptor of
every process, so it only happens when asked (``processes=True``).

No I/O other than reading the kernel; nothing here prints.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass, fields
from typing import Iterable, Optional

from socktools.kernel.tcpinfo import TcpInfo, parse_tcp_info

__all__ = ["SocketEntry", "TcpInfo", "SocketTableUnavailable", "read_sockets", "find_socket",
           "normalize_state", "resolve_source", "STATES"]


class SocketTableUnavailable(RuntimeError):
    """Neither NETLINK_SOCK_DIAG nor /proc/net/tcp can be read on this machine."""


# Kernel TCP states (include/net/tcp_states.h), named as ss names them except
# that ESTABLISHED is spelled out.  NEW-SYN-RECV is a request socket (a SYN
# answered, handshake not finished); inet_diag reports those as SYN-RECV.
STATES = {
    1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
    6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW-SYN-RECV", 13: "BOUND-INACTIVE",
}
_STATE_NUMBERS = {name: num for num, name in STATES.items()}
_STATE_ALIASES = {"ESTAB": "ESTABLISHED", "SYN-RECEIVED": "SYN-RECV", "LISTENING": "LISTEN",
                  "FIN-WAIT1": "FIN-WAIT-1", "FIN-WAIT2": "FIN-WAIT-2", "CLOSED": "CLOSE"}


def normalize_state(name: str) -> str:
    """``"estab"`` / ``"time_wait"`` / ``"TIME-WAIT"`` -> ``"ESTABLISHED"`` / ``"TIME-WAIT"``.

    Raises ``ValueError`` listing the valid names for anything else.
    """
    key = name.strip().upper().replace("_", "-")
    key = _STATE_ALIASES.get(key, key)
    if key not in _STATE_NUMBERS:
        valid = ", ".join(n for n in STATES.values() if n not in ("NEW-SYN-RECV", "BOUND-INACTIVE"))
        raise ValueError(f"unknown TCP state {name!r} (one of: {valid})")
    return key


@dataclass(frozen=True)
class SocketEntry:
    """One TCP socket as ``ss -tan`` shows it.

    ``local``/``remote`` are ``(host, port)`` with the host as a numeric
    string (``"127.0.0.1"``, ``"::1"``, ``"::ffff:127.0.0.1"``).  For a
    LISTEN socket ``recv_q`` is the accept queue (connections completed but
    not yet ``accept()``-ed) and ``send_q`` the backlog it may grow to
    (``None`` when read from /proc, which does not export it).  ``inode`` is
    0 and ``uid`` meaningless for TIME-WAIT sockets, which belong to no
    process.  ``pids`` is ``((pid, command), ...)``, empty unless
    ``processes=True`` was asked and the process table was readable.
    ``tcp_info`` (a :class:`socktools.kernel.tcpinfo.TcpInfo`) only when asked and
    read over netlink: ``entry.tcp_info["rtt"]``.
    """

    proto: str                  # "tcp" or "tcp6"
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    recv_q: int
    send_q: Optional[int]
    inode: int
    uid: int
    pids: tuple[tuple[int, str], ...] = ()
    tcp_info: Optional[TcpInfo] = None

    @property
    def listening(self) -> bool:
        return self.state == "LISTEN"

    @property
    def accept_queue(self) -> Optional[tuple[int, Optional[int]]]:
        """``(current, backlog)`` for a LISTEN socket, else ``None``."""
        return (self.recv_q, self.send_q) if self.listening else None

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists, ``tcp_info`` a dict or None)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["local"] = list(self.local)
        out["remote"] = list(self.remote)
        out["pids"] = [list(p) for p in self.pids]
        out["tcp_info"] = self.tcp_info.to_dict() if self.tcp_info is not None else None
        return out


# --------------------------------------------------------------------------- netlink
# Constants and layouts from include/uapi/linux/{netlink,sock_diag,inet_diag}.h.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300            # NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_INET_DIAG_INFO = 2            # attribute type; request it with bit (1 << (2 - 1)) in idiag_ext
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")         # len, type, flags, seq, pid            (16 bytes)
_REQ_V2_HEAD = struct.Struct("=BBBBI")      # family, protocol, ext, pad, states     (8 bytes)
# inet_diag_sockid (48 bytes): sport, dport (big-endian), src[16], dst[16], if, cookie[2]
_SOCKID_PORTS = struct.Struct("!HH")
_SOCKID_TAIL = struct.Struct("=III")
_MSG_HEAD = struct.Struct("=BBBB")          # family, state, timer, retrans
_MSG_TAIL = struct.Struct("=IIIII")         # expires, rqueue, wqueue, uid, inode
_MSG_SIZE = 4 + 48 + 20                     # sizeof(struct inet_diag_msg) = 72
_RTATTR = struct.Struct("=HH")

_RECV_BUFSIZE = 1 << 20       # a dump arrives in datagrams of up to ~32 KiB; never truncate one


def _sockid(local=None, remote=None, family=socket.AF_INET) -> bytes:
    def packed(addr):
        if addr is None:
            return b"\0" * 16, 0
        raw = socket.inet_pton(family, addr[0])
        return raw.ljust(16, b"\0"), int(addr[1])
    src, sport = packed(local)
    dst, dport = packed(remote)
    return (_SOCKID_PORTS.pack(sport, dport) + src + dst
            + _SOCKID_TAIL.pack(0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE))


def _netlink_query(family: int, *, states: int, tcp_info: bool, dump: bool = True,
                   local=None, remote=None) -> list[SocketEntry]:
    """One SOCK_DIAG_BY_FAMILY request; a dump, or an exact lookup of one 4-tuple."""
    ext = (1 << (_INET_DIAG_INFO - 1)) if tcp_info else 0
    body = _REQ_V2_HEAD.pack(family, socket.IPPROTO_TCP, ext, 0, states) + _sockid(local, remote, family)
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    seq = 1
    request = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body
    out: list[SocketEntry] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)     # the kernel answers at once; never hang a CLI on it
        nl.sendto(request, (0, 0))
        while True:
            data = nl.recv(_RECV_BUFSIZE)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink message from sock_diag")
                if mtype == _NLMSG_DONE:
                    return out
                if mtype == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    if code == 0:            # an ACK, not an error
                        return out
                    raise OSError(-code, os.strerror(-code))
                if mtype == _SOCK_DIAG_BY_FAMILY:
                    out.append(_parse_diag_msg(data, off + _NLMSGHDR.size, off + length))
                off += (length + 3) & ~3
            if not dump and out:
                return out


def _parse_diag_msg(data: bytes, off: int, end: int) -> SocketEntry:
    family, state, _timer, _retrans = _MSG_HEAD.unpack_from(data, off)
    sport, dport = _SOCKID_PORTS.unpack_from(data, off + 4)
    src, dst = data[off + 8:off + 24], data[off + 24:off + 40]
    _expires, rqueue, wqueue, uid, inode = _MSG_TAIL.unpack_from(data, off + 52)
    if family == socket.AF_INET:
        local = (socket.inet_ntop(family, src[:4]), sport)
        remote = (socket.inet_ntop(family, dst[:4]), dport)
    else:
        local = (socket.inet_ntop(family, src), sport)
        remote = (socket.inet_ntop(family, dst), dport)
    info = None
    attr = off + _MSG_SIZE
    while attr + _RTATTR.size <= end:
        alen, atype = _RTATTR.unpack_from(data, attr)
        if alen < _RTATTR.size:
            break
        if atype == _INET_DIAG_INFO:
            # The attribute carries the kernel's struct tcp_info, as getsockopt(TCP_INFO) does.
            info = parse_tcp_info(data[attr + _RTATTR.size:attr + alen])
        attr += (alen + 3) & ~3
    return SocketEntry(
        proto="tcp" if family == socket.AF_INET else "tcp6", local=local, remote=remote,
        state=STATES.get(state, f"STATE-{state}"), recv_q=rqueue, send_q=wqueue,
        inode=inode, uid=uid, tcp_info=info)


def _netlink_available() -> bool:
    if not hasattr(socket, "AF_NETLINK"):
        return False
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG).close()
        return True
    except OSError:
        return False


def _read_netlink(states: int, tcp_info: bool) -> list[SocketEntry]:
    out: list[SocketEntry] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            out.extend(_netlink_query(family, states=states, tcp_info=tcp_info))
        except OSError as exc:
            # No IPv6 in this kernel: the AF_INET6 handler is simply not there.
            if family == socket.AF_INET6 and exc.errno in (errno.ENOENT, errno.EAFNOSUPPORT,
                                                           errno.EOPNOTSUPP):
                continue
            raise
    return out


# --------------------------------------------------------------------------- /proc
_PROC_FILES = (("tcp", "/proc/net/tcp", socket.AF_INET), ("tcp6", "/proc/net/tcp6", socket.AF_INET6))


def _proc_addr(text: str, family: int) -> tuple[str, int]:
    # "0100007F:1F90": the address is the kernel's in-memory bytes printed as
    # host-order 32-bit words, so each word is re-packed in native order.
    hexaddr, hexport = text.split(":")
    raw = b"".join(struct.pack("=I", int(hexaddr[i:i + 8], 16)) for i in range(0, len(hexaddr), 8))
    return socket.inet_ntop(family, raw), int(hexport, 16)


def _read_proc(state_numbers: Optional[set[int]]) -> list[SocketEntry]:
    out: list[SocketEntry] = []
    for proto, path, family in _PROC_FILES:
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue          # tcp6 is absent when IPv6 is disabled
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            st = int(fields[3], 16)
            if state_numbers is not None and st not in state_numbers:
                continue
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            listening = st == 10
            out.append(SocketEntry(
                proto=proto, local=_proc_addr(fields[1], family), remote=_proc_addr(fields[2], family),
                state=STATES.get(st, f"STATE-{st}"), recv_q=rx,
                # For a listener /proc shows the accept queue as rx_queue but not the backlog.
                send_q=None if listening else tx, uid=int(fields[7]), inode=int(fields[9])))
    return out


def _proc_available() -> bool:
    return os.path.exists("/proc/net/tcp")


# --------------------------------------------------------------------------- processes
def _owners(inodes: set[int]) -> dict[int, tuple[tuple[int, str], ...]]:
    """Map socket inode -> ((pid, comm), ...) by walking /proc/<pid>/fd (like ss -p)."""
    found: dict[int, list[tuple[int, str]]] = {}
    if not inodes:
        return {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:        # gone, or another user's process without privilege
            continue
        comm = None
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if not link.startswith("socket:["):
                continue
            inode = int(link[8:-1])
            if inode in inodes:
                if comm is None:
                    try:
                        with open(f"/proc/{pid}/comm") as f:
                            comm = f.read().strip()
                    except OSError:
                        comm = "?"
                holders = found.setdefault(inode, [])
                if all(p != pid for p, _ in holders):
                    holders.append((pid, comm))
    return {inode: tuple(sorted(v)) for inode, v in found.items()}


# --------------------------------------------------------------------------- public API
def _check_platform() -> None:
    if not sys.platform.startswith("linux"):
        raise SocketTableUnavailable(
            f"reading the socket table needs Linux (NETLINK_SOCK_DIAG or /proc/net/tcp); "
            f"this is {sys.platform} - use `netstat -an -p tcp` there")


def resolve_source(source: str = "auto") -> str:
    """Which source ``read_sockets(source=...)`` would use: ``"netlink"`` or ``"proc"``.

    Raises ``SocketTableUnavailable`` when there is none.
    """
    return _choose_source(source)


def _choose_source(source: str) -> str:
    if source not in ("auto", "netlink", "proc"):
        raise ValueError(f"source must be 'auto', 'netlink' or 'proc', not {source!r}")
    _check_platform()
    if source == "auto":
        if _netlink_available():
            return "netlink"
        if _proc_available():
            return "proc"
        raise SocketTableUnavailable(
            "neither NETLINK_SOCK_DIAG nor /proc/net/tcp is readable here (is /proc mounted?)")
    if source == "netlink" and not _netlink_available():
        raise SocketTableUnavailable("NETLINK_SOCK_DIAG is not available (kernel without inet_diag?)")
    if source == "proc" and not _proc_available():
        raise SocketTableUnavailable("/proc/net/tcp is not readable (is /proc mounted?)")
    return source


def _host_key(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%")[0]))
    except ValueError:
        return host


def read_sockets(*, port: Optional[int] = None, state: "str | Iterable[str] | None" = None,
                 listening: bool = False, processes: bool = False, source: str = "auto",
                 tcp_info: bool = False) -> list[SocketEntry]:
    """All TCP sockets (IPv4 and IPv6) of this network namespace, filtered.

    ``port`` keeps sockets whose local *or* remote port is ``port``;
    ``state`` keeps one state or any of several (names as in ``STATES``,
    case-insensitive, ``estab``/``time_wait`` accepted); ``listening`` is
    ``state="LISTEN"``.  ``processes`` fills ``pids`` (slow: walks every
    process's descriptors).  ``source`` picks netlink or /proc (``auto``:
    netlink when the kernel offers it).  ``tcp_info`` fills ``tcp_info``
    (netlink only).  Sorted by local port, then local and remote address.

    Raises ``SocketTableUnavailable`` when no source exists on this platform,
    ``ValueError`` for an unknown state name.
    """
    chosen = _choose_source(source)
    wanted: Optional[set[int]] = None
    if listening:
        wanted = {10}
    elif state is not None:
        names = [state] if isinstance(state, str) else list(state)
        wanted = {_STATE_NUMBERS[normalize_state(n)] for n in names}
        if 3 in wanted:
            wanted.add(12)
    entries = None
    if chosen == "netlink":
        mask = 0xFFFFFFFF if wanted is None else sum(1 << n for n in wanted)
        try:
            entries = _read_netlink(mask, tcp_info)
        except OSError:
            # A sandbox may allow the netlink socket but refuse the dump: /proc still answers.
            if source != "auto" or not _proc_available():
                raise
    if entries is None:
        entries = _read_proc(wanted)
    if port is not None:
        entries = [e for e in entries if e.local[1] == port or e.remote[1] == port]
    if processes:
        owners = _owners({e.inode for e in entries if e.inode})
        entries = [_with(e, pids=owners.get(e.inode, ())) if e.inode else e for e in entries]
    entries.sort(key=lambda e: (e.local[1], e.proto, e.local[0], e.remote[1], e.remote[0]))
    return entries


def find_socket(local, remote, *, processes: bool = False, tcp_info: bool = True,
                source: str = "auto") -> Optional[SocketEntry]:
    """The one socket whose (local, remote) 4-tuple is exactly this, or ``None``.

    ``local`` and ``remote`` are ``(host, port)`` as ``getsockname()`` /
    ``getpeername()`` return them (IPv6 4-tuples are fine).  With netlink this
    is a direct kernel lookup (no dump) and includes ``tcp_info``; so, given
    the two ends of a connection, ``find_socket(a, b)`` and
    ``find_socket(b, a)`` are its two sockets, queues included.
    """
    chosen = _choose_source(source)
    lhost, lport = _host_key(local[0]), int(local[1])
    rhost, rport = _host_key(remote[0]), int(remote[1])
    match = None
    if chosen == "netlink":
        family = socket.AF_INET6 if ":" in lhost else socket.AF_INET
        try:
            found = _netlink_query(family, states=0xFFFFFFFF, tcp_info=tcp_info, dump=False,
                                   local=(lhost, lport), remote=(rhost, rport))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            found = []
        # The exact lookup may also return a wildcard listener; keep only an exact match.
        match = next((e for e in found if (_host_key(e.local[0]), e.local[1]) == (lhost, lport)
                      and (_host_key(e.remote[0]), e.remote[1]) == (rhost, rport)), None)
    else:
        for e in _read_proc(None):
            if ((_host_key(e.local[0]), e.local[1]) == (lhost, lport)
                    and (_host_key(e.remote[0]), e.remote[1]) == (rhost, rport)):
                match = e
                break
    if match is not None and processes and match.inode:
        match = _with(match, pids=_owners({match.inode}).get(match.inode, ()))
    return match


def _with(entry: SocketEntry, **changes) -> SocketEntry:
    from dataclasses import replace
    return replace(entry, **changes)
