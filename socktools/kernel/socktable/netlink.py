"""NETLINK_SOCK_DIAG: the interface ``ss`` uses, as bytes in and entries out.

Requests are built and replies parsed by pure functions (unit-tested with
synthetic buffers); only :func:`dump` touches a socket.  Layouts and numbers
come from include/uapi/linux/{netlink,sock_diag,inet_diag,unix_diag}.h.

Speed matters here (the table may hold 10,000 sockets and the target is
``ss``'s speed), so the parsers unpack the fixed part of each message with one
``Struct``, cache address strings by their raw bytes (a machine's sockets share
a handful of addresses) and walk the attributes only when extensions were
requested or a ``[::]`` socket needs its V6ONLY flag.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Callable, Iterator, Optional

from .entry import STATES, UNCONN, SkMem, SocketEntry, Timer

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300            # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

# inet_diag attribute types; an extension is requested with bit (1 << (type - 1)) in idiag_ext.
INET_DIAG_INFO = 2
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SKV6ONLY = 11
EXT_INFO = 1 << (INET_DIAG_INFO - 1)
EXT_SKMEMINFO = 1 << (INET_DIAG_SKMEMINFO - 1)
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
INET_DIAG_REQ_BYTECODE = 1      # request attribute: a filter (see .bytecode) the kernel runs

# unix_diag: what to show (udiag_show bits) and the attribute types that answer.
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_RQLEN = 0x01, 0x04, 0x10
UDIAG_SHOW_MEMINFO, UDIAG_SHOW_UID = 0x20, 0x40
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_RQLEN, UNIX_DIAG_MEMINFO, UNIX_DIAG_UID = 0, 2, 4, 5, 7

NLMSGHDR = struct.Struct("=IHHII")              # len, type, flags, seq, pid        (16 bytes)
_REQ_V2 = struct.Struct("=BBBBI")               # family, protocol, ext, pad, states (8 bytes)
# inet_diag_msg (72 bytes): family, state, timer, retrans, sport, dport (big-endian),
# src[16], dst[16], if, cookie[2], expires, rqueue, wqueue, uid, inode.
INET_MSG = struct.Struct("=BBBBHH16s16sIIIIIIII")
_HDR_INET_MSG = struct.Struct("=IHHII" + INET_MSG.format[1:])   # nlmsghdr + inet_diag_msg
_UNIX_REQ = struct.Struct("=BBHIIIII")          # family, protocol, pad, states, ino, show, cookie[2]
UNIX_MSG = struct.Struct("=BBBBIII")            # family, type, state, pad, ino, cookie[2] (16 bytes)
_LEN_TYPE = struct.Struct("=IH")                # the first two members of nlmsghdr
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RQLEN = struct.Struct("=II")

#: A dump arrives in datagrams of up to ~32 KiB (the kernel's skb size for dumps);
#: a larger buffer costs nothing and can never truncate one.
RECV_BUFSIZE = 1 << 20
#: The kernel answers a dump at once; this only keeps a wedged sandbox from hanging the CLI.
TIMEOUT_S = 5.0

#: ss's timer names, indexed by idiag_timer (ss.c: tmr_name[]).
TIMER_NAMES = ("off", "on", "keepalive", "timewait", "persist")
UNIX_TYPES = {socket.SOCK_STREAM: "u_str", socket.SOCK_DGRAM: "u_dgr", socket.SOCK_SEQPACKET: "u_seq"}
_NTOHS = socket.ntohs


def sockid(local=None, remote=None, family=socket.AF_INET) -> bytes:
    """inet_diag_sockid for an exact lookup (zeros and no cookie for a dump)."""
    def packed(addr):
        if addr is None:
            return b"\0" * 16, 0
        return socket.inet_pton(family, addr[0]).ljust(16, b"\0"), int(addr[1])
    src, sport = packed(local)
    dst, dport = packed(remote)
    return (struct.pack("!HH", sport, dport) + src + dst
            + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))


def _message(body: bytes, dump: bool, seq: int) -> bytes:
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def inet_request(family: int, protocol: int, *, states: int = 0xFFFFFFFF, ext: int = 0,
                 local=None, remote=None, dump: bool = True, seq: int = 1,
                 bytecode: bytes = b"") -> bytes:
    """A SOCK_DIAG_BY_FAMILY request for TCP or UDP sockets: a dump (filtered in the kernel by
    ``bytecode``, see :func:`.bytecode.filter_bytecode`), or one exact 4-tuple."""
    body = _REQ_V2.pack(family, protocol, ext, 0, states) + sockid(local, remote, family)
    if bytecode:
        body += _RTATTR.pack(4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return _message(body, dump, seq)


def unix_request(*, states: int = 0xFFFFFFFF, show: int = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER
                 | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID, seq: int = 1) -> bytes:
    """A dump request for every Unix socket with its name, peer, queues and uid."""
    body = _UNIX_REQ.pack(socket.AF_UNIX, 0, 0, states, 0, show, INET_DIAG_NOCOOKIE,
                          INET_DIAG_NOCOOKIE)
    return _message(body, True, seq)


class DumpDone(Exception):
    """The kernel said NLMSG_DONE (or acknowledged): the reply is complete."""


def messages(data: bytes) -> Iterator[tuple[int, int]]:
    """``(payload offset, message end)`` of each SOCK_DIAG_BY_FAMILY message in one datagram.

    Raises :class:`DumpDone` at NLMSG_DONE or an ACK, ``OSError`` for an
    NLMSG_ERROR carrying an errno or a malformed header.
    """
    off, n = 0, len(data)
    unpack = NLMSGHDR.unpack_from
    while off + 16 <= n:
        length, mtype, _flags, _seq, _pid = unpack(data, off)
        if length < 16 or off + length > n:
            raise OSError(errno.EPROTO, "malformed netlink message from sock_diag")
        if mtype == SOCK_DIAG_BY_FAMILY:
            yield off + 16, off + length
        elif mtype == NLMSG_DONE:
            raise DumpDone
        elif mtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + 16)
            if code == 0:
                raise DumpDone
            raise OSError(-code, os.strerror(-code))
        off += (length + 3) & ~3


def attributes(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(type, payload start, payload end)`` of each rtattr in ``data[off:end]``."""
    while off + 4 <= end:
        alen, atype = _RTATTR.unpack_from(data, off)
        if alen < 4:
            return
        yield atype & 0x3FFF, off + 4, off + alen       # strip NLA_F_NESTED / NET_BYTEORDER
        off += (alen + 3) & ~3


