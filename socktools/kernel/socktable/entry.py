"""One socket as the kernel reports it, the state names, and ss's state groups.

``SocketEntry`` is a named tuple rather than a frozen dataclass on purpose:
the table is built for every socket of the machine (10,000 and more on a
busy server) and a frozen dataclass's ``__init__`` costs several times what
``tuple.__new__`` does; the netlink parser calls ``tuple.__new__(SocketEntry, ...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional

if TYPE_CHECKING:       # the decoder loads only when tcp_info is asked for (startup time)
    from socktools.kernel.tcpinfo import TcpInfo

__all__ = ["SocketEntry", "Owner", "Timer", "SkMem", "SocketTableUnavailable", "STATES",
           "STATE_NUMBERS", "STATE_GROUPS", "normalize_state", "state_mask", "FAMILIES"]


class SocketTableUnavailable(RuntimeError):
    """Neither NETLINK_SOCK_DIAG nor /proc/net/* can be read on this machine."""


# Kernel TCP states (include/net/tcp_states.h), named as ss names them except
# that ESTABLISHED is spelled out.  NEW-SYN-RECV is a request socket (a SYN
# answered, handshake not finished); inet_diag reports those as SYN-RECV.
# UDP and Unix sockets reuse the numbers: 1 connected, 7 unconnected, 10 listening.
STATES = {
    1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
    6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW-SYN-RECV", 13: "BOUND-INACTIVE",
}
#: ss prints state 7 of a UDP or Unix socket as UNCONN (bound or not, no peer).
UNCONN = "UNCONN"
STATE_NUMBERS = {name: num for num, name in STATES.items()}
STATE_NUMBERS[UNCONN] = 7
_STATE_ALIASES = {"ESTAB": "ESTABLISHED", "SYN-RECEIVED": "SYN-RECV", "LISTENING": "LISTEN",
                  "FIN-WAIT1": "FIN-WAIT-1", "FIN-WAIT2": "FIN-WAIT-2", "CLOSED": "CLOSE"}

# ss(8), STATE-FILTER: "connected - all the states except for listening and closed;
# synchronized - all the connected states except for syn-sent; bucket - states which
# are maintained as minisockets, i.e. time-wait and syn-recv; big - opposite to bucket".
_ALL = frozenset(range(1, 13))
_CONNECTED = _ALL - {10, 7}
STATE_GROUPS = {
    "ALL": _ALL,
    "CONNECTED": _CONNECTED,
    "SYNCHRONIZED": _CONNECTED - {2},
    "BUCKET": frozenset({6, 3, 12}),
    "BIG": _ALL - {6, 3, 12},
}

#: Families ``read_sockets(families=...)`` knows, in the order tables list them.
FAMILIES = ("tcp", "udp", "unix")


def normalize_state(name: str) -> str:
    """``"estab"`` / ``"time_wait"`` / ``"TIME-WAIT"`` -> ``"ESTABLISHED"`` / ``"TIME-WAIT"``.

    Raises ``ValueError`` listing the valid names for anything else.  Group
    names (``connected``...) are not states: see :func:`state_mask`.
    """
    key = name.strip().upper().replace("_", "-")
    key = _STATE_ALIASES.get(key, key)
    if key not in STATE_NUMBERS:
        valid = ", ".join(n for n in STATES.values() if n not in ("NEW-SYN-RECV", "BOUND-INACTIVE"))
        raise ValueError(f"unknown TCP state {name!r} (one of: {valid}, or a group: "
                         f"{', '.join(g.lower() for g in STATE_GROUPS)})")
    return key


def state_mask(names) -> frozenset:
    """State numbers for names and ss groups: ``["connected"]``, ``["estab", "time-wait"]``."""
    out: set[int] = set()
    for name in names:
        group = STATE_GROUPS.get(name.strip().upper())
        if group is not None:
            out |= group
            continue
        num = STATE_NUMBERS[normalize_state(name)]
        out.add(num)
        if num == 3:
            out.add(12)         # a SYN-RECV filter also matches request sockets
    return frozenset(out)


class Owner(NamedTuple):
    """A process holding the socket: ``pid``, ``name`` (its comm) and the descriptor ``fd``."""

    pid: int
    name: str
    fd: int


class Timer(NamedTuple):
    """The socket's pending timer, as ``ss -o`` prints ``timer:(on,200ms,0)``."""

    name: str           # "on" (retransmit/TLP), "keepalive", "timewait", "persist", "unknown"
    expires_ms: int     # until it fires
    retrans: int        # retransmissions (or probes) so far


class SkMem(NamedTuple):
    """Socket memory (INET_DIAG_SKMEMINFO / UNIX_DIAG_MEMINFO), as ``ss -m`` prints ``skmem:(...)``."""

    rmem_alloc: int     # r: bytes of received data held
    rcvbuf: int         # rb: receive buffer size
    wmem_alloc: int     # t: bytes of sent data not yet freed (in the qdisc/driver or unacked)
    sndbuf: int         # tb: send buffer size
    fwd_alloc: int      # f: memory reserved but not used yet
    wmem_queued: int    # w: bytes queued for sending
    optmem: int         # o: memory for options (socket filters...)
    backlog: int        # bl: packets in the backlog queue (arrived while the socket was busy)
    drops: int          # d: packets dropped before reaching the socket

    def render(self) -> str:
        return (f"r{self.rmem_alloc},rb{self.rcvbuf},t{self.wmem_alloc},tb{self.sndbuf},"
                f"f{self.fwd_alloc},w{self.wmem_queued},o{self.optmem},bl{self.backlog},d{self.drops}")


class SocketEntry(NamedTuple):
    """One socket as ``ss -tan`` / ``ss -uan`` / ``ss -xan`` show it.

    ``proto`` is ``tcp``/``tcp6``/``udp``/``udp6`` or, for Unix sockets, ss's
    netid ``u_str``/``u_dgr``/``u_seq``.  ``local``/``remote`` are ``(host,
    port)`` with the host a numeric string (``"127.0.0.1"``, ``"::1"``); a
    Unix socket's are ``(path, inode)`` and ``("*", peer inode)`` as ss
    prints them (abstract names start with ``@``).  For a LISTEN socket
    ``recv_q`` is the accept queue and ``send_q`` the backlog (``None`` from
    /proc, which does not export it).  ``inode`` is 0 for TIME-WAIT sockets and
    connections still in an accept queue: no process holds them.  ``uid`` is
    -1 where unknown.  ``owners`` is filled when ``processes=True`` was
    asked; ``tcp_info``, ``timer`` and ``skmem`` when ``info=True`` (netlink
    only).  ``cookie`` is the kernel's socket cookie (0 from /proc), unique for
    the socket's life.  ``v6only`` says whether a ``[::]`` socket refuses IPv4
    (``None`` when unknown or not IPv6).
    """

    proto: str
    local: tuple
    remote: tuple
    state: str
    recv_q: int
    send_q: Optional[int]
    inode: int
    uid: int
    owners: tuple = ()
    tcp_info: Optional["TcpInfo"] = None
    timer: Optional[Timer] = None
    skmem: Optional[SkMem] = None
    cookie: int = 0
    v6only: Optional[bool] = None

    @property
    def pids(self) -> tuple:
        """``((pid, name), ...)``, one per process (a forked server shares its listener)."""
        seen, out = set(), []
        for o in self.owners:
            if o.pid not in seen:
                seen.add(o.pid)
                out.append((o.pid, o.name))
        return tuple(out)

    @property
    def family(self) -> str:
        """``"tcp"``, ``"udp"`` or ``"unix"``."""
        return "unix" if self.proto.startswith("u_") else self.proto[:3]

    @property
    def listening(self) -> bool:
        return self.state == "LISTEN"

    @property
    def accept_queue(self) -> Optional[tuple]:
        """``(current, backlog)`` for a LISTEN socket, else ``None``."""
        return (self.recv_q, self.send_q) if self.listening else None

    @property
    def key(self) -> tuple:
        """Identity across two reads: the cookie where known, else the address tuple and inode."""
        if self.cookie:
            return (self.proto, self.cookie)
        return (self.proto, self.local, self.remote, self.inode)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists, ``tcp_info`` a dict or None)."""
        return {
            "proto": self.proto, "local": list(self.local), "remote": list(self.remote),
            "state": self.state, "recv_q": self.recv_q, "send_q": self.send_q,
            "inode": self.inode, "uid": self.uid, "pids": [list(p) for p in self.pids],
            "owners": [o._asdict() for o in self.owners],
            "tcp_info": self.tcp_info.to_dict() if self.tcp_info is not None else None,
            "timer": self.timer._asdict() if self.timer is not None else None,
            "skmem": self.skmem._asdict() if self.skmem is not None else None,
            "cookie": self.cookie, "v6only": self.v6only,
        }
