"""ICMP and ICMPv6 messages in words, as tshark and tcpdump name them (RFC 792, 1191, 4443).

``describe_icmp(frame, off, end)`` reads the message at ``off`` and returns
one line: ``echo request id=0x1c2d seq=1``, ``destination port unreachable
(udp 127.0.0.1:9)``, ``fragmentation needed (next-hop MTU 1400)``, ``time
exceeded: time to live exceeded in transit``...  The words come from
:mod:`socktools.icmpnames`, the table ``ping --icmp`` names them by too.  Errors quote the start of the packet
that caused them; what it was (protocol, destination, port) is the most useful
part, so it is read and shown.
"""

from __future__ import annotations

import socket
import struct

from socktools.icmpnames import code_words, type_name

__all__ = ["describe_icmp", "describe_icmpv6"]

_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_ECHO = struct.Struct("!HH")


def _quoted_v4(frame: bytes, off: int) -> str:
    """What the quoted IPv4 packet was: ``udp 127.0.0.1:9``."""
    if len(frame) < off + 20 or frame[off] >> 4 != 4:
        return ""
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    dst = socket.inet_ntop(socket.AF_INET, frame[off + 16:off + 20])
    return _quoted(frame, off + ihl, proto, dst)


def _quoted_v6(frame: bytes, off: int) -> str:
    if len(frame) < off + 40 or frame[off] >> 4 != 6:
        return ""
    dst = socket.inet_ntop(socket.AF_INET6, frame[off + 24:off + 40])
    return _quoted(frame, off + 40, frame[off + 6], f"[{dst}]")


def _quoted(frame: bytes, l4: int, proto: int, dst: str) -> str:
    name = _PROTO.get(proto, f"protocol {proto}")
    if proto in (6, 17) and len(frame) >= l4 + 4:
        return f" ({name} {dst}:{struct.unpack_from('!H', frame, l4 + 2)[0]})"
    return f" ({name} {dst})"


def describe_icmp(frame: bytes, off: int, end: int = 0) -> str:
    """One line for the ICMP message at ``off``."""
    kind, code = frame[off], frame[off + 1]
    if kind in (0, 8, 13, 14) and len(frame) >= off + 8:
        ident, seq = _ECHO.unpack_from(frame, off + 4)
        return f"{type_name(kind)} id=0x{ident:04x} seq={seq}"
    words = code_words(kind, code)
    if kind == 3:
        if code == 4 and len(frame) >= off + 8:
            mtu = struct.unpack_from("!H", frame, off + 6)[0]
            words += f" (next-hop MTU {mtu})" if mtu else ""
        return words + _quoted_v4(frame, off + 8)
    if kind == 11:
        return f"time exceeded: {words}" + _quoted_v4(frame, off + 8)
    return words


def describe_icmpv6(frame: bytes, off: int, end: int = 0) -> str:
    """One line for the ICMPv6 message at ``off``."""
    kind, code = frame[off], frame[off + 1]
    if kind in (128, 129) and len(frame) >= off + 8:
        ident, seq = _ECHO.unpack_from(frame, off + 4)
        return f"{type_name(kind, v6=True)} id=0x{ident:04x} seq={seq}"
    words = code_words(kind, code, v6=True)
    if kind == 1:
        return words + _quoted_v6(frame, off + 8)
    if kind == 2 and len(frame) >= off + 8:
        return f"packet too big (MTU {struct.unpack_from('!I', frame, off + 4)[0]})" + \
            _quoted_v6(frame, off + 8)
    if kind == 3:
        return f"time exceeded: {words}" + _quoted_v6(frame, off + 8)
    if kind in (135, 136) and len(frame) >= off + 24:
        target = socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24])
        return f"{words} for {target}"
    return words