def _skmem(data: bytes, start: int, stop: int) -> Optional[SkMem]:
    n = (stop - start) // 4
    if n < 9:           # SK_MEMINFO_DROPS is the 9th member since Linux 3.6
        return None
    return SkMem._make(struct.unpack_from("=9I", data, start))


def inet_parser(protocol: int, *, extensions: bool) -> Callable[[bytes, int, int], SocketEntry]:
    """A parser of inet_diag_msg replies into entries, for one dump.

    A closure rather than a class: everything it needs is bound once into local
    cells, which is measurably faster per message than attribute lookups on
    ``self`` when a dump carries 10,000 of them.  It caches address strings by
    their raw bytes.
    """
    tcp = protocol == socket.IPPROTO_TCP
    want_info = extensions and tcp              # UDP has no tcp_info to decode
    if want_info:
        # Imported here: the plain table never decodes tcp_info, and this module is on the
        # startup path of a command timed against ss.
        from socktools.kernel.tcpinfo import parse_tcp_info
    names = [STATES.get(i) or f"STATE-{i}" for i in range(256)]
    if not tcp:
        names[7] = UNCONN
    proto4, proto6 = ("tcp", "tcp6") if tcp else ("udp", "udp6")
    hosts: dict[bytes, str] = {}
    unpack, ntohs, new, inet_ntop = INET_MSG.unpack_from, _NTOHS, tuple.__new__, socket.inet_ntop

    def host(family: int, raw: bytes) -> str:
        text = hosts[raw] = inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)
        return text

    def parse(data: bytes, off: int, end: int) -> SocketEntry:
        (family, state, timer, retrans, sport, dport, src, dst, _if, c0, c1, expires,
         rq, wq, uid, inode) = unpack(data, off)
        v6 = family == 10                       # AF_INET6
        lhost = hosts.get(src) or host(family, src)
        info = skmem = tmr = v6only = None
        if extensions or (v6 and lhost == "::"):
            for atype, a, b in attributes(data, off + 72, end):
                if atype == INET_DIAG_INFO and want_info:
                    # The payload is the kernel's struct tcp_info, as getsockopt(TCP_INFO) gives it.
                    info = parse_tcp_info(data[a:b])
                elif atype == INET_DIAG_SKMEMINFO:
                    skmem = _skmem(data, a, b)
                elif atype == INET_DIAG_SKV6ONLY and b > a:
                    v6only = bool(data[a])
            if timer and tcp and extensions:
                tmr = Timer(TIMER_NAMES[timer] if timer < 5 else "unknown", expires, retrans)
        # tuple.__new__ skips the named tuple's Python-level __new__: a third of the cost per row.
        return new(SocketEntry, (
            proto6 if v6 else proto4, (lhost, ntohs(sport)),
            (hosts.get(dst) or host(family, dst), ntohs(dport)), names[state], rq, wq, inode, uid,
            (), info, tmr, skmem, c0 | (c1 << 32) if c1 else c0, v6only))

    full = _HDR_INET_MSG.unpack_from

    def walk(data: bytes, append: Callable[[SocketEntry], None]) -> int:
        """The plain table's loop: header and message in one unpack, no call per message.

        Handles the run of messages that need nothing but the fixed part (no
        extensions asked, not a ``[::]`` socket) and returns the offset of the
        first message it leaves to ``parse`` and the generic walk (~15 % faster
        per socket than a ``parse`` call each).
        """
        off, n = 0, len(data)
        while off + 88 <= n:
            (length, mtype, _fl, _seq, _pid, family, state, _timer, _retrans, sport, dport, src,
             dst, _if, c0, c1, _expires, rq, wq, uid, inode) = full(data, off)
            if mtype != SOCK_DIAG_BY_FAMILY or length < 88 or off + length > n:
                return off
            lhost = hosts.get(src) or host(family, src)
            if lhost == "::":
                return off                      # needs its V6ONLY attribute: parse() reads it
            append(new(SocketEntry, (
                proto6 if family == 10 else proto4, (lhost, ntohs(sport)),
                (hosts.get(dst) or host(family, dst), ntohs(dport)), names[state], rq, wq, inode,
                uid, (), None, None, None, c0 | (c1 << 32) if c1 else c0, None)))
            off += (length + 3) & ~3
        return off

    if not extensions:
        parse.walk = walk                       # type: ignore[attr-defined]
    return parse




