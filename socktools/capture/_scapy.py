"""The only place sniff touches scapy; imported lazily, on the paths that need it.

scapy is used for what the cheap dissector does not do: compiling an
arbitrary BPF expression (``--filter``, through libpcap), describing the
odd non-TCP/UDP/ICMP packet, ``--show``'s full dissection, and opening a
capture socket where Linux packet sockets are missing (``--backend scapy``).
(``scapy_layer`` also imports scapy: it is a scapy layer, for scapy users.)  Importing it costs about a second and prints
warnings about missing optional libraries, so it happens here, quietly, and
only on demand.
"""

from __future__ import annotations

import logging
from typing import Optional


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


def packet(frame: bytes, linktype: int):
    """A frame of a pcap link type as a scapy packet (the class scapy's pcap reader would use)."""
    _quiet_import()
    from scapy.config import conf
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    import scapy.layers.l2  # noqa: F401  (registers Ether, CookedLinux, Loopback in l2types)
    cls = conf.l2types.num2layer.get(linktype)
    if cls is None:
        cls = IPv6 if frame and frame[0] >> 4 == 6 else IP
    return cls(frame)


def summary(frame: bytes, linktype: int) -> str:
    """scapy's one-line summary of a frame (slow: only for packets we cannot describe)."""
    return packet(frame, linktype).summary()


_BOUND: set = set()


def show(frame: bytes, linktype: int, framed_port: Optional[int] = None) -> str:
    """scapy's full layered dissection of a frame, as text (``Packet.show()``).

    With ``framed_port``, TCP on that port is dissected with socktools' own
    layer (``scapy_layer.Framed``) where a segment starts a message.
    """
    if framed_port is not None and framed_port not in _BOUND:
        from socktools.capture.scapy_layer import bind
        bind(framed_port)
        _BOUND.add(framed_port)
    return packet(frame, linktype).show(dump=True)


class ScapyCaptureError(Exception):
    """scapy refused to open a capture socket (its own Scapy_Exception); str() says why."""


def open_capture_socket(iface: str, filter_text: Optional[str], loopback: bool):
    """scapy's capture socket on ``iface`` and scapy's {layer class: link type} table.

    On Linux, loopback uses ``conf.L2socket``, which leaves out the outgoing
    copy of each packet (each shown once); other interfaces ``conf.L2listen``,
    which keeps what this host sent.  Elsewhere (BPF, libpcap, Npcap) the
    socket already sees each packet once.  Raises ScapyCaptureError when scapy
    refuses (a filter it cannot compile without libpcap...), OSError as the
    system says.
    """
    import socket
    _quiet_import()
    from scapy.config import conf
    from scapy.error import Scapy_Exception
    import scapy.layers.l2  # noqa: F401  (link-layer classes and their numbers)

    linux = hasattr(socket, "AF_PACKET")
    cls = conf.L2socket if (linux and loopback) or not linux else conf.L2listen
    try:
        sock = cls(iface=iface, filter=filter_text or None)
    except Scapy_Exception as exc:
        raise ScapyCaptureError(str(exc)) from None
    return sock, conf.l2types.layer2num
