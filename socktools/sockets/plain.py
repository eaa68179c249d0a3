"""The default table (``socktools sockets``, no options) straight from netlink bytes to text.

This is the command timed against ``ss -tan``, so it takes a shorter road than
the general one (:mod:`socktools.kernel.socktable` -> :mod:`.report`), with
the same output byte for byte (a test renders one table both ways):

* imports: ``_socket`` (the C module: ``socket`` would build its enums, ~5 ms)
  and ``struct`` only (no click, no typing, no dataclasses, no entry classes); ``python -m socktools sockets`` reaches here from
  :mod:`socktools.__main__` without loading the click switchboard;
* the kernel is asked for the fixed part of each TCP socket only (no
  INET_DIAG_INFO / MEMINFO extensions: a smaller dump, less to parse);
* one ``unpack_from`` per message reads only the fields the table shows; the
  row is built as the tuple the format string takes (no SocketEntry, no
  nested address tuples); address text is cached per raw address bytes;
* one format string per table (widths from one pass), one join, one write.

Anything unusual (an error from the kernel, an empty table) makes
:func:`table_text` return ``None`` and the caller takes the general road,
which knows how to say it.  The netlink numbers are those of
:mod:`socktools.kernel.socktable.netlink` (a test keeps them equal): importing
that module would load the entry classes this path avoids.
"""

from __future__ import annotations

import _socket as socket
import struct
from itertools import repeat
from operator import itemgetter

# include/uapi/linux/{netlink,sock_diag,inet_diag}.h, as in socktable.netlink.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_SKV6ONLY = 11
INET_DIAG_REQ_BYTECODE = 1
_FLAGS = 0x1 | 0x300                            # NLM_F_REQUEST | NLM_F_DUMP
# nlmsghdr + inet_diag_req_v2 + an empty inet_diag_sockid (no cookie): 16 + 8 + 48 bytes.
_REQUEST = struct.Struct("=IHHII" "BBBBI" "4x16s16s4xII")
_RTATTR = struct.Struct("=HH")
# nlmsghdr + inet_diag_msg, only what the table shows: length, type, family, state,
# sport, dport (big-endian on the wire, swapped below), src, dst, rqueue, wqueue.
_ROW = struct.Struct("=IH10xBB2xHH16s16s16xII8x")
_ROW_SIZE = _ROW.size                           # 88 = 16 + 72
RECV_BUFSIZE = 1 << 20                          # as socktable.netlink: never truncates a datagram
TIMEOUT_S = 5.0

# ss's names, as socktable.entry.STATES spells them (7 is CLOSE for TCP).
_STATES = {1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
           6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
           11: "CLOSING", 12: "NEW-SYN-RECV", 13: "BOUND-INACTIVE"}
_NAMES = [_STATES.get(i) or f"STATE-{i}" for i in range(256)]
_HEADER = ("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")
_WILD6 = "[::]:"
_KEY = itemgetter(0)
LISTEN_NOTE = "LISTEN rows: Recv-Q = connections waiting for accept(), Send-Q = backlog"


class _Unusual(Exception):
    """Something the general road handles (and words) better: an errno, a malformed reply."""


