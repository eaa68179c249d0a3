"""Packet capture for ``socktools sniff``: kernel-filtered live capture, pcap I/O, TCP view.

Modules: ``live`` (packet socket, BPF, buffer, drop counters), ``bpf``
(programs, libpcap compile, interpreter), ``pcap`` (files), ``dissect``
(cheap header parsing), ``tracker`` (relative seq/ack, marks, connection
totals), ``reassembly`` (stream reassembly through ``socktools.protocol``),
``session`` (one run), ``view`` (records as dicts), ``scapy_layer`` (the
framed protocol as a scapy layer, for scapy users).  scapy is imported only
by ``_scapy`` and ``scapy_layer``, lazily.

The names below are loaded on first use, so ``import socktools.capture.scapy_layer``
does not drag in the rest of sniff.
"""

from __future__ import annotations

import importlib

__all__ = ["SniffConfig", "Sniffer", "CaptureSummary", "SniffError", "PrivilegeError",
           "LibpcapMissing", "FilterError", "InterfaceError", "CaptureFileError"]

_WHERE = {"SniffConfig": "session", "Sniffer": "session", "CaptureSummary": "session"}


def __getattr__(name: str):
    if name in __all__:
        module = importlib.import_module(f"socktools.capture.{_WHERE.get(name, 'common')}")
        return getattr(module, name)
    raise AttributeError(f"module 'socktools.capture' has no attribute {name!r}")