def parse_unix(data: bytes, off: int, end: int) -> SocketEntry:
    """One unix_diag_msg with the NAME, PEER, RQLEN, UID (and MEMINFO) attributes."""
    _family, stype, state, _pad, inode, c0, c1 = UNIX_MSG.unpack_from(data, off)
    name, peer, rq, wq, uid, skmem = "*", 0, 0, 0, -1, None
    for atype, a, b in attributes(data, off + 16, end):
        if atype == UNIX_DIAG_NAME:
            raw = data[a:b]
            # An abstract name starts with NUL; ss prints it with a leading '@'.
            name = ("@" + raw[1:].decode("utf-8", "replace")) if raw[:1] == b"\0" \
                else raw.rstrip(b"\0").decode("utf-8", "replace")
        elif atype == UNIX_DIAG_PEER:
            (peer,) = _U32.unpack_from(data, a)
        elif atype == UNIX_DIAG_RQLEN:
            rq, wq = _RQLEN.unpack_from(data, a)
        elif atype == UNIX_DIAG_UID:
            (uid,) = _U32.unpack_from(data, a)
        elif atype == UNIX_DIAG_MEMINFO:
            skmem = _skmem(data, a, b)
    st = UNCONN if state == 7 else (STATES.get(state) or f"STATE-{state}")
    return SocketEntry(UNIX_TYPES.get(stype, f"u_{stype}"), (name, inode), ("*", peer), st,
                       rq, wq, inode, uid, (), None, None, skmem, c0 | (c1 << 32), None)


def parse_datagram(data: bytes, parse: Callable[[bytes, int, int], SocketEntry],
                   append: Callable[[SocketEntry], None]) -> bool:
    """Parse every message of one reply datagram; True once the reply is complete.

    The parser's fast ``walk`` (if it has one) takes the run of plain messages,
    then the generic walk takes the rest (NLMSG_DONE, errors, odd messages).
    """
    walk = getattr(parse, "walk", None)
    off, n = (walk(data, append) if walk else 0), len(data)
    unpack = _LEN_TYPE.unpack_from
    while off + 16 <= n:
        length, mtype = unpack(data, off)
        if mtype != SOCK_DIAG_BY_FAMILY or length < 16 or off + length > n:
            try:
                for a, b in messages(data[off:]):
                    append(parse(data, off + a, off + b))
            except DumpDone:
                return True
            return False
        append(parse(data, off + 16, off + length))
        off += (length + 3) & ~3
    return False


def dump(request: bytes, parse: Callable[[bytes, int, int], SocketEntry], *,
         single: bool = False) -> list[SocketEntry]:
    """Send one request on a fresh NETLINK_SOCK_DIAG socket and parse every reply message.

    ``single``: an exact lookup, answered by one message (or an error) and no NLMSG_DONE.
    """
    out: list[SocketEntry] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(TIMEOUT_S)
        nl.sendto(request, (0, 0))
        recv, append = nl.recv, out.append
        while not parse_datagram(recv(RECV_BUFSIZE), parse, append):
            if single and out:
                break
    return out


def available() -> bool:
    if not hasattr(socket, "AF_NETLINK"):
        return False
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG).close()
        return True
    except OSError:
        return False
