"""Packet capture for ``socktools sniff``: kernel-filtered live capture, pcap I/O, TCP view.

Modules: ``live`` (packet socket, BPF, buffer, drop counters), ``bpf``
(programs, libpcap compile, interpreter), ``pcap`` (files), ``dissect``
(cheap header parsing), ``tracker`` (relative seq/ack, marks, connection
totals), ``reassembly`` (stream reassembly through ``socktools.protocol``),
``session`` (one run), ``view`` (records as dicts).  scapy is imported only
by ``_scapy``, lazily.
"""

from socktools.capture.common import (CaptureFileError, FilterError, InterfaceError,
                                      LibpcapMissing, PrivilegeError, SniffError)
from socktools.capture.session import CaptureSummary, SniffConfig, Sniffer

__all__ = ["SniffConfig", "Sniffer", "CaptureSummary", "SniffError", "PrivilegeError",
           "LibpcapMissing", "FilterError", "InterfaceError", "CaptureFileError"]
