"""Errors and small shared pieces of the capture package (no I/O)."""

from __future__ import annotations

__all__ = [
    "SniffError", "PrivilegeError", "LibpcapMissing", "FilterError", "InterfaceError",
    "CaptureFileError", "SameFileError", "LIBPCAP_PACKAGE", "DEFAULT_SNAPLEN",
]

#: Debian/Ubuntu package that provides libpcap.so.0.8 (what scapy loads).
LIBPCAP_PACKAGE = "libpcap0.8"

#: What tcpdump and Wireshark use since 2010: whole packets, even 64 KiB
#: loopback frames (lo's MTU is 65536, and GSO frames on lo come close to it).
DEFAULT_SNAPLEN = 262144


class SniffError(Exception):
    """A capture could not start or continue; ``str(exc)`` is one line for a human."""


class PrivilegeError(SniffError):
    """Opening a packet socket was refused (needs root or CAP_NET_RAW)."""


class LibpcapMissing(SniffError):
    """An arbitrary BPF expression needs libpcap to compile, and it is not installed."""


class FilterError(SniffError):
    """The filter expression does not compile (libpcap says why)."""


class InterfaceError(SniffError):
    """No such interface, or one whose link type sniff cannot read."""


class CaptureFileError(SniffError):
    """A capture file cannot be opened, read or written."""


class SameFileError(CaptureFileError):
    """``-w`` names the file being read (``-r``): a usage mistake that would destroy it."""
