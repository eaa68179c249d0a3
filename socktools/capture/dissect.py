"""Cheap link/IP/TCP header parsing with ``struct``: frame bytes in, a ``Segment`` out.

scapy builds a Python object per layer and field, which costs tens of
microseconds per packet; a capture that has to keep up with tens of thousands
of packets per second cannot afford that.  This module reads exactly the
fields the view needs (addresses, ports, seq/ack, flags, window, payload) with
``struct.unpack_from`` and nothing else.  Packets that are not TCP become an
:class:`OtherPacket` with a one-line description; only the rare ones this
module cannot describe are handed to scapy (lazily, in :func:`describe_other`).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Optional, Union

__all__ = [
    "LINKTYPE_NULL", "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LOOP", "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2", "LINKTYPE_NAMES", "SUPPORTED_LINKTYPES",
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "flag_names",
    "Segment", "Datagram", "OtherPacket", "dissect", "describe_other", "format_ip",
]

# pcap LINKTYPE_* values (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0          # BSD loopback: 4-byte address family, host byte order
LINKTYPE_ETHERNET = 1      # Ethernet; Linux "lo" frames look like Ethernet with zero MACs
LINKTYPE_RAW = 101         # raw IPv4/IPv6, no link header (tun devices)
LINKTYPE_LOOP = 108        # OpenBSD loopback: 4-byte address family, network byte order
LINKTYPE_LINUX_SLL = 113   # Linux "cooked" capture (tcpdump -i any), v1
LINKTYPE_LINUX_SLL2 = 276  # Linux "cooked" capture, v2
_LINKTYPE_RAW_ALIASES = (12, 14)  # DLT_RAW as some platforms number it

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback", LINKTYPE_LINUX_SLL: "Linux cooked v1",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES) | frozenset(_LINKTYPE_RAW_ALIASES)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
# Order as tshark prints them: [SYN, ACK], [FIN, ACK], [PSH, ACK], [RST, ACK]...
_FLAG_ORDER = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"),
               (URG, "URG"), (ECE, "ECE"), (CWR, "CWR"))
_FLAG_CACHE: dict[int, tuple[str, ...]] = {}

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_IPPROTO_ICMP = 1
_IPPROTO_ICMPV6 = 58
# IPv6 extension headers that carry a "next header" + "length in 8-octet units" pair.
_IPV6_EXT = frozenset((0, 43, 60, 51, 135, 139, 140))
_IPV6_FRAGMENT = 44
_BSD_AF_INET6 = frozenset((10, 24, 28, 30))  # AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS

_H = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_TS = struct.Struct("!II")
_ETH_IPV4_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")   # from offset 14: IPv4 (no options) + TCP
#: NOP, NOP, Timestamp (kind 8, length 10): how Linux, BSD and Windows lay out the
#: option on every segment after the handshake, so one compare finds it.
_TS_LAYOUT = b"\x01\x01\x08\x0a"
_UDP = struct.Struct("!HHHH")


def flag_names(flags: int) -> tuple[str, ...]:
    """``0x12`` -> ``("SYN", "ACK")``, in tshark's order."""
    names = _FLAG_CACHE.get(flags)
    if names is None:
        names = tuple(name for bit, name in _FLAG_ORDER if flags & bit)
        _FLAG_CACHE[flags] = names
    return names


_ADDR_CACHE: dict[bytes, str] = {}


def format_ip(raw: bytes) -> str:
    """Packed IPv4/IPv6 address -> text, cached (a capture sees few distinct addresses)."""
    text = _ADDR_CACHE.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)
        if len(_ADDR_CACHE) < 65536:
            _ADDR_CACHE[raw] = text
    return text


class Segment(NamedTuple):
    """One TCP segment, as far as the view needs it.

    ``src``/``dst`` are packed addresses (4 or 16 bytes); ``payload`` holds the
    captured TCP payload (shorter than ``payload_len`` when the frame was cut
    by the snap length); ``options`` is a dict of the handshake options (MSS,
    WS, SACK_PERM) and is only parsed on SYN segments, where they matter.
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload_len: int
    payload: bytes
    options: Optional[dict]
    ip_version: int
    tsval: Optional[int] = None      # RFC 7323 time stamp option, when the segment has one
    tsecr: Optional[int] = None


class Datagram(NamedTuple):
    """One UDP datagram whose header is whole.

    ``length`` is the payload length the UDP header gives; ``payload`` what
    was captured of it (shorter when the snap length cut the frame).
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    length: int
    payload: bytes
    ip_version: int


