"""The only place sniff touches scapy; imported lazily, on the paths that need it.

scapy is used for two things the cheap dissector does not do: compiling an
arbitrary BPF expression (``--filter``, through libpcap) and describing the
odd non-TCP/UDP/ICMP packet.  Importing it costs about a second and prints
warnings about missing optional libraries, so it happens here, quietly, and
only on demand.
"""

from __future__ import annotations

import logging


def _quiet_import():
    # scapy logs "No libpcap provider available" and friends at import time;
    # sniff reports a missing libpcap itself, in its own words, when it matters.
    for name in ("scapy", "scapy.runtime", "scapy.loading"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import scapy.config  # noqa: F401


def compile_expression(expression: str, linktype: int) -> list[tuple[int, int, int, int]]:
    """Compile a pcap-filter expression for ``linktype`` with libpcap, via scapy.

    Returns the program as ``(code, jt, jf, k)`` tuples.  Raises ImportError
    when libpcap cannot be loaded and ValueError when libpcap rejects the
    expression (its message says why).
    """
    _quiet_import()
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        prog = compile_filter(expression, linktype=linktype)
    except ImportError:
        raise
    except (Scapy_Exception, OSError) as exc:
        raise ValueError(str(exc).strip() or "libpcap rejected the expression") from None
    try:
        insns = [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf,
                  prog.bf_insns[i].k) for i in range(prog.bf_len)]
    finally:
        _free(prog)
    return insns


def _free(prog) -> None:
    try:
        from scapy.arch.common import free_filter
        free_filter(prog)
    except Exception:  # freeing a few hundred bytes once is not worth failing over
        pass


def summary(frame: bytes, linktype: int) -> str:
    """scapy's one-line summary of a frame (slow: only for packets we cannot describe)."""
    _quiet_import()
    from scapy.layers.l2 import CookedLinux, Ether, Loopback
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    if linktype == 1:
        pkt = Ether(frame)
    elif linktype == 113:
        pkt = CookedLinux(frame)
    elif linktype in (0, 108):
        pkt = Loopback(frame)
    elif frame and frame[0] >> 4 == 6:
        pkt = IPv6(frame)
    else:
        pkt = IP(frame)
    return pkt.summary()
