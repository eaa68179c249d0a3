"""ICMP and ICMPv6 types and codes in words: the one table `ping` and `sniff` both name them by.

RFC 792, 1122, 1812 (IPv4) and RFC 4443 (IPv6).  The wording is tshark's where tshark has one,
spelled out where it abbreviates (``TTL`` -> ``time to live``; ``TOS`` -> ``type of service``), so
that a user who meets a name in ``ping --icmp`` finds the same words in ``sniff``.

``ICMP_TYPES[type] == (type name, {code: code words})``; a type with no code table (or code 0 of
a type without one) is named by the type's name alone.
"""

from __future__ import annotations

__all__ = ["ICMP_TYPES", "ICMPV6_TYPES", "type_name", "code_words", "icmp_name"]

ICMP_TYPES: dict[int, tuple[str, dict[int, str]]] = {
    0: ("echo reply", {}),
    3: ("destination unreachable", {
        0: "destination network unreachable", 1: "destination host unreachable",
        2: "destination protocol unreachable", 3: "destination port unreachable",
        4: "fragmentation needed", 5: "source route failed",
        6: "destination network unknown", 7: "destination host unknown",
        8: "source host isolated", 9: "network administratively prohibited",
        10: "host administratively prohibited", 11: "network unreachable for type of service",
        12: "host unreachable for type of service", 13: "communication administratively prohibited",
        14: "host precedence violation", 15: "precedence cutoff in effect"}),
    4: ("source quench", {}),
    5: ("redirect", {0: "redirect for network", 1: "redirect for host",
                     2: "redirect for type of service and network",
                     3: "redirect for type of service and host"}),
    8: ("echo request", {}),
    9: ("router advertisement", {}),
    10: ("router solicitation", {}),
    11: ("time exceeded", {0: "time to live exceeded in transit",
                           1: "fragment reassembly time exceeded"}),
    12: ("parameter problem", {0: "parameter problem: pointer indicates the error",
                               1: "parameter problem: missing a required option",
                               2: "parameter problem: bad length"}),
    13: ("timestamp request", {}),
    14: ("timestamp reply", {}),
}
ICMPV6_TYPES: dict[int, tuple[str, dict[int, str]]] = {
    1: ("destination unreachable", {
        0: "no route to destination", 1: "communication administratively prohibited",
        2: "beyond scope of source address", 3: "destination address unreachable",
        4: "destination port unreachable", 5: "source address failed ingress/egress policy",
        6: "reject route to destination"}),
    2: ("packet too big", {}),
    3: ("time exceeded", {0: "hop limit exceeded in transit", 1: "fragment reassembly time exceeded"}),
    4: ("parameter problem", {0: "erroneous header field", 1: "unrecognized next header",
                              2: "unrecognized IPv6 option"}),
    128: ("echo request", {}),
    129: ("echo reply", {}),
    130: ("multicast listener query", {}),
    131: ("multicast listener report", {}),
    132: ("multicast listener done", {}),
    133: ("router solicitation", {}),
    134: ("router advertisement", {}),
    135: ("neighbor solicitation", {}),
    136: ("neighbor advertisement", {}),
    137: ("redirect", {}),
    143: ("multicast listener report v2", {}),
}


def _table(v6: bool) -> dict:
    return ICMPV6_TYPES if v6 else ICMP_TYPES


def type_name(icmp_type: int, *, v6: bool = False) -> str:
    """``3`` -> ``"destination unreachable"``; an unknown type -> ``"ICMP type 42"``."""
    entry = _table(v6).get(icmp_type)
    return entry[0] if entry else f"ICMP{'v6' if v6 else ''} type {icmp_type}"


def code_words(icmp_type: int, code: int, *, v6: bool = False) -> str:
    """The most specific words for (type, code): ``(3, 3)`` -> ``"destination port unreachable"``.

    A code the table does not know is said with its number: ``"destination unreachable, code 99"``.
    """
    name = type_name(icmp_type, v6=v6)
    codes = _table(v6).get(icmp_type, ("", {}))[1]
    if code in codes:
        return codes[code]
    return name if code == 0 else f"{name}, code {code}"


def icmp_name(icmp_type: int, code: int, *, v6: bool = False) -> str:
    """``(3, 3)`` -> ``"destination port unreachable (3/3)"``."""
    return f"{code_words(icmp_type, code, v6=v6)} ({icmp_type}/{code})"