def request(family: int, states: int = 0xFFFFFFFF, bytecode: bytes = b"") -> bytes:
    """A TCP dump request of ``family`` without extensions (optionally a kernel filter)."""
    attr = _RTATTR.pack(4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode if bytecode else b""
    head = _REQUEST.pack(_REQUEST.size + len(attr), SOCK_DIAG_BY_FAMILY, _FLAGS, 1, 0,
                         family, socket.IPPROTO_TCP, 0, 0, states, b"", b"", 0xFFFFFFFF, 0xFFFFFFFF)
    return head + attr


def _v6only(data: bytes, off: int, end: int) -> "bool | None":
    """INET_DIAG_SKV6ONLY among a message's attributes (None when absent)."""
    while off + 4 <= end:
        alen, atype = _RTATTR.unpack_from(data, off)
        if alen < 4:
            break
        if atype & 0x3FFF == INET_DIAG_SKV6ONLY and alen > 4:
            return bool(data[off + 4])
        off += (alen + 3) & ~3
    return None


class Collector:
    """Rows of one table from any number of reply datagrams (pure: feed it bytes).

    ``rows`` are ``(key, state, recv_q, send_q, local, peer)``: the sort key
    (local port, then peer port, as the general reader sorts), then the cells.
    """

    def __init__(self) -> None:
        self.rows: list = []
        # raw 16 address bytes -> the cell text before the port ("127.0.0.1:", "[::1]:"; [::] is
        # _WILD6 itself, tested by identity).  One cache per dump: 0.0.0.0 and :: arrive as
        # the same 16 zero bytes.
        self._caches: dict = {}
        self._hosts: dict = {}

    def dump(self, family: int) -> None:
        """The datagrams fed next are the reply to a dump of this address family."""
        self._hosts = self._caches.setdefault(family, {})

    def _host(self, family: int, raw: bytes) -> str:
        text = socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)
        shown = _WILD6 if text == "::" else (f"[{text}]:" if ":" in text else f"{text}:")
        self._hosts[raw] = shown
        return shown

    @staticmethod
    def _rare(prefix: str, port: int, data: bytes, off: int, end: int, local: bool) -> str:
        """A cell at port 0 or of a local [::]: what ss prints depends on more than the bytes."""
        if local and prefix is _WILD6 and _v6only(data, off + _ROW_SIZE, end) is False:
            return f"*:{port}" if port else "*:*"       # [::] that takes IPv4 too: ss's '*'
        if port:
            return f"{prefix}{port}"
        # Port 0 means "any" only beside a wildcard host (a listener's peer, unconnected UDP).
        return prefix + ("*" if prefix is _WILD6 or prefix == "0.0.0.0:" else "0")

    def feed(self, data: bytes) -> bool:
        """Parse one datagram; True once the dump is complete (NLMSG_DONE)."""
        unpack, hosts, host, names, rare = _ROW.unpack_from, self._hosts, self._host, _NAMES, self._rare
        add_row = self.rows.append
        off, n = 0, len(data)
        last = n - _ROW_SIZE                    # beyond it, no room for a socket message
        while off <= last:
            length, mtype, family, state, sport, dport, src, dst, rq, wq = unpack(data, off)
            if mtype != SOCK_DIAG_BY_FAMILY or length < _ROW_SIZE or off + length > n:
                break
            lp = hosts.get(src) or host(family, src)
            rp = hosts.get(dst) or host(family, dst)
            # The wire has the ports big-endian; a byte swap is cheaper than socket.ntohs.
            sport = ((sport & 0xFF) << 8) | (sport >> 8)
            dport = ((dport & 0xFF) << 8) | (dport >> 8)
            add_row(((sport << 16) | dport, names[state], rq, wq,
                     f"{lp}{sport}" if sport and lp is not _WILD6
                     else rare(lp, sport, data, off, off + length, True),
                     f"{rp}{dport}" if dport else rare(rp, dport, data, off, off + length, False)))
            off += (length + 3) & ~3
        else:
            if off + 16 > n:
                return False
        # Not a socket message: the end of the dump, an error, or something malformed.
        mtype = struct.unpack_from("=H", data, off + 4)[0]
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR and off + 20 <= n and struct.unpack_from("=i", data, off + 16)[0] == 0:
            return True
        raise _Unusual(f"netlink message type {mtype} at {off}")

    def sorted_rows(self) -> list:
        """The rows by local port then peer port; ties keep the kernel's order (a stable sort)."""
        self.rows.sort(key=_KEY)
        return self.rows


def render(rows: list) -> str:
    """The table as :func:`socktools.sockets.report.one_shot` renders it for netlink, TCP only.

    Column by column through C-level ``map``/``zip`` (no Python code per cell); the
    state-and-queues part of a line is formatted once per distinct value.  ``rows``
    are a :class:`Collector`'s, sorted.
    """
    _keys, states_, rqs, wqs, locals_, peers = zip(*rows)
    # (state, Recv-Q, Send-Q) has few distinct values: each is formatted once.
    distinct = set(zip(states_, rqs, wqs))
    states = {h[0] for h in distinct}
    w_state = max(len(_HEADER[0]), *map(len, states))
    w_rq = max(len(_HEADER[1]), *(len(str(h[1])) for h in distinct))
    w_wq = max(len(_HEADER[2]), *(len(str(h[2])) for h in distinct))
    w_local = max(len(_HEADER[3]), *map(len, locals_))
    fmt = f"%-{w_state}s  %{w_rq}s  %{w_wq}s  "
    shown = {h: fmt % h for h in distinct}
    head = (fmt % _HEADER[:3] + f"%-{w_local}s  %s" % _HEADER[3:]).rstrip()
    body = "\n".join(map("".join, zip(map(shown.__getitem__, zip(states_, rqs, wqs)),
                                      map(str.ljust, locals_, repeat(w_local + 2)), peers)))
    text = f"{head}\n{body}"
    return text + "\n\n" + LISTEN_NOTE if "LISTEN" in states else text


def read(states: int = 0xFFFFFFFF, bytecode: bytes = b"") -> Collector:
    """Dump the TCP sockets (IPv4, then IPv6) into one :class:`Collector`.

    Raises ``OSError`` (netlink refused, no IPv6, ...) or ``_Unusual``: the
    general reader handles each of those its own way.
    """
    out = Collector()
    for family in (socket.AF_INET, socket.AF_INET6):
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        try:                                # (_socket's socket is no context manager)
            nl.settimeout(TIMEOUT_S)
            nl.sendto(request(family, states, bytecode), (0, 0))
            out.dump(family)
            recv, feed = nl.recv, out.feed
            while not feed(recv(RECV_BUFSIZE)):
                pass
        finally:
            nl.close()
    return out


def table_text() -> "str | None":
    """The default table's text (without the final newline), or None: take the general road."""
    import gc
    was = gc.isenabled()
    gc.disable()            # acyclic tuples and strings only; see socktable.paused_gc
    try:
        got = read()
        if not got.rows:
            return None     # "no sockets match" is the general road's to say
        return render(got.sorted_rows())
    except (OSError, _Unusual, AttributeError):     # AttributeError: no AF_NETLINK (not Linux)
        return None
    finally:
        if was:
            gc.enable()