class OtherPacket(NamedTuple):
    """A packet that is not a TCP segment (or whose TCP header was not captured).

    ``frame`` is kept so :func:`describe_other` can hand it to scapy when the
    cheap ``info`` is empty.
    """

    proto: str
    src: str
    dst: str
    info: str
    frame: bytes
    linktype: int


Dissected = Union[Segment, Datagram, OtherPacket]
#: Builds a Segment without the NamedTuple's generated __new__ (a per-packet cost).
_new_tuple = tuple.__new__


def _tcp_options(raw: bytes) -> dict:
    opts: dict = {}
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == 0:       # end of option list
            break
        if kind == 1:       # NOP
            i += 1
            continue
        if i + 1 >= n:
            break
        length = raw[i + 1]
        if length < 2 or i + length > n:
            break
        if kind == 2 and length == 4:
            opts["MSS"] = _H.unpack_from(raw, i + 2)[0]
        elif kind == 3 and length == 3:
            opts["WS"] = 1 << min(raw[i + 2], 14)   # RFC 7323: shift counts above 14 mean 14
        elif kind == 4:
            opts["SACK_PERM"] = True
        elif kind == 8 and length == 10:
            opts["TS"] = _TS.unpack_from(raw, i + 2)
        i += length
    return opts


def _l3(frame: bytes, off: int, ethertype: int, linktype: int) -> Dissected:
    """Dissect from the network header at ``off``; ``ethertype`` says which one."""
    n = len(frame)
    if ethertype == ETH_P_IP:
        if n < off + 20:
            return OtherPacket("IPv4", "", "", "truncated IPv4 header", frame, linktype)
        (vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst) = _IPV4.unpack_from(frame, off)
        ihl = (vihl & 0x0F) * 4
        bad = _bad_ipv4(vihl, ihl, total, n - off)
        if bad:       # a packet that breaks IPv4 is shown as that, not parsed from wrong offsets
            return OtherPacket("IPv4", format_ip(src), format_ip(dst), bad, frame, linktype)
        if frag & 0x1FFF or proto != _IPPROTO_TCP:
            return _other_ip("IPv4", proto, frag & 0x1FFF, src, dst, frame, off + ihl,
                             off + total, linktype)
        l4 = off + ihl
        end = off + total if total else n   # total 0: TSO frames captured before segmentation
        version = 4
    elif ethertype == ETH_P_IPV6:
        if n < off + 40:
            return OtherPacket("IPv6", "", "", "truncated IPv6 header", frame, linktype)
        _vtf, plen, nxt, _hop, src, dst = _IPV6.unpack_from(frame, off)
        l4 = off + 40
        end = l4 + plen if plen else n    # payload length 0: jumbogram / BIG TCP
        while nxt in _IPV6_EXT and l4 + 8 <= n:
            nxt, hlen = frame[l4], frame[l4 + 1]
            l4 += (hlen + 2) * 4 if nxt == 51 else (hlen + 1) * 8
        if nxt == _IPV6_FRAGMENT and l4 + 8 <= n:
            fragoff = _H.unpack_from(frame, l4 + 2)[0] >> 3
            return _other_ip("IPv6", frame[l4], fragoff or -1, src, dst, frame, l4 + 8, end, linktype)
        if nxt != _IPPROTO_TCP:
            return _other_ip("IPv6", nxt, 0, src, dst, frame, l4, end, linktype)
        version = 6
    elif ethertype == ETH_P_ARP:
        return OtherPacket("ARP", "", "", "", frame, linktype)
    else:
        return OtherPacket(f"ethertype 0x{ethertype:04x}", "", "", "", frame, linktype)

    if n < l4 + 20:
        return OtherPacket("TCP", format_ip(src), format_ip(dst), "TCP header not captured",
                           frame, linktype)
    sport, dport, seq, ack, doff, flags, window, _csum, _urg = _TCP.unpack_from(frame, l4)
    hlen = (doff >> 4) * 4
    if hlen < 20 or l4 + hlen > min(end, n):
        what = f"bad TCP header length {hlen} (less than 20)" if hlen < 20 else \
            f"TCP header length {hlen} runs past the packet ({min(end, n) - l4} bytes)"
        # (named by its IP version: a "TCP" record is one the TCP view can read)
        return OtherPacket(f"IPv{version}", format_ip(src), format_ip(dst),
                           f"TCP {sport} → {dport} malformed: {what}", frame, linktype)
    options = None
    tsval = tsecr = None
    if hlen > 20:
        if frame[l4 + 20:l4 + 24] == _TS_LAYOUT and hlen >= 32 and n >= l4 + 32 \
                and not flags & SYN:
            tsval, tsecr = _TS.unpack_from(frame, l4 + 24)
        else:
            opts = _tcp_options(frame[l4 + 20:l4 + hlen])
            if "TS" in opts:
                tsval, tsecr = opts.pop("TS")
            if flags & SYN:
                options = opts
    start = l4 + hlen
    payload_len = max(0, end - start)
    payload = frame[start:min(end, n)] if payload_len else b""
    return _new_tuple(Segment, (src, dst, sport, dport, seq, ack, flags, window, payload_len,
                                payload, options, version, tsval, tsecr))


