"""ICMP and ICMPv6 messages in words, as tshark and tcpdump name them (RFC 792, 1191, 4443).

``describe_icmp(frame, off, end)`` reads the message at ``off`` and returns
one line: ``echo request id=0x1c2d seq=1``, ``destination port unreachable
(udp 127.0.0.1:9)``, ``fragmentation needed (next-hop MTU 1400)``, ``time
exceeded: TTL exceeded in transit``...  Errors quote the start of the packet
that caused them; what it was (protocol, destination, port) is the most useful
part, so it is read and shown.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["describe_icmp", "describe_icmpv6", "ICMP_TYPES", "ICMP_UNREACHABLE",
           "ICMPV6_TYPES", "ICMPV6_UNREACHABLE"]

ICMP_TYPES = {
    0: "echo reply", 3: "destination unreachable", 4: "source quench", 5: "redirect",
    8: "echo request", 9: "router advertisement", 10: "router solicitation",
    11: "time exceeded", 12: "parameter problem", 13: "timestamp request",
    14: "timestamp reply",
}
#: Destination unreachable codes (RFC 792, 1122, 1812).
ICMP_UNREACHABLE = {
    0: "destination network unreachable", 1: "destination host unreachable",
    2: "destination protocol unreachable", 3: "destination port unreachable",
    4: "fragmentation needed", 5: "source route failed",
    6: "destination network unknown", 7: "destination host unknown",
    9: "network administratively prohibited", 10: "host administratively prohibited",
    11: "network unreachable for type of service", 12: "host unreachable for type of service",
    13: "communication administratively prohibited", 14: "host precedence violation",
    15: "precedence cutoff in effect",
}
_TIME_EXCEEDED = {0: "TTL exceeded in transit", 1: "fragment reassembly time exceeded"}
_REDIRECT = {0: "for network", 1: "for host", 2: "for type of service and network",
             3: "for type of service and host"}

ICMPV6_TYPES = {
    1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
    4: "parameter problem", 128: "echo request", 129: "echo reply",
    130: "multicast listener query", 131: "multicast listener report",
    132: "multicast listener done", 133: "router solicitation", 134: "router advertisement",
    135: "neighbor solicitation", 136: "neighbor advertisement", 137: "redirect",
    143: "multicast listener report v2",
}
ICMPV6_UNREACHABLE = {
    0: "no route to destination", 1: "communication administratively prohibited",
    2: "beyond scope of source address", 3: "destination address unreachable",
    4: "destination port unreachable", 5: "source address failed ingress/egress policy",
    6: "reject route to destination",
}
_V6_TIME_EXCEEDED = {0: "hop limit exceeded in transit", 1: "fragment reassembly time exceeded"}

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
        return f"{ICMP_TYPES[kind]} id=0x{ident:04x} seq={seq}"
    if kind == 3:
        text = ICMP_UNREACHABLE.get(code, f"destination unreachable (code {code})")
        if code == 4 and len(frame) >= off + 8:
            mtu = struct.unpack_from("!H", frame, off + 6)[0]
            text += f" (next-hop MTU {mtu})" if mtu else ""
        return text + _quoted_v4(frame, off + 8)
    if kind == 11:
        return "time exceeded: " + _TIME_EXCEEDED.get(code, f"code {code}") + \
            _quoted_v4(frame, off + 8)
    if kind == 5:
        return f"redirect {_REDIRECT.get(code, f'code {code}')}"
    if kind in ICMP_TYPES:
        return ICMP_TYPES[kind] + (f" (code {code})" if code else "")
    return f"type {kind} code {code}"


def describe_icmpv6(frame: bytes, off: int, end: int = 0) -> str:
    """One line for the ICMPv6 message at ``off``."""
    kind, code = frame[off], frame[off + 1]
    if kind in (128, 129) and len(frame) >= off + 8:
        ident, seq = _ECHO.unpack_from(frame, off + 4)
        return f"{ICMPV6_TYPES[kind]} id=0x{ident:04x} seq={seq}"
    if kind == 1:
        return ICMPV6_UNREACHABLE.get(code, f"destination unreachable (code {code})") + \
            _quoted_v6(frame, off + 8)
    if kind == 2 and len(frame) >= off + 8:
        return f"packet too big (MTU {struct.unpack_from('!I', frame, off + 4)[0]})" + \
            _quoted_v6(frame, off + 8)
    if kind == 3:
        return "time exceeded: " + _V6_TIME_EXCEEDED.get(code, f"code {code}") + \
            _quoted_v6(frame, off + 8)
    if kind in (135, 136) and len(frame) >= off + 24:
        target = socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24])
        return f"{ICMPV6_TYPES[kind]} for {target}"
    if kind in ICMPV6_TYPES:
        return ICMPV6_TYPES[kind] + (f" (code {code})" if code else "")
    return f"type {kind} code {code}"
