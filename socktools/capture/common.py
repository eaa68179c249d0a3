"""Errors and small shared pieces of the capture package (no I/O)."""

from __future__ import annotations

__all__ = [
    "SniffError", "PrivilegeError", "LibpcapMissing", "FilterError", "InterfaceError",
    "CaptureFileError", "MalformedCaptureError", "SameFileError", "LIBPCAP_PACKAGE",
    "DEFAULT_SNAPLEN", "MAX_RECORD_BYTES", "MAX_TIMESTAMP_NS",
]

#: Debian/Ubuntu package that provides libpcap.so.0.8 (what scapy loads).
LIBPCAP_PACKAGE = "libpcap0.8"

#: What tcpdump and Wireshark use since 2010: whole packets, even 64 KiB
#: loopback frames (lo's MTU is 65536, and GSO frames on lo come close to it).
DEFAULT_SNAPLEN = 262144

#: The most a reader takes from one pcap record or pcapng block: a larger length
#: field means the file is corrupt, not that we should allocate it.  No record a
#: sane capture holds comes near (snaplen 256 KiB, plus pcapng options); 64 MiB
#: is also Wireshark's bound for a pcapng block.  Nothing bigger is ever read.
MAX_RECORD_BYTES = 64 << 20

#: The latest time stamp sniff handles: 2^64 - 1 ns since 1970 (year 2554), what
#: the pcapng it writes holds (64-bit nanosecond ticks) and past any real clock.
#: A pcapng file may claim more (seconds as ticks, ``if_tsresol`` = 0, up to
#: 2^64 - 1 s): such a packet is a malformed file, said with its offset.
MAX_TIMESTAMP_NS = (1 << 64) - 1


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


class MalformedCaptureError(CaptureFileError):
    """The file breaks its format (or holds what sniff cannot read) at byte ``offset``.

    ``str(exc)`` is the one line a user needs: the file, the offset and what is wrong,
    so ``xxd -s OFFSET FILE`` shows the bytes in question.
    """

    def __init__(self, path: str, offset: int, what: str) -> None:
        self.path, self.offset, self.what = path, offset, what
        super().__init__(f"{path}: at byte {offset}: {what}")


class SameFileError(CaptureFileError):
    """``-w`` names the file being read (``-r``): a usage mistake that would destroy it."""