def _bad_ipv4(vihl: int, ihl: int, total: int, captured: int) -> str:
    """What makes an IPv4 header unreadable ("" if nothing): as tshark's "Bogus IP ..."."""
    if vihl >> 4 != 4:
        return f"malformed: IP version {vihl >> 4} in an IPv4 packet"
    if ihl < 20:
        return f"malformed: bad IPv4 header length {ihl} (less than 20)"
    if ihl > captured:
        return f"malformed: IPv4 header length {ihl} runs past the frame ({captured} bytes)"
    if total and total < ihl:          # (0: TSO frames captured before segmentation)
        return f"malformed: IPv4 total length {total} is less than its header ({ihl})"
    return ""


def _other_ip(family: str, proto: int, fragoff: int, src: bytes, dst: bytes, frame: bytes,
              l4: int, end: int, linktype: int) -> OtherPacket:
    s, d = format_ip(src), format_ip(dst)
    if fragoff:
        return OtherPacket(family, s, d, f"fragment of protocol {proto}, offset {max(fragoff, 0) * 8}",
                           frame, linktype)
    if proto == _IPPROTO_UDP:
        return _udp(family, src, dst, frame, l4, end, linktype)
    if proto in (_IPPROTO_ICMP, _IPPROTO_ICMPV6) and len(frame) >= l4 + 2:
        from socktools.capture.icmp import describe_icmp, describe_icmpv6
        if proto == _IPPROTO_ICMP:
            return OtherPacket("ICMP", s, d, describe_icmp(frame, l4, end), frame, linktype)
        return OtherPacket("ICMPv6", s, d, describe_icmpv6(frame, l4, end), frame, linktype)
    return OtherPacket(family, s, d, f"protocol {proto}", frame, linktype)


def _udp(family: str, src: bytes, dst: bytes, frame: bytes, l4: int, end: int,
         linktype: int) -> Dissected:
    """A UDP datagram, or what makes its header unreadable (as tshark's "Bad length")."""
    n = len(frame)
    if n < l4 + 8:
        return OtherPacket("UDP", format_ip(src), format_ip(dst), "UDP header not captured",
                           frame, linktype)
    sport, dport, ulen, _ = _UDP.unpack_from(frame, l4)
    room = (end if end > l4 else n) - l4    # what the IP header says follows (0: the frame)
    if ulen == 0 and family == "IPv6":
        ulen = room                      # RFC 2675: a jumbogram's length is the IPv6 one's
    if ulen < 8 or ulen > room:
        what = f"UDP length {ulen} is less than its header (8)" if ulen < 8 else \
            f"UDP length {ulen} runs past the packet ({room} bytes)"
        return OtherPacket(family, format_ip(src), format_ip(dst),
                           f"UDP {sport} → {dport} malformed: {what}", frame, linktype)
    stop = l4 + ulen
    return _new_tuple(Datagram, (src, dst, sport, dport, ulen - 8,
                                 frame[l4 + 8:stop if stop < n else n], 4 if family == "IPv4" else 6))


def _fast_ipv4_tcp(frame: bytes) -> Optional[Segment]:
    """The common case in one unpack: Ethernet, IPv4 without options, unfragmented TCP.

    Two thirds of the dissector's time went to three unpacks and the checks
    between them; a loopback flood is nothing but this shape.  Anything else
    (VLAN, IP options, fragments, short frames) returns None for the general path.
    """
    (_vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst, sport, dport, seq, ack,
     doff, flags, window, _tcsum, _urg) = _ETH_IPV4_TCP.unpack_from(frame, 14)
    if proto != _IPPROTO_TCP or frag & 0x1FFF:      # a later fragment has no TCP header
        return None
    hlen = (doff >> 4) * 4
    n = len(frame)
    end = 14 + total if total else n
    start = 34 + hlen
    if hlen < 20 or n < start:
        return None
    tsval = tsecr = None
    options = None
    if hlen > 20:
        if not flags & SYN and hlen >= 32 and frame[54:58] == _TS_LAYOUT:
            tsval, tsecr = _TS.unpack_from(frame, 58)
        else:
            opts = _tcp_options(frame[54:start])
            if "TS" in opts:
                tsval, tsecr = opts.pop("TS")
            if flags & SYN:
                options = opts
    payload_len = end - start if end > start else 0
    payload = frame[start:min(end, n)] if payload_len else b""
    return _new_tuple(Segment, (src, dst, sport, dport, seq, ack, flags, window, payload_len,
                                payload, options, 4, tsval, tsecr))


def dissect(frame: bytes, linktype: int) -> Dissected:
    """Parse one captured frame of the given pcap link type."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) >= 54 and frame[12:15] == b"\x08\x00\x45":
            seg = _fast_ipv4_tcp(frame)
            if seg is not None:
                return seg
        if len(frame) < 14:
            return OtherPacket("Ethernet", "", "", "truncated frame", frame, linktype)
        ethertype = _H.unpack_from(frame, 12)[0]
        off = 14
        while ethertype in _VLAN_TPIDS and len(frame) >= off + 4:
            ethertype = _H.unpack_from(frame, off + 2)[0]
            off += 4
        return _l3(frame, off, ethertype, linktype)
    if linktype == LINKTYPE_RAW or linktype in _LINKTYPE_RAW_ALIASES:
        if not frame:
            return OtherPacket("IP", "", "", "empty frame", frame, linktype)
        return _l3(frame, 0, ETH_P_IPV6 if frame[0] >> 4 == 6 else ETH_P_IP, linktype)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return OtherPacket("SLL", "", "", "truncated frame", frame, linktype)
        return _l3(frame, 16, _H.unpack_from(frame, 14)[0], linktype)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return OtherPacket("SLL2", "", "", "truncated frame", frame, linktype)
        return _l3(frame, 20, _H.unpack_from(frame, 0)[0], linktype)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return OtherPacket("loopback", "", "", "truncated frame", frame, linktype)
        order = "!I" if linktype == LINKTYPE_LOOP else ("<I" if frame[0] else ">I")
        family = struct.unpack_from(order, frame)[0]
        return _l3(frame, 4, ETH_P_IPV6 if family in _BSD_AF_INET6 else ETH_P_IP, linktype)
    return OtherPacket(f"linktype {linktype}", "", "", "", frame, linktype)


def describe_other(pkt: OtherPacket) -> str:
    """A one-line description; scapy is imported only for packets we cannot describe cheaply."""
    if pkt.info:
        return pkt.info
    try:
        from socktools.capture._scapy import summary
        return summary(pkt.frame, pkt.linktype)
    except Exception:  # a describing aid must never stop a capture
        return f"{len(pkt.frame)} bytes"
